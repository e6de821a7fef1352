"""Command-line entry points: ``bmaml-train`` (and ``bmaml-demo``, the batched robots alone)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import bmaml_robot as bm
from bmaml_robot.config import FIELDS, load_config, parse_override, shipped_configs

DEFAULT_CONFIG = "demo"


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bmaml-train",
        description="Meta-train a policy with MAML-TRPO. Without arguments: a one-minute 2D-navigation demo.",
        epilog=f"shipped configs: {', '.join(shipped_configs())}. Config keys for --set: {', '.join(FIELDS)}",
    )
    p.add_argument("--config", default=None, help=f"shipped config name or YAML path (default: {DEFAULT_CONFIG})")
    p.add_argument("--policy", choices=["mlp", "rnn", "gru", "lstm"], help="policy kind")
    p.add_argument("--recurrence", choices=["frozen", "outer", "all"], help="which recurrent weights learn")
    p.add_argument("--num-batches", type=int, help="meta-iterations")
    p.add_argument("--num-threads", type=int, help="threads stepping the robots")
    p.add_argument("--seed", type=int, help="seed of the run")
    p.add_argument("--sampler", choices=["local", "ray"],
                   help="where episodes are sampled: local (default) or ray (Ray actors, same results)")
    p.add_argument("--ray-address", metavar="ADDRESS",
                   help="with --sampler ray: an existing Ray cluster (auto, HOST:PORT, ray://HOST:10001); "
                        "default: start Ray on this machine")
    p.add_argument("--workers", type=int, metavar="W", help="with --sampler ray: Ray actors, each sampling a slice of the tasks")
    p.add_argument("--threads-per-worker", type=int, metavar="K", help="with --sampler ray: threads stepping each worker's robots")
    p.add_argument("--out", type=Path, default=None, help="run directory (default: a new runs/<config>-<policy>-seed<seed>[-N])")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key (repeatable)")
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
    """``bmaml-train``: parse and check everything, then train."""
    from bmaml_robot.train import CHECKPOINT, CONFIG, check_run_dir, recorded_config, train

    parser = _train_parser()
    args = parser.parse_args(argv)
    try:
        overrides = dict(parse_override(text) for text in args.set)
        for key in ("policy", "recurrence", "num_batches", "num_threads", "seed",
                    "sampler", "ray_address", "workers", "threads_per_worker"):
            if getattr(args, key) is not None:
                overrides[key] = getattr(args, key)
        if args.resume:
            if args.out is None:
                raise ValueError("--resume: needs --out, the run directory to continue")
            base, _ = recorded_config(args.out)
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
                    raise ValueError(f"--{flag.replace('_', '-')}: only used with --sampler ray "
                                     f"(this run samples with sampler={config.sampler!r})")
        name = Path(args.config or DEFAULT_CONFIG).stem
        out = args.out or _fresh_run_dir(Path("runs") / f"{name}-{config.policy}-seed{config.seed}")
        if not args.quiet:
            print(f"bmaml-train: {config.family}, {config.policy} policy"
                  + (f" ({config.recurrence} recurrence)" if config.policy != "mlp" else "")
                  + f", {config.num_batches} meta-iteration{'s' if config.num_batches != 1 else ''} of "
                  f"{config.num_tasks} tasks x "
                  f"{config.episodes_per_task} episodes x {config.horizon} steps"
                  + (f", sampled by {config.workers} Ray workers x {config.threads_per_worker} threads"
                     f" on {config.ray_address or 'a local Ray'}" if config.sampler == "ray" else "")
                  + f" -> {out}")
        check_run_dir(config, out, args.resume)
    except (ValueError, TypeError) as error:  # everything checked before any work starts
        parser.error(str(error))
    try:
        result = train(config, out, resume=args.resume, progress=not args.quiet)
    except KeyboardInterrupt:
        print("\nbmaml-train: interrupted; continue with --resume", file=sys.stderr)
        return 130
    except FloatingPointError as error:  # training diverged (e.g. a far too large fast_lr)
        print(f"bmaml-train: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # e.g. a full disk: the last checkpoint is intact
        print(f"bmaml-train: {error}; the run's last checkpoint is intact: continue with --resume "
              f"--out {out}", file=sys.stderr)
        return 1
    if not args.quiet and result.metrics:
        first, last = result.metrics[0], result.metrics[-1]
        if first is not last:
            print(f"meta-iteration {first['iteration']}: return {first['return_before']:.2f} before adaptation, "
                  f"{first['return_after']:.2f} after")
        print(f"meta-iteration {last['iteration']}: return {last['return_before']:.2f} before adaptation, "
              f"{last['return_after']:.2f} after (gain {last['return_after'] - last['return_before']:+.2f})")
        print(f"run directory: {result.run_dir}")
    return 0


def demo_main(argv: list[str] | None = None) -> None:
    """``bmaml-demo``: step a batch of robots with random actions and report throughput."""
    parser = argparse.ArgumentParser(prog="bmaml-demo", description=demo_main.__doc__)
    parser.add_argument("--family", default="HalfCheetahDir", choices=sorted(bm.FAMILIES))
    parser.add_argument("--num-envs", type=int, default=256)
    parser.add_argument("--num-threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    env = bm.make_vec(args.family, args.num_envs, num_threads=args.num_threads, seed=args.seed, max_episode_steps=args.steps)
    rng = np.random.default_rng(args.seed)
    env.set_tasks(env.sample_tasks(args.num_envs, rng))
    env.reset(seed=args.seed)
    returns = np.zeros(args.num_envs)
    start = time.perf_counter()
    for _ in range(args.steps):
        actions = rng.uniform(-1.0, 1.0, size=(args.num_envs, env.act_dim))
        _, reward, _, _, _ = env.step(actions)
        returns += reward
    elapsed = time.perf_counter() - start
    print(
        f"{args.family}: {args.num_envs} envs x {args.steps} steps on {env.num_threads} threads in {elapsed:.2f} s "
        f"({args.num_envs * args.steps / elapsed:,.0f} env-steps/s); random-policy return {returns.mean():.2f} +- {returns.std():.2f}"
    )
    env.close()


if __name__ == "__main__":
    sys.exit(train_main())
