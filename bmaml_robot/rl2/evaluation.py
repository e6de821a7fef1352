"""Held-out evaluation of an RL^2 policy: its return per episode of a trial (its adaptation curve,
the counterpart of MAML's return after 0..K steps), and, on the PFC paper's tasks, the reference
agents on the same draws (bandits: cumulative reward and expected regret of Thompson sampling,
UCB1, a random policy and the oracle) and the two-step task's stay probabilities.

The trials of task ``i`` repeat ``trials_per_task`` times with different noise: the policy's trial
``b`` of task ``i`` is task ``i * trials_per_task + b`` of one sample (``TrialSampler``), whose env
is reset from that index's stream of ``seed`` (``meta.sampler.task_seeds``); the reference agents
are reset from the same streams, so they meet the same reward draws (``envs/discrete.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from bmaml_robot.envs.discrete import DISCRETE_FAMILIES, BatchedDiscreteEnv
from bmaml_robot.envs.discrete_agents import (
    BANDIT_AGENTS,
    TWO_STEP_AGENTS,
    cumulative_regret,
    run_bandit_agent,
    run_two_step_agent,
    stay_probabilities,
)
from bmaml_robot.meta.sampler import task_seeds
from bmaml_robot.rl2.policy import RL2Policy
from bmaml_robot.rl2.sampler import Trials, TrialSampler


class TrialEvaluation(NamedTuple):
    """Trials of a policy on held-out tasks."""

    episode_returns: np.ndarray
    """float64 ``[episodes_per_trial, num_tasks, trials_per_task]``: every episode's return."""
    trials: Trials
    """The trials themselves, ``num_tasks * trials_per_task`` of them (task-major)."""
    tasks: list[dict[str, Any]]
    """The task of each trial (each held-out task repeated ``trials_per_task`` times)."""


def evaluate_trials(
    policy: RL2Policy, family: str, tasks: Sequence[Mapping[str, Any]], *, episodes_per_trial: int, horizon: int,
    trials_per_task: int, seed: int, num_threads: int = 1, action_scale: float | None = None,
) -> TrialEvaluation:
    """``trials_per_task`` trials of ``episodes_per_trial`` episodes on each task (module docstring)."""
    repeated = [dict(task) for task in tasks for _ in range(trials_per_task)]
    sampler = TrialSampler(family, len(repeated), episodes_per_trial, horizon, num_threads=num_threads,
                           action_scale=action_scale)
    try:
        sampler.set_tasks(repeated)
        trials = sampler.sample(policy, seed)
    finally:
        sampler.close()
    returns = trials.episode_returns(episodes_per_trial).double().numpy()
    return TrialEvaluation(returns.reshape(episodes_per_trial, len(tasks), trials_per_task), trials, repeated)


def bandit_comparison(evaluation: TrialEvaluation, family: str, horizon: int, seed: int) -> dict[str, Any]:
    """The policy and the reference agents (``BANDIT_AGENTS``) on the same reward draws: mean
    cumulative reward per trial and mean expected regret (sum over pulls of the best arm's
    probability minus the chosen arm's), with the standard error over trials."""
    trials, tasks = evaluation.trials, evaluation.tasks
    probs = np.stack([DISCRETE_FAMILIES[family].encode(task) for task in tasks])  # [K, A]
    valid = trials.mask.numpy().T.astype(bool)  # [K, L]
    chosen = trials.actions[..., 0].numpy().T.astype(np.int64)  # [K, L]
    steps = int(valid.sum(axis=1).min())
    policy_expected = np.take_along_axis(probs, chosen[:, :steps], axis=1)
    rows = {"rl2": (trials.rewards.numpy().T[:, :steps].astype(np.float64), policy_expected)}
    reset_seeds, _ = task_seeds(seed, 0, len(tasks))
    env = BatchedDiscreteEnv(family, len(tasks), max_episode_steps=horizon)
    try:
        env.set_tasks(tasks)
        for agent in BANDIT_AGENTS:
            run = run_bandit_agent(agent, env, reset_seeds, np.zeros(len(tasks), np.uint64), steps, seed)
            rows[agent] = (run.rewards, run.expected_rewards)
    finally:
        env.close()
    out: dict[str, Any] = {"pulls": steps, "trials": len(tasks)}
    for name, (rewards, expected) in rows.items():
        total = rewards.sum(axis=1)
        regret = cumulative_regret(expected, tasks)[:, -1]
        out[name] = {
            "cumulative_reward": float(total.mean()),
            "cumulative_reward_se": float(total.std(ddof=1) / np.sqrt(len(total))),
            "expected_regret": float(regret.mean()),
            "expected_regret_se": float(regret.std(ddof=1) / np.sqrt(len(regret))),
        }
    return out


def two_step_stays(evaluation: TrialEvaluation, family: str, seed: int) -> dict[str, Any]:
    """Stay probabilities (``envs.discrete_agents.stay_probabilities``: rows rewarded/unrewarded,
    columns common/rare transition) of the policy, read off its trials (an episode is a
    first-stage step in S0 and a second-stage step in S1 or S2), and of the model-free and
    model-based reference agents on the same draws; with each one's mean reward per episode."""
    trials = evaluation.trials
    obs_dim = DISCRETE_FAMILIES[family].obs_dim
    inputs = trials.inputs.numpy()  # [L, K, input_dim]: the observation is the state's one-hot
    episodes = int(torch.min(trials.mask.sum(0)).item()) // 2
    first_actions = trials.actions[0 : 2 * episodes : 2, :, 0].numpy().T.astype(np.int64)  # [K, E]
    second_state = inputs[1 : 2 * episodes : 2, :, 1:obs_dim].argmax(-1).T  # [K, E]: 0 for S1, 1 for S2
    rewarded = trials.rewards[1 : 2 * episodes : 2].numpy().T > 0
    common = first_actions == second_state  # action 0 commonly leads to S1, action 1 to S2
    out: dict[str, Any] = {"episodes": episodes, "rl2": _stay_summary(first_actions, common, rewarded)}
    reset_seeds, _ = task_seeds(seed, 0, len(evaluation.tasks))
    env = BatchedDiscreteEnv(family, len(evaluation.tasks), max_episode_steps=2)
    try:
        env.set_tasks(evaluation.tasks)
        for agent in TWO_STEP_AGENTS:
            run = run_two_step_agent(agent, env, reset_seeds, np.zeros(len(evaluation.tasks), np.uint64), episodes,
                                     seed)
            out[agent] = _stay_summary(run.first_actions, run.common, run.rewards > 0)
    finally:
        env.close()
    return out


def _stay_summary(first_actions: np.ndarray, common: np.ndarray, rewarded: np.ndarray) -> dict[str, Any]:
    """Stay probabilities ``[num_envs, E]`` -> their table, the reward main effect, the
    reward x transition interaction (> 0: model-based) and the mean reward per episode."""
    stays = stay_probabilities(first_actions, common, rewarded)
    return {
        "stay_probability": {"rewarded": {"common": float(stays[0, 0]), "rare": float(stays[0, 1])},
                             "unrewarded": {"common": float(stays[1, 0]), "rare": float(stays[1, 1])}},
        "reward_effect": float(np.nanmean(stays[0]) - np.nanmean(stays[1])),
        "interaction": float((stays[0, 0] - stays[0, 1]) - (stays[1, 0] - stays[1, 1])),
        "reward_per_episode": float(np.mean(rewarded)),
    }
