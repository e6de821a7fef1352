"""Meta-training: MAML-TRPO on batched robots, one meta-iteration at a time.

    from bmaml_robot.train import train
    from bmaml_robot.config import TrainConfig
    result = train(TrainConfig(family="Navigation2D", num_batches=50), "runs/nav")

A meta-iteration: draw ``num_tasks`` tasks -> for each inner step, sample episodes with the
parameters adapted so far and adapt -> sample validation episodes with the adapted parameters ->
TRPO step of the meta-parameters. All randomness of iteration ``i`` comes from ``(seed, i)``, so a
resumed run repeats an uninterrupted one exactly, whatever the thread count.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bmaml_robot.checkpoint import append_jsonl, load_checkpoint, read_jsonl, save_checkpoint, write_text_atomic
from bmaml_robot.config import TrainConfig, dump_config, read_yaml, run_config
from bmaml_robot.envs.vector_env import BatchedRobotEnv
from bmaml_robot.envs.families import get_family
from bmaml_robot.meta import MetaLearner
from bmaml_robot.meta.sampler import MetaSampler, Sampler
from bmaml_robot.policies import Policy, make_policy
from bmaml_robot.run_log import TensorBoardLog, read_provenance, record_provenance
from bmaml_robot.torch_threads import one_torch_thread

CHECKPOINT = "checkpoint.pt"
FINAL_POLICY = "policy.pt"
METRICS = "metrics.jsonl"
CONFIG = "config.yaml"
#: Config keys a resumed run may change: they decide how long it runs and where it samples,
#: never what it computes.
RESUME_MAY_CHANGE = frozenset({"num_batches", "num_threads", "sampler", "ray_address", "workers", "threads_per_worker",
                               "eval_every", "eval_steps", "eval_tasks", "eval_episodes"})


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    policy: Policy
    metrics: list[dict[str, Any]]


def build_policy(config: TrainConfig, obs_dim: int, act_dim: int) -> Policy:
    return make_policy(
        config.policy, obs_dim, act_dim, hidden_sizes=config.hidden_sizes, hidden_size=config.hidden_size,
        recurrence=config.recurrence, init_log_std=config.init_log_std, seed=config.seed,
    )


def build_learner(config: TrainConfig, policy: Policy) -> MetaLearner:
    """The MAML-TRPO learner of ``config`` (its groups of tasks run on ``config.num_threads``)."""
    return MetaLearner(
        policy, fast_lr=config.fast_lr, first_order=config.first_order, max_kl=config.max_kl,
        cg_iters=config.cg_iters, cg_damping=config.cg_damping, hvp_subsample=config.hvp_subsample,
        ls_max_steps=config.ls_max_steps,
        ls_backtrack=config.ls_backtrack, gamma=config.gamma, gae_lambda=config.gae_lambda,
        num_threads=config.num_threads,
    )


def build_sampler(config: TrainConfig) -> Sampler:
    """The sampler ``config.sampler`` names: ``local`` (``MetaSampler`` on ``num_threads``) or
    ``ray`` (``RaySampler``: ``workers`` actors x ``threads_per_worker``, on ``ray_address`` or a
    local Ray). Both give the same episodes."""
    if config.sampler == "ray":
        from bmaml_robot.meta.ray_sampler import RaySampler

        return RaySampler(config.family, config.num_tasks, config.episodes_per_task, config.horizon,
                          action_scale=config.action_scale, num_workers=config.workers, threads_per_worker=config.threads_per_worker,
                          address=config.ray_address or None)
    return MetaSampler(config.family, config.num_tasks, config.episodes_per_task, config.horizon,
                       num_threads=config.num_threads, action_scale=config.action_scale)


def check_sampler(config: TrainConfig) -> None:
    """ValueError (before any work starts) if ``config.sampler`` cannot run here: ``ray``
    without Ray installed names the command that installs it."""
    if config.sampler == "ray":
        from bmaml_robot.meta.ray_sampler import import_ray

        try:
            import_ray()
        except ImportError as error:
            raise ValueError(f"sampler: {error}") from None


def _iteration_seed(seed: int, iteration: int, stream: int) -> int:
    """Independent 63-bit seeds per (run seed, iteration, stream)."""
    return int(np.random.SeedSequence([seed, iteration, stream]).generate_state(1, np.uint64)[0] >> 1)


def meta_tasks(config: TrainConfig, iteration: int) -> list[dict[str, Any]]:
    """The tasks of meta-iteration ``iteration`` (training's own stream of tasks)."""
    rng = np.random.default_rng(_iteration_seed(config.seed, iteration, 0))
    return get_family(config.family).sample_tasks(config.num_tasks, rng)


def meta_iteration(
    config: TrainConfig, iteration: int, sampler: Sampler, learner: MetaLearner
) -> dict[str, Any]:
    """One MAML-TRPO meta-iteration; returns its metrics."""
    start = time.perf_counter()
    sampler.set_tasks(meta_tasks(config, iteration))
    steps_before = sampler.env_steps
    restarts_before = getattr(sampler, "workers_restarted", 0)
    sample_time = 0.0
    train_episodes = []
    params = None
    for step in range(config.num_steps):
        t0 = time.perf_counter()
        train_episodes.append(sampler.sample(learner.policy, params, _iteration_seed(config.seed, iteration, 1 + step)))
        sample_time += time.perf_counter() - t0
        params = learner.adapted_params(train_episodes)
    t0 = time.perf_counter()
    valid_episodes = sampler.sample(learner.policy, params, _iteration_seed(config.seed, iteration, 1 + config.num_steps))
    sample_time += time.perf_counter() - t0
    figures = learner.step(train_episodes, valid_episodes)
    # Ray sampler only: workers that died during this iteration and were replaced (same results).
    restarted = {"workers_restarted": sampler.workers_restarted - restarts_before} if hasattr(sampler, "workers_restarted") else {}
    return {
        "iteration": iteration,
        "time_s": time.perf_counter() - start,
        "sample_time_s": sample_time,
        "env_steps": sampler.env_steps - steps_before,
        "return_before": float(train_episodes[0].episode_returns().mean()),
        "return_after": float(valid_episodes.episode_returns().mean()),
        **{k: _json_number(v) for k, v in figures.items() if k not in ("return_before", "return_after")},
        **restarted,
    }


def _json_number(value: Any) -> Any:
    """Counts stay integers and flags booleans in metrics.jsonl; other numbers are floats."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return value


def check_run_dir(
    config: TrainConfig, run_dir: Path, resume: bool
) -> tuple[TrainConfig, dict[str, Any] | None]:
    """Check that ``run_dir`` can take this run (ValueError naming what is wrong, before any work
    starts): a directory that can be written; a new run never lands on another run's files; a
    resumed run's recorded config, checkpoint and metrics agree with each other and with
    ``config`` (only the keys of ``RESUME_MAY_CHANGE`` may change, before the first checkpoint
    as after it). Also checks that the sampler can run and that the batch fits in memory.

    Returns the config to run, resolved (an ``action_scale`` left to the default is the resumed
    run's own, else the family's), and the checkpoint to resume from, or None to start at
    iteration 0 (a new run, or a resumed one killed before its first checkpoint)."""
    check_sampler(config)
    check_memory(config)
    run_dir = Path(run_dir)
    if resume and not run_dir.is_dir():
        raise ValueError(f"resume: no run directory {run_dir}")
    _check_writable(run_dir)
    state = None
    if resume:
        saved, state = recorded_config(run_dir)
        if saved is not None:
            if config.action_scale is None:
                config = config.replace(action_scale=saved.action_scale)
            changed = {k for k, v in config.to_dict().items() if saved.to_dict()[k] != v} - RESUME_MAY_CHANGE
            if changed:
                raise ValueError(f"resume: the run was started with other values of {sorted(changed)}; "
                                 f"only {', '.join(sorted(RESUME_MAY_CHANGE))} may change")
        if state is not None:
            check_checkpoint(state, run_dir / CHECKPOINT, config)
            resumed_metrics(run_dir, state["next_iteration"])
        read_provenance(run_dir)  # a damaged one is a usage error now, not after the sampler is built
    elif any((run_dir / name).exists() for name in (CHECKPOINT, METRICS, CONFIG)):
        raise ValueError(f"out: {run_dir} already holds a run; pass resume=True (--resume) or choose another directory")
    return config.resolved(), state


def recorded_config(run_dir: Path) -> tuple[TrainConfig | None, dict[str, Any] | None]:
    """The config ``run_dir``'s run recorded and its checkpoint: the checkpoint's, or config.yaml's
    for a run killed before its first checkpoint (checkpoint None); (None, None) when neither
    exists. ValueError naming the file when it is not what bmaml-train writes."""
    checkpoint, recorded = Path(run_dir) / CHECKPOINT, Path(run_dir) / CONFIG
    if checkpoint.is_file():
        state = load_checkpoint(checkpoint)
        if not isinstance(state, dict) or "config" not in state:
            raise ValueError(f"{checkpoint}: expected a dict with 'config' (written by bmaml-train)")
        return run_config(state["config"], source=str(checkpoint)), state
    if recorded.is_file():
        return run_config(read_yaml(recorded), source=str(recorded)), None
    return None, None


def _check_writable(run_dir: Path) -> None:
    """ValueError when ``run_dir`` cannot hold a run: a file, under a file, or not writable."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"out: {run_dir} is a file, not a run directory")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as error:
        raise ValueError(f"out: cannot write to {run_dir} ({error.strerror or error})") from None


#: Keys of a checkpoint and their checks.
_CHECKPOINT_KEYS = ("config", "policy", "next_iteration", "env_steps")


def check_checkpoint(state: dict[str, Any], path: Path, config: TrainConfig) -> None:
    """ValueError naming ``path`` and the key when the checkpoint cannot be what bmaml-train wrote:
    missing keys, a counter that is not a non-negative integer, parameters whose names or shapes
    are not those of ``config``'s policy."""
    missing = [key for key in _CHECKPOINT_KEYS if key not in state]
    if missing:
        raise ValueError(f"{path}: missing keys {missing} (a checkpoint holds {list(_CHECKPOINT_KEYS)})")
    for key in ("next_iteration", "env_steps"):
        value = state[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{path}: {key}: expected an integer >= 0, got {value!r}")
    params = state["policy"]
    if not isinstance(params, Mapping) or not all(isinstance(v, torch.Tensor) for v in params.values()):
        raise ValueError(f"{path}: policy: expected a state dict of tensors, got {type(params).__name__}")
    expected = {name: tuple(p.shape) for name, p in build_policy(config, *robot_dims(config.family)).state_dict().items()}
    got = {name: tuple(v.shape) for name, v in params.items()}
    if got != expected:
        wrong = sorted(set(expected) ^ set(got)) or [n for n in expected if expected[n] != got[n]]
        raise ValueError(f"{path}: policy: its parameters do not match the config's {config.policy} policy "
                         f"(differing: {wrong[:4]})")


def resumed_metrics(run_dir: Path, next_iteration: int) -> list[dict[str, Any]]:
    """The metrics of iterations ``0 .. next_iteration - 1`` from ``run_dir``'s metrics.jsonl.

    Metrics are appended before the checkpoint that covers them, so after a kill the file may hold
    more iterations than the checkpoint (they are dropped and recomputed, identically) and a torn
    last line; anything else (a damaged line, a gap, fewer iterations than the checkpoint) is a
    ValueError naming the file and the line."""
    path = run_dir / METRICS
    records = read_jsonl(path)
    for line, record in enumerate(records[:next_iteration], start=1):
        if record.get("iteration") != line - 1:
            raise ValueError(f"{path}, line {line}: expected iteration {line - 1}, got {record.get('iteration')!r}; "
                             "the file is damaged (lines lost or out of order)")
    if len(records) < next_iteration:
        raise ValueError(f"{path}: holds iterations 0..{len(records) - 1} but {CHECKPOINT} is at iteration "
                         f"{next_iteration}: lines were lost")
    return records[:next_iteration]


def robot_dims(family: str) -> tuple[int, int]:
    """(obs_dim, act_dim) of ``family``'s robot."""
    env = BatchedRobotEnv(family, 1, max_episode_steps=1)
    try:
        return env.obs_dim, env.act_dim
    finally:
        env.close()


def check_memory(config: TrainConfig) -> None:
    """ValueError before any work starts when one meta-iteration's batches cannot fit in this
    machine's memory (an estimate: the episodes of every inner step and the validation batch,
    and the learner's intermediates), with the estimate and the memory."""
    obs_dim, act_dim = robot_dims(config.family)
    steps = config.horizon * config.num_tasks * config.episodes_per_task
    hidden = config.hidden_size if config.policy != "mlp" else sum(config.hidden_sizes)
    # float32 per step: observations, actions, 6 per-step scalars; the learner keeps a few
    # activations per hidden unit for each step of every batch (backpropagation).
    per_step = 4 * (obs_dim + act_dim + 6 + 4 * hidden)
    need = (config.num_steps + 1) * steps * per_step
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > 0.8 * total:
        raise ValueError(
            f"horizon x num_tasks x episodes_per_task = {config.horizon} x {config.num_tasks} x "
            f"{config.episodes_per_task} steps per batch need about {need / 2**30:.1f} GiB for one "
            f"meta-iteration; this machine has {total / 2**30:.1f} GiB")


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
) -> TrainResult:
    """Meta-train a policy as ``config`` says, writing everything to ``run_dir``.

    ``run_dir`` receives ``config.yaml`` (the resolved config), ``metrics.jsonl`` (one line per
    meta-iteration; with ``eval_every``, held-out returns ``eval_return_step{k}`` every so many),
    ``checkpoint.pt`` (atomic, every ``checkpoint_every`` iterations), ``policy.pt`` (the final
    meta-policy), ``provenance.json`` and TensorBoard event files in ``tensorboard/``
    (``run_log.py``). With ``resume``, a killed run continues from its last checkpoint with the
    config it was started with (only the keys of ``RESUME_MAY_CHANGE`` may change: how long it runs,
    where it samples, how often it is evaluated) and produces the same metrics an uninterrupted run
    would.
    """
    run_dir = Path(run_dir)
    # Resolved: the run records its action_scale, whatever the defaults become.
    config, state = check_run_dir(config, run_dir, resume)
    start_iteration = 0 if state is None else state["next_iteration"]
    if start_iteration > config.num_batches:
        # Resumed with fewer iterations than the run already has (e.g. a study script run again
        # with a smaller count): nothing to run, and the run keeps its own count and metrics.
        config = config.replace(num_batches=start_iteration)
    # (resume without a checkpoint: the run was killed before its first one, so it starts over)

    run_dir.mkdir(parents=True, exist_ok=True)
    for stray in run_dir.glob(".*.tmp"):  # left by a kill in the middle of an atomic write
        stray.unlink()
    dump_config(config, run_dir / CONFIG)
    record_provenance(run_dir, start_iteration)
    # One torch thread whatever num_threads (the robots' threads): see torch_threads.py.
    with one_torch_thread():
        sampler = build_sampler(config)
        bar = evaluation = tensorboard = None
        try:
            tensorboard = TensorBoardLog(run_dir, start_iteration)
            policy = build_policy(config, sampler.obs_dim, sampler.act_dim)
            metrics: list[dict[str, Any]] = []
            if state is not None:
                policy.load_state_dict(state["policy"])
                sampler.env_steps = state["env_steps"]
                metrics = resumed_metrics(run_dir, start_iteration)
            learner = build_learner(config, policy)
            if config.eval_every:
                from bmaml_robot.evaluate import HeldOutEvaluation  # (evaluate imports this module)

                evaluation = HeldOutEvaluation(config, policy)
            # Lines past the checkpoint (a kill between the two writes) are recomputed, identically.
            write_text_atomic(run_dir / METRICS, "".join(json.dumps(m) + "\n" for m in metrics))

            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=config.num_batches, initial=start_iteration,
                           desc=f"{config.family} {config.policy}", unit="it")
            for iteration in range(start_iteration, config.num_batches):
                record = meta_iteration(config, iteration, sampler, learner)
                if evaluation is not None and (iteration + 1) % config.eval_every == 0:
                    record.update(evaluation())
                append_jsonl(run_dir / METRICS, record)
                tensorboard.write(record, sampler.env_steps)
                metrics.append(record)
                last = iteration + 1 == config.num_batches
                if last or (iteration + 1) % config.checkpoint_every == 0:
                    save_checkpoint(run_dir / CHECKPOINT, {
                        "config": config.to_dict(), "policy": policy.state_dict(),
                        "next_iteration": iteration + 1, "env_steps": sampler.env_steps,
                    })
                if bar is not None:
                    bar.set_postfix(before=f"{record['return_before']:.2f}", after=f"{record['return_after']:.2f}",
                                    kl=f"{record.get('kl_after', 0.0):.4f}")
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
            if evaluation is not None:
                evaluation.close()
            if tensorboard is not None:
                tensorboard.close()
            sampler.close()
    save_checkpoint(run_dir / FINAL_POLICY, {"config": config.to_dict(), "policy": policy.state_dict()})
    return TrainResult(run_dir, policy, metrics)
