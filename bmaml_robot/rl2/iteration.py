"""One RL^2 meta-iteration: draw tasks -> one trial per task -> one PPO update."""

from __future__ import annotations

import time
from typing import Any

from bmaml_robot.config import TrainConfig
from bmaml_robot.rl2.ppo import PPOLearner
from bmaml_robot.rl2.sampler import TrialSource
from bmaml_robot.seeds import iteration_seed


def rl2_iteration(
    config: TrainConfig, iteration: int, sampler: TrialSource, learner: PPOLearner, tasks: list[dict[str, Any]]
) -> dict[str, Any]:
    """Sample a trial of ``tasks[k]`` per task (stream 1 of the iteration), update with PPO
    (minibatches from stream 2); returns the iteration's metrics: the mean return of every
    episode of the trials (``return_episode{e}``; ``return_before``/``return_after`` are the first
    and the last episode's, the counterpart of MAML's before/after adaptation) and PPO's figures."""
    start = time.perf_counter()
    sampler.set_tasks(tasks)
    steps_before, restarts_before = sampler.env_steps, sampler.workers_restarted
    trials = sampler.sample(learner.policy, iteration_seed(config.seed, iteration, 1))
    sample_time = time.perf_counter() - start
    figures = learner.update(trials, iteration_seed(config.seed, iteration, 2))
    returns = trials.episode_returns(config.episodes_per_trial).mean(dim=1).tolist()
    record = {
        "iteration": iteration,
        "time_s": time.perf_counter() - start,
        "sample_time_s": sample_time,
        "env_steps": sampler.env_steps - steps_before,
        "return_before": returns[0],
        "return_after": returns[-1],
        **{f"return_episode{e}": value for e, value in enumerate(returns)},
        **figures,
    }
    if config.sampler == "ray":  # workers that died during this iteration and were replaced (same results)
        record["workers_restarted"] = sampler.workers_restarted - restarts_before
    return record
