"""Command-line entry points: ``bmaml-train`` (and ``bmaml-demo``, the batched robots alone)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import bmaml_robot as bm
from bmaml_robot.config import FIELDS, load_config, parse_override, shipped_configs
from bmaml_robot.seeds import MAX_SEED
from bmaml_robot_deploy.checks import check_float, check_int

DEFAULT_CONFIG = "demo"


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bmaml-train",
        description="Meta-train a policy with MAML-TRPO or RL^2 (--algorithm). Without arguments: a one-minute "
        "2D-navigation demo.",
        epilog=f"shipped configs: {', '.join(shipped_configs())}. Config keys for --set: {', '.join(FIELDS)}",
    )
    p.add_argument("--config", default=None, help=f"shipped config name or YAML path (default: {DEFAULT_CONFIG})")
    p.add_argument("--algorithm", choices=["maml", "rl2"],
                   help="meta-learner: maml (adapts by gradient steps; default) or rl2 (adapts in its activations)")
    p.add_argument("--policy", choices=["mlp", "rnn", "gru", "lstm"], help="policy kind")
    p.add_argument("--recurrence", choices=["frozen", "outer", "all"], help="which recurrent weights learn")
    p.add_argument("--num-iterations", "--num-batches", dest="num_iterations", type=int,
                   help="meta-iterations (--num-batches: its old name)")
    p.add_argument("--num-threads", type=int, help="threads stepping the robots")
    p.add_argument("--seed", type=int, help="seed of the run")
    p.add_argument(
        "--eval-every",
        type=int,
        metavar="N",
        help="held-out evaluation every N meta-iterations, logged with the metrics (eval_adapt_steps, eval_tasks, "
        "eval_episodes: --set); 0: never (default)",
    )
    p.add_argument(
        "--sampler",
        choices=["local", "ray"],
        help="where episodes are sampled: local (default) or ray (Ray actors, same results)",
    )
    p.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="with --sampler ray: an existing Ray cluster (auto, HOST:PORT, ray://HOST:10001); "
        "default: start Ray on this machine",
    )
    p.add_argument(
        "--workers", type=int, metavar="W", help="with --sampler ray: Ray actors, each sampling a slice of the tasks"
    )
    p.add_argument(
        "--threads-per-worker", type=int, metavar="K", help="with --sampler ray: threads stepping each worker's robots"
    )
    p.add_argument(
        "--out", type=Path, default=None, help="run directory (default: a new runs/<config>-<policy>-seed<seed>[-N])"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key (repeatable)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return p


def _fresh_run_dir(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``, ...: the first that does not exist yet (so running
    the same command twice starts a second run instead of refusing to overwrite the first)."""
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def train_main(argv: list[str] | None = None) -> int:
    """``bmaml-train``: parse and check everything (the arguments and config before torch is
    imported), then train."""
    parser = _train_parser()
    args = parser.parse_args(argv)
    try:
        overrides = dict(parse_override(text) for text in args.set)
        for key in (
            "algorithm",
            "policy",
            "recurrence",
            "num_iterations",
            "num_threads",
            "seed",
            "eval_every",
            "sampler",
            "ray_address",
            "workers",
            "threads_per_worker",
        ):
            if getattr(args, key) is not None:
                overrides[key] = getattr(args, key)
        if args.resume:
            if args.out is None:
                raise ValueError("--resume: needs --out, the run directory to continue")
            from bmaml_robot.run import CHECKPOINT, CONFIG, RunDir

            run = RunDir(args.out)  # read once: the base config here, the checks and the resume below
            base, _ = run.recorded()
            if base is None:
                raise ValueError(f"--resume: no run to continue in {args.out} (no {CHECKPOINT} or {CONFIG})")
            if args.config is not None:
                base = load_config(args.config)
        else:
            base = load_config(args.config or DEFAULT_CONFIG)
        config = base.replace(**overrides)
        if config.sampler != "ray":
            for flag in ("ray_address", "workers", "threads_per_worker"):
                if getattr(args, flag) is not None:
                    raise ValueError(
                        f"--{flag.replace('_', '-')}: only used with --sampler ray "
                        f"(this run samples with sampler={config.sampler!r})"
                    )
        name = Path(args.config or DEFAULT_CONFIG).stem
        out = args.out or _fresh_run_dir(Path("runs") / f"{name}-{config.policy}-seed{config.seed}")
        if not args.quiet:
            print(
                f"bmaml-train: {config.family}, {config.policy} policy"
                + (f" ({config.recurrence} recurrence)" if config.policy != "mlp" else "")
                + f", {config.num_iterations} meta-iteration{'s' if config.num_iterations != 1 else ''} of "
                + (f"RL^2: {config.num_tasks} trials of {config.episodes_per_trial} episodes x {config.horizon} steps"
                   if config.algorithm == "rl2"
                   else f"{config.num_tasks} tasks x {config.episodes_per_task} episodes x {config.horizon} steps")
                + (
                    f", sampled by {config.workers} Ray workers x {config.threads_per_worker} threads"
                    f" on {config.ray_address or 'a local Ray'}"
                    if config.sampler == "ray"
                    else ""
                )
                + f" -> {out}"
            )
        from bmaml_robot.train import check_run_dir

        check_run_dir(config, run if args.resume else out, args.resume)
    except (ValueError, TypeError) as error:  # everything checked before any work starts
        parser.error(str(error))
    from bmaml_robot.train import train

    try:
        result = train(config, run if args.resume else out, resume=args.resume, progress=not args.quiet)
    except KeyboardInterrupt:
        print("\nbmaml-train: interrupted; continue with --resume", file=sys.stderr)
        return 130
    except FloatingPointError as error:  # training diverged (e.g. a far too large fast_lr)
        print(f"bmaml-train: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # e.g. a full disk: the last checkpoint is intact
        print(
            f"bmaml-train: {error}; the run's last checkpoint is intact: continue with --resume --out {out}",
            file=sys.stderr,
        )
        return 1
    if not args.quiet and result.metrics:
        first, last = result.metrics[0], result.metrics[-1]
        # RL^2's "before"/"after" are a trial's first and last episodes.
        before, after = (("first episode", "last") if config.algorithm == "rl2" else ("before adaptation", "after"))
        if first is not last:
            print(
                f"meta-iteration {first['iteration']}: return {first['return_before']:.2f} {before}, "
                f"{first['return_after']:.2f} {after}"
            )
        print(
            f"meta-iteration {last['iteration']}: return {last['return_before']:.2f} {before}, "
            f"{last['return_after']:.2f} {after} (gain {last['return_after'] - last['return_before']:+.2f})"
        )
        print(f"run directory: {result.run_dir}")
    return 0


# ----------------------------------------------------------------------------- argument types
# Checked by argparse, so a mistake is reported before torch and MuJoCo's models are loaded. The
# checks are bmaml_robot_deploy.checks' (name None: argparse names the option); every failure is an
# ArgumentTypeError, whose message argparse prints as it is.
def _argument(check: Callable[..., Any], convert: Callable[[str], Any], text: str, **bounds: Any) -> Any:
    try:
        value = convert(text)
    except ValueError:
        value = text  # not a number at all: the check says so, quoting the text
    try:
        return check(value, None, type_error=argparse.ArgumentTypeError, **bounds)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        return _argument(check_int, int, text, minimum=low)

    parse.__name__ = f"integer >= {low}"
    return parse


def _seed(text: str) -> int:
    return _argument(check_int, int, text, minimum=0, below=MAX_SEED)


def _finite_at_least(low: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        return _argument(check_float, float, text, low=low)

    parse.__name__ = f"number >= {low:g}"
    return parse


# ----------------------------------------------------------------------------- bmaml-eval
def _eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bmaml-eval",
        description="Evaluate a meta-trained run on held-out tasks: mean return after 0..K adaptation steps, "
        "with 95%% confidence intervals over tasks. Writes eval.json and eval.png.",
    )
    p.add_argument(
        "run_dir", type=Path, metavar="RUN_DIR", help="a bmaml-train run directory (finished or in progress)"
    )
    p.add_argument(
        "--adapt-steps",
        "--steps",
        dest="adapt_steps",
        type=_int_at_least(0),
        default=3,
        help="adaptation steps K (default 3): returns after 0..K steps (--steps: its old name)",
    )
    p.add_argument(
        "--tasks",
        type=_int_at_least(1),
        default=20,
        help="held-out tasks (default 20; confidence intervals need 2 or more)",
    )
    p.add_argument("--episodes", type=_int_at_least(1), default=10,
                   help="episodes per task and step (default 10); RL^2 runs: trials per task")
    p.add_argument("--episodes-per-trial", type=_int_at_least(1), default=None,
                   help="RL^2 runs: episodes per trial, the state carried across them (default: the run's)")
    p.add_argument(
        "--fast-lr", type=_finite_at_least(0.0), default=None, help="inner step size (default: the run's fast_lr)"
    )
    p.add_argument(
        "--seed", type=_seed, default=0, help="evaluation seed: tasks and noise, the same for every run (default 0)"
    )
    p.add_argument("--num-threads", type=_int_at_least(1), default=1, help="threads stepping the robots (default 1)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory for eval.json and eval.png (default: RUN_DIR, or RUN_DIR/initial with --initial); "
        "an eval.json already there is replaced (the command says so)",
    )
    p.add_argument(
        "--initial",
        action="store_true",
        help="evaluate the run's policy at initialisation (its architecture and seed, before any "
        "meta-training): the baseline a meta-trained policy must beat",
    )
    return p


def eval_main(argv: list[str] | None = None) -> int:
    """``bmaml-eval``: check the arguments, then the run, evaluate, write, print the table."""
    parser = _eval_parser()
    args = parser.parse_args(argv)
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        parser.error(f"--out: expected a directory, got the file {args.out}")
    from bmaml_robot import evaluate as evaluation
    from bmaml_robot.run import load_run

    try:
        run = load_run(args.run_dir, initial=args.initial)  # loadable before any work starts
        is_rl2 = run.config.algorithm == "rl2"
        if is_rl2 and args.fast_lr is not None:
            raise ValueError("--fast-lr: an RL^2 run adapts in its activations, without gradient steps")
        if not is_rl2 and args.episodes_per_trial is not None:
            raise ValueError("--episodes-per-trial: only RL^2 runs have trials (this is a MAML run: --adapt-steps)")
    except (ValueError, TypeError) as error:
        parser.error(str(error))
    result = evaluation.evaluate(
        run,
        adapt_steps=args.adapt_steps,
        num_tasks=args.tasks,
        episodes=args.episodes,
        fast_lr=args.fast_lr,
        seed=args.seed,
        num_threads=args.num_threads,
        out=args.out,
        initial=args.initial,
        episodes_per_trial=args.episodes_per_trial,
    )
    print(evaluation.format_table(result))
    if args.tasks == 1:
        print("note: one held-out task: no confidence interval over tasks (use --tasks 2 or more)")
    print(f"{'replaced' if result.replaced else 'wrote'} {result.json_path} and {result.png_path}")
    return 0


# ----------------------------------------------------------------------------- bmaml-compare
def _compare_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bmaml-compare",
        description="Compare meta-training variants across seeds: learning curves with confidence bands, "
        "final performance, Welch/bootstrap tests with effect sizes, variance tests. Writes "
        "report.md, curves.png, gain.png, final.png and comparison.json.",
    )
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="bmaml-train run directories")
    p.add_argument(
        "--group-by",
        default="policy,recurrence",
        help="comma-separated config keys that define a variant (default: policy,recurrence)",
    )
    p.add_argument(
        "--last", type=_int_at_least(1), default=10, help="final window: the last N common meta-iterations (default 10)"
    )
    p.add_argument(
        "--smooth",
        type=_int_at_least(1),
        default=5,
        help="trailing moving average of the plotted curves, in iterations (default 5; 1: none)",
    )
    p.add_argument(
        "--x-axis",
        choices=["iteration", "env-steps"],
        default="iteration",
        help="align the runs per meta-iteration (default) or at equal environment steps (runs of different "
        "batches or algorithms, e.g. --group-by algorithm,policy for MAML against RL^2)",
    )
    p.add_argument(
        "--until",
        type=_int_at_least(1),
        default=None,
        metavar="N",
        help="compare up to N meta-iterations (with --x-axis env-steps: N environment steps); runs trained "
        "further are cut there (default: the runs' common length)",
    )
    p.add_argument(
        "--min-iterations",
        type=_int_at_least(1),
        default=1,
        help="leave out runs with fewer meta-iterations (default 1: use every run)",
    )
    p.add_argument(
        "--eval-dir",
        type=Path,
        default=None,
        help="bmaml-eval results as EVAL_DIR/<run name>/eval.json (default: RUN_DIR/eval.json where present)",
    )
    p.add_argument("--out", type=Path, default=Path("comparison"), help="output directory (default: ./comparison)")
    return p


def compare_main(argv: list[str] | None = None) -> int:
    """``bmaml-compare``: every check (arguments, runs, keys, comparability) is a usage error before any work."""
    parser = _compare_parser()
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out: expected a directory, got the file {args.out}")
    from bmaml_robot import compare as comparing

    command = "bmaml-compare " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        comparison = comparing.compare(
            args.run_dirs,
            group_by=args.group_by.split(","),
            last=args.last,
            smooth_window=args.smooth,
            min_iterations=args.min_iterations,
            eval_dir=args.eval_dir,
            x_axis=args.x_axis.replace("-", "_"),
            until=args.until,
            out=None,
            command=command,
        )
    except (ValueError, TypeError) as error:
        parser.error(str(error))
    comparing.write_outputs(comparison, args.out)
    print(comparing.format_summary(comparison))
    print(f"wrote {', '.join(str(p) for p in comparison.files)}")
    return 0


# ----------------------------------------------------------------------------- bmaml-export
def _export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bmaml-export",
        description="Adapt a meta-trained policy to one task (sampling episodes with the batched robots, "
        "training's inner loop) and export the adapted policy as one self-contained ONNX file for "
        "bmaml-robot-deploy. An RL^2 run (robot families) is exported as it is: it adapts in its activations "
        "while it runs (the graph also takes the previous action, the previous reward and an episode-start flag).",
        epilog="examples: bmaml-export runs/cheetah --task '{\"direction\": -1.0}' --adapt-steps 1 "
        "--out cheetah_back.onnx; bmaml-export runs/hcvel-rl2 --task '{\"velocity\": 1.5}' --out hcvel.onnx",
    )
    p.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        type=Path,
        help="run directory made by bmaml-train (policy.pt, else checkpoint.pt)",
    )
    p.add_argument(
        "--task",
        required=True,
        metavar="JSON",
        help="the task, a JSON object of the run's family, e.g. '{\"direction\": -1.0}' or '{\"goal\": [0.2, -0.1]}' "
        "(RL^2: the simulator's task, which the policy discovers)",
    )
    p.add_argument(
        "--adapt-steps",
        default=None,
        type=_int_at_least(0),
        metavar="K",
        help="inner adaptation steps (0: the meta-policy itself); required for MAML runs; RL^2 runs: 0 or omitted",
    )
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="ONNX file to write (e.g. policy.onnx)")
    p.add_argument(
        "--episodes",
        type=_int_at_least(1),
        default=None,
        metavar="E",
        help="episodes sampled per step (default: the run's episodes_per_task); RL^2 runs: trials sampled on the "
        "task for the reported returns (default 4)",
    )
    p.add_argument(
        "--fast-lr",
        type=_finite_at_least(0.0),
        default=None,
        metavar="X",
        help="inner step size (default: the run's fast_lr; MAML runs only)",
    )
    p.add_argument("--seed", type=_seed, default=0, metavar="S", help="seed of the sampled episodes (default: 0)")
    p.add_argument(
        "--num-threads",
        type=_int_at_least(1),
        default=None,
        metavar="N",
        help="threads stepping the robots (default: the run's)",
    )
    return p


def export_main(argv: list[str] | None = None) -> int:
    """``bmaml-export``: the arguments checked before torch is imported, then ``export.command``."""
    import json

    parser = _export_parser()
    args = parser.parse_args(argv)
    try:
        task = json.loads(args.task)
    except json.JSONDecodeError as error:
        parser.error(f"--task: expected a JSON object such as '{{\"direction\": -1.0}}', got {args.task!r} ({error})")
    if not isinstance(task, dict):
        parser.error(f"--task: expected a JSON object such as '{{\"direction\": -1.0}}', got {args.task!r}")
    if args.out.is_dir():
        parser.error(f"--out: expected a file name, got the directory {args.out}")
    from bmaml_robot import export

    return export.command(args, task, parser)


# ----------------------------------------------------------------------------- bmaml-render
def _render_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bmaml-render",
        description="Render a run's policy on one task before and after adaptation, headless, to MP4 or GIF.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a bmaml-train run directory")
    p.add_argument(
        "--task", required=True, help="the task as JSON, e.g. '{\"direction\": -1}' or '{\"goal\": [0.3, -0.2]}'"
    )
    p.add_argument("--out", type=Path, required=True, help="output file, .mp4 or .gif")
    p.add_argument(
        "--adapt-steps",
        type=_int_at_least(0),
        default=1,
        help="adaptation steps before the 'after' episode (default 1)",
    )
    p.add_argument(
        "--layout",
        choices=("side-by-side", "sequential"),
        default="side-by-side",
        help="panels side by side (default) or one after the other",
    )
    p.add_argument("--width", type=_int_at_least(16), default=480, help="panel width in pixels (even, default 480)")
    p.add_argument("--height", type=_int_at_least(16), default=360, help="panel height in pixels (even, default 360)")
    p.add_argument(
        "--seed", type=_seed, default=0, help="seed of the adaptation episodes and the recorded ones (default 0)"
    )
    p.add_argument("--episodes", type=_int_at_least(1), default=10, help="episodes per adaptation step (default 10)")
    p.add_argument("--fast-lr", type=_finite_at_least(0.0), default=None, help="inner step size (default: the run's)")
    p.add_argument(
        "--stochastic",
        action="store_true",
        help="sample actions from the policy (default: its mean action, deterministic)",
    )
    p.add_argument("--fps", type=float, default=None, help="frames per second (default: real time)")
    p.add_argument(
        "--num-threads", type=_int_at_least(1), default=1, help="threads stepping the robots during adaptation"
    )
    return p


def render_main(argv: list[str] | None = None) -> int:
    """``bmaml-render``: the arguments checked before torch is imported, then ``render.command``."""
    parser = _render_parser()
    args = parser.parse_args(argv)
    from bmaml_robot import render

    return render.command(args, parser)


def demo_main(argv: list[str] | None = None) -> int:
    """``bmaml-demo``: the batched robots alone, stepped with random actions."""
    parser = argparse.ArgumentParser(
        prog="bmaml-demo",
        description="Step a batch of robots with uniformly random actions (in the robot's own units) and report the "
        "C++ core's throughput (env-steps per second) and the random-action return. No training.",
    )
    parser.add_argument(
        "--family", default="HalfCheetahDir", choices=sorted(bm.FAMILIES), help="task family (default HalfCheetahDir)"
    )
    parser.add_argument("--num-envs", type=_int_at_least(1), default=256, help="robots stepped together (default 256)")
    parser.add_argument(
        "--num-threads",
        type=_int_at_least(1),
        default=2,
        help=f"threads stepping them (default 2; at most {bm.MAX_THREADS})",
    )
    parser.add_argument(
        "--steps", type=_int_at_least(1), default=200, help="control steps, also each episode's length (default 200)"
    )
    parser.add_argument("--seed", type=_seed, default=0, help="seed of tasks, resets and actions (default 0)")
    args = parser.parse_args(argv)
    try:
        env = bm.make_vec(
            args.family, args.num_envs, num_threads=args.num_threads, seed=args.seed, max_episode_steps=args.steps
        )
    except (ValueError, RuntimeError) as error:
        parser.error(str(error).replace("num_threads", "--num-threads").replace("num_envs", "--num-envs"))
    try:
        rng = np.random.default_rng(args.seed)
        env.set_tasks(env.sample_tasks(args.num_envs, rng))
        env.reset(seed=args.seed)
        low, high = env.single_action_space.low, env.single_action_space.high
        returns = np.zeros(args.num_envs)
        start = time.perf_counter()
        for _ in range(args.steps):
            _, reward, _, _, _ = env.step(rng.uniform(low, high, size=(args.num_envs, env.act_dim)))
            returns += reward
        elapsed = time.perf_counter() - start
    finally:
        env.close()
    print(
        f"{args.family}: {args.num_envs} envs x {args.steps} steps on {env.num_threads} threads in {elapsed:.2f} s "
        f"({args.num_envs * args.steps / elapsed:,.0f} env-steps/s); random-action return {returns.mean():.2f} "
        f"+- {returns.std():.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(train_main())
