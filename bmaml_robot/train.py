"""Meta-training: MAML-TRPO or RL^2 (``config.algorithm``) on batched robots, one meta-iteration at a time.

    from bmaml_robot.train import train
    from bmaml_robot.config import TrainConfig
    result = train(TrainConfig(family="Navigation2D", num_iterations=50), "runs/nav")

A meta-iteration: draw ``num_tasks`` tasks -> for each inner step, sample episodes with the
parameters adapted so far and adapt -> sample validation episodes with the adapted parameters ->
TRPO step of the meta-parameters. RL^2 (``rl2/iteration.py``): draw tasks -> one trial per task ->
PPO update. All randomness of iteration ``i`` comes from ``(seed, i)``, so a
resumed run repeats an uninterrupted one exactly, whatever the thread count.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, cast

import numpy as np

from bmaml_robot.config import TrainConfig
from bmaml_robot.envs.discrete import get_task_family
from bmaml_robot.factory import build_learner, build_policy, build_sampler, check_sampler, robot_dims
from bmaml_robot.meta import MetaLearner, adapt_to_tasks
from bmaml_robot.meta.sampler import Sampler
from bmaml_robot.policies import Policy
from bmaml_robot.rl2 import PPOLearner, RL2Policy, rl2_iteration
from bmaml_robot.rl2.sampler import TrialSource
from bmaml_robot.run import RunDir
from bmaml_robot.run_log import TensorBoardLog, record_provenance
from bmaml_robot.seeds import iteration_seed
from bmaml_robot.torch_threads import one_torch_thread


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    policy: Policy | RL2Policy
    metrics: list[dict[str, Any]]


def meta_tasks(config: TrainConfig, iteration: int) -> list[dict[str, Any]]:
    """The tasks of meta-iteration ``iteration`` (training's own stream of tasks)."""
    rng = np.random.default_rng(iteration_seed(config.seed, iteration, 0))
    return get_task_family(config.family).sample_tasks(config.num_tasks, rng)


def meta_iteration(
    config: TrainConfig, iteration: int, sampler: Sampler | TrialSource, learner: MetaLearner | PPOLearner
) -> dict[str, Any]:
    """One meta-iteration (MAML-TRPO, or RL^2: ``rl2_iteration``); returns its metrics."""
    if isinstance(learner, PPOLearner):
        # (build_sampler gives the sampler of the config's algorithm)
        return rl2_iteration(config, iteration, cast(TrialSource, sampler), learner, meta_tasks(config, iteration))
    sampler = cast(Sampler, sampler)
    start = time.perf_counter()
    sampler.set_tasks(meta_tasks(config, iteration))
    steps_before, restarts_before = sampler.env_steps, sampler.workers_restarted
    loop = adapt_to_tasks(learner, sampler, config.adapt_steps,
                          lambda step: iteration_seed(config.seed, iteration, 1 + step))
    figures = learner.update(loop.batches[:-1], loop.batches[-1])
    returns = loop.mean_returns()
    record = {
        "iteration": iteration,
        "time_s": time.perf_counter() - start,
        "sample_time_s": loop.sample_time_s,
        "env_steps": sampler.env_steps - steps_before,
        "return_before": returns[0],
        "return_after": returns[-1],
        **{k: _json_number(v) for k, v in figures.items()},
    }
    if config.sampler == "ray":  # workers that died during this iteration and were replaced (same results)
        record["workers_restarted"] = sampler.workers_restarted - restarts_before
    return record


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
    config: TrainConfig, run_dir: str | Path | RunDir, resume: bool
) -> tuple[TrainConfig, dict[str, Any] | None]:
    """Check, before any work starts, that this run can run here: the sampler, the memory its batch
    needs, and its run directory (``RunDir.prepare``: a new run never lands on another run's
    files; a resumed run agrees with what it recorded). Returns ``RunDir.prepare``'s (the config to
    run, resolved; the checkpoint to resume from or None)."""
    check_sampler(config)
    check_memory(config)
    return (run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)).prepare(config, resume)


def check_memory(config: TrainConfig) -> None:
    """ValueError before any work starts when one meta-iteration's batches cannot fit in this
    machine's memory (an estimate: the episodes of every inner step and the validation batch,
    and the learner's intermediates), with the estimate and the memory."""
    obs_dim, act_dim = robot_dims(config.family)
    hidden = config.hidden_size if config.policy != "mlp" else sum(config.hidden_sizes)
    # float32 per step: observations, actions, 6 per-step scalars; the learner keeps a few
    # activations per hidden unit for each step of every batch (backpropagation).
    per_step = 4 * (obs_dim + act_dim + 6 + 4 * hidden)
    if config.algorithm == "rl2":  # one batch of trials (and its inputs: previous action, reward)
        per_step += 4 * (act_dim + 2)
        batch, batches, what = config.episodes_per_trial, 1, "episodes_per_trial"
    else:
        batch, batches, what = config.episodes_per_task, config.adapt_steps + 1, "episodes_per_task"
    steps = config.horizon * config.num_tasks * batch
    need = batches * steps * per_step
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > 0.8 * total:
        raise ValueError(
            f"horizon x num_tasks x {what} = {config.horizon} x {config.num_tasks} x "
            f"{batch} steps per batch need about {need / 2**30:.1f} GiB for one "
            f"meta-iteration; this machine has {total / 2**30:.1f} GiB")


def train(
    config: TrainConfig,
    run_dir: str | Path | RunDir,
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
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    # Resolved: the run records its action_scale, whatever the defaults become.
    config, state = check_run_dir(config, run, resume)
    start_iteration = 0 if state is None else state["next_iteration"]
    if start_iteration > config.num_iterations:
        # Resumed with fewer iterations than the run already has (e.g. a study script run again
        # with a smaller count): nothing to run, and the run keeps its own count and metrics.
        config = config.replace(num_iterations=start_iteration)
    # (resume without a checkpoint: the run was killed before its first one, so it starts over)
    metrics: list[dict[str, Any]] = [] if state is None else run.metrics(start_iteration)
    run.start(config, metrics)
    if start_iteration < config.num_iterations:  # a finished run resumed trains nothing: no new session
        record_provenance(run.path, start_iteration)
    # One torch thread whatever num_threads (the robots' threads): see torch_threads.py.
    with one_torch_thread():
        sampler = build_sampler(config)
        bar = evaluation = tensorboard = None
        try:
            tensorboard = TensorBoardLog(run.path, start_iteration)
            policy = build_policy(config, sampler.obs_dim, sampler.act_dim)
            if state is not None:
                policy.load_state_dict(state["policy"])
                sampler.env_steps = state["env_steps"]
            learner = build_learner(config, policy)
            if state is not None and isinstance(learner, PPOLearner):
                learner.load_state_dict(state["learner"])
            if config.eval_every:
                from bmaml_robot.evaluate import held_out_during_training  # (evaluate imports this module)

                evaluation = held_out_during_training(config, policy)
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=config.num_iterations, initial=start_iteration,
                           desc=f"{config.family} {config.policy}", unit="it")
            for iteration in range(start_iteration, config.num_iterations):
                record = meta_iteration(config, iteration, sampler, learner)
                if evaluation is not None and (iteration + 1) % config.eval_every == 0:
                    record.update(evaluation())
                run.append_metrics(record)
                tensorboard.write(record, sampler.env_steps)
                metrics.append(record)
                if iteration + 1 == config.num_iterations or (iteration + 1) % config.checkpoint_every == 0:
                    run.save_checkpoint(config, policy, iteration + 1, sampler.env_steps,
                                        learner.state_dict() if isinstance(learner, PPOLearner) else None)
                if bar is not None:
                    bar.set_postfix(before=f"{record['return_before']:.2f}", after=f"{record['return_after']:.2f}",
                                    kl=f"{record.get('kl_after', record.get('approx_kl', 0.0)):.4f}")
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
            if evaluation is not None:
                evaluation.close()
            if tensorboard is not None:
                tensorboard.close()
            sampler.close()
    run.save_final(config, policy, config.num_iterations)
    return TrainResult(run.path, policy, metrics)
