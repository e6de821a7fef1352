"""Reference agents for the discrete tasks (``discrete.py``), run on the same random draws as an
RL^2 policy: each runs on a ``BatchedDiscreteEnv`` (one env per task) from
``reset_streams(seeds, streams)``, so an agent meets the reward draws an RL^2 policy sampled with
the same seeds and streams meets (``TrialSampler`` resets task ``k``'s env on stream 0 of its
reset seed, ``meta.sampler.task_seeds``): differences between agents come from their choices, not
from luck.

Bandits (``run_bandit_agent``; ``cumulative_regret``):

- ``thompson``: Thompson sampling with Beta(1, 1) priors on each arm's reward probability;
- ``ucb1``: pull each arm once, then the arm with the largest ``mean + sqrt(2 ln t / n)``
  (``t`` pulls so far, ``n`` of that arm; Auer et al. 2002);
- ``random``: a uniform arm at every pull;
- ``oracle``: always the better arm (it reads the task): regret 0.

Two-step task (``run_two_step_agent``; ``stay_probabilities``), the two agents of Daw et al. (2011)
whose signatures Wang et al. (2018, Fig. 4) compare with the RL^2 network's:

- ``model_free``: the first-stage action values learn from the trial's reward directly (TD(1):
  ``Q(a) += alpha (r - Q(a))``), blind to the transition: it repeats a rewarded choice whether the
  transition was common or rare;
- ``model_based``: the values of the second-stage states learn from the reward
  (``V(s) += alpha (r - V(s))``) and the first-stage values are computed through the known
  transition matrix (``Q(a) = c V(common state of a) + (1 - c) V(rare state of a)``): after a
  reward that followed a rare transition it switches, so its stay probabilities show the
  reward x transition interaction.

Both choose their first-stage action by softmax with ``inverse_temperature``. The model-free
agent's stay probabilities are not free of an interaction either (with rewards 0.9/0.1 and rare
switches, an unrewarded rare transition mostly follows the better choice, which it keeps: Akam,
Costa & Dayan 2015), but its signature is the main effect of reward in both columns; the
model-based agent's is switching after a rewarded rare transition (no main effect of reward).
Every agent's own
randomness comes from ``numpy.random.default_rng(rng_seed)``. Arrays are ``[num_envs, T]``
(one row per task: the layout of analysis tables, not the samplers' time-first one).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from bmaml_robot.envs.discrete import BatchedDiscreteEnv
from bmaml_robot_deploy.checks import check_choice, check_float, check_int

BANDIT_AGENTS: tuple[str, ...] = ("thompson", "ucb1", "random", "oracle")
TWO_STEP_AGENTS: tuple[str, ...] = ("model_free", "model_based")


class BanditRun(NamedTuple):
    """One run of a bandit agent: ``num_envs`` tasks, ``T`` pulls each."""

    actions: np.ndarray
    """int64 ``[num_envs, T]``: the arm pulled."""
    rewards: np.ndarray
    """float64 ``[num_envs, T]``: 0 or 1."""
    expected_rewards: np.ndarray
    """float64 ``[num_envs, T]``: the reward probability of the arm pulled."""


class TwoStepRun(NamedTuple):
    """One run of a two-step agent: ``num_envs`` tasks, ``E`` episodes (trials) each."""

    first_actions: np.ndarray
    """int64 ``[num_envs, E]``: the first-stage action."""
    common: np.ndarray
    """bool ``[num_envs, E]``: the transition was the common one."""
    second_states: np.ndarray
    """int64 ``[num_envs, E]``: the second-stage state reached, 0 for S1, 1 for S2."""
    rewards: np.ndarray
    """float64 ``[num_envs, E]``: the reward at the second stage, 0 or 1."""


def _check_env(env: Any, kind: str) -> BatchedDiscreteEnv:
    if not isinstance(env, BatchedDiscreteEnv):
        raise TypeError(f"env: expected a BatchedDiscreteEnv, got {type(env).__name__}")
    if env.family.kind != kind:
        raise ValueError(f"env: expected a {kind} family, got {env.family.name} (a {env.family.kind} family)")
    if not env.tasks:
        raise ValueError("env: no tasks yet: call env.set_tasks(tasks) (one task per env) first")
    return env


def run_bandit_agent(agent: str, env: BatchedDiscreteEnv, seeds: Any, streams: Any, num_steps: int,
                     rng_seed: int) -> BanditRun:
    """Run ``agent`` (one of ``BANDIT_AGENTS``) for ``num_steps`` pulls on each of ``env``'s tasks,
    from ``env.reset_streams(seeds, streams)`` (seeds, streams: integers in [0, 2**64),
    ``[num_envs]``). The agent learns across the env's episode boundaries (a truncation does not
    change the arms). Its own draws (Thompson's samples, random arms) come from
    ``default_rng(rng_seed)``."""
    check_choice(agent, "agent", BANDIT_AGENTS)
    env = _check_env(env, "bandit")
    steps = check_int(num_steps, "num_steps", minimum=1)
    rng = np.random.default_rng(check_int(rng_seed, "rng_seed", minimum=0, below=2**64))
    probs = np.stack([env.family.encode(task) for task in env.tasks])  # [N, A]
    N, A = probs.shape
    rows = np.arange(N)
    pulls = np.zeros((N, A))
    successes = np.zeros((N, A))
    actions = np.zeros((N, steps), dtype=np.int64)
    rewards = np.zeros((N, steps))
    expected = np.zeros((N, steps))
    env.reset_streams(seeds, streams)
    for t in range(steps):
        if agent == "thompson":
            action = np.argmax(rng.beta(1.0 + successes, 1.0 + pulls - successes), axis=1)
        elif agent == "ucb1":
            if t < A:  # each arm once first
                action = np.full(N, t)
            else:
                action = np.argmax(successes / pulls + np.sqrt(2.0 * np.log(t) / pulls), axis=1)
        elif agent == "random":
            action = rng.integers(0, A, size=N)
        else:
            action = np.argmax(probs, axis=1)
        _, reward, _, _, info = env.step(action)
        pulls[rows, action] += 1.0
        successes[rows, action] += reward
        actions[:, t], rewards[:, t], expected[:, t] = action, reward, info["expected_reward"]
    return BanditRun(actions, rewards, expected)


def cumulative_regret(expected_rewards: Any, tasks: Any) -> np.ndarray:
    """Expected regret summed over pulls: float64 ``[num_envs, T]``, ``cumsum_t (max_a p_a -
    p_chosen_t)`` for ``expected_rewards`` ``[num_envs, T]`` (``BanditRun.expected_rewards``) and
    one bandit task per row (``{"probs": [...]}``)."""
    chosen = np.asarray(expected_rewards, dtype=np.float64)
    if chosen.ndim != 2:
        raise ValueError(f"expected_rewards: expected shape [num_envs, T], got shape {list(chosen.shape)}")
    if len(tasks) != chosen.shape[0]:
        raise ValueError(f"tasks: expected one task per row of expected_rewards ({chosen.shape[0]}), got {len(tasks)}")
    best = np.array([max(task["probs"]) for task in tasks], dtype=np.float64)
    return np.cumsum(best[:, None] - chosen, axis=1)


def run_two_step_agent(agent: str, env: BatchedDiscreteEnv, seeds: Any, streams: Any, num_episodes: int,
                       rng_seed: int, *, learning_rate: float = 0.5, inverse_temperature: float = 5.0) -> TwoStepRun:
    """Run ``agent`` (one of ``TWO_STEP_AGENTS``) for ``num_episodes`` two-step trials on each of
    ``env``'s tasks (a TwoStep family), from ``env.reset_streams(seeds, streams)``. The
    second-stage action is 0 (it does not matter). First-stage choice: softmax over the action
    values with ``inverse_temperature``, drawn from ``default_rng(rng_seed)``; values learn with
    ``learning_rate`` (module docstring)."""
    check_choice(agent, "agent", TWO_STEP_AGENTS)
    env = _check_env(env, "two_step")
    episodes = check_int(num_episodes, "num_episodes", minimum=1)
    rng = np.random.default_rng(check_int(rng_seed, "rng_seed", minimum=0, below=2**64))
    alpha = check_float(learning_rate, "learning_rate", low=0.0, high=1.0)
    beta = check_float(inverse_temperature, "inverse_temperature", low=0.0)
    common_prob = np.array([task["common_prob"] for task in env.tasks], dtype=np.float64)
    N = env.num_envs
    rows = np.arange(N)
    q_first = np.zeros((N, 2))  # model-free first-stage values
    v_second = np.zeros((N, 2))  # second-stage state values (S1, S2)
    first_actions = np.zeros((N, episodes), dtype=np.int64)
    common = np.zeros((N, episodes), dtype=bool)
    second_states = np.zeros((N, episodes), dtype=np.int64)
    rewards = np.zeros((N, episodes))
    env.reset_streams(seeds, streams)
    for e in range(episodes):
        if agent == "model_based":  # action 0 commonly leads to S1, action 1 to S2
            values = np.stack([common_prob * v_second[:, 0] + (1 - common_prob) * v_second[:, 1],
                               common_prob * v_second[:, 1] + (1 - common_prob) * v_second[:, 0]], axis=1)
        else:
            values = q_first
        p_action_1 = 1.0 / (1.0 + np.exp(-beta * (values[:, 1] - values[:, 0])))  # two-action softmax
        action = (rng.random(N) < p_action_1).astype(np.int64)
        obs, _, _, _, info = env.step(action)
        state = np.argmax(obs[:, 1:], axis=1)  # 0: S1, 1: S2
        common[:, e] = info["common"]
        _, reward, terminated, _, _ = env.step(np.zeros(N, dtype=np.int64))
        if not terminated.all():  # the env's contract: an episode is two steps
            raise RuntimeError("env: a two-step episode did not end at its second step")
        v_second[rows, state] += alpha * (reward - v_second[rows, state])
        q_first[rows, action] += alpha * (reward - q_first[rows, action])
        first_actions[:, e], second_states[:, e], rewards[:, e] = action, state, reward
    return TwoStepRun(first_actions, common, second_states, rewards)


def stay_probabilities(first_actions: Any, common: Any, rewarded: Any) -> np.ndarray:
    """How often the next episode repeats the first-stage action, by what happened: float64 ``[2, 2]``,
    rows (rewarded, unrewarded), columns (common, rare) transition, NaN where no episode had that
    outcome. ``first_actions``, ``common``, ``rewarded`` (bool or 0/1 rewards): ``[num_envs, E]``
    with ``E >= 2``; pairs of consecutive episodes within a row.

    Model-free agents: rewarded > unrewarded in both columns (a main effect of reward);
    model-based ones: rewarded-common and unrewarded-rare highest (the interaction,
    ``(P[0, 0] - P[0, 1]) - (P[1, 0] - P[1, 1]) > 0``)."""
    actions = np.asarray(first_actions)
    if actions.ndim != 2 or actions.shape[1] < 2:
        raise ValueError(f"first_actions: expected shape [num_envs, E] with E >= 2, got shape {list(actions.shape)}")
    flags = {}
    for name, value in (("common", common), ("rewarded", rewarded)):
        array = np.asarray(value)
        if array.shape != actions.shape:
            raise ValueError(f"{name}: expected shape {list(actions.shape)} (as first_actions), got shape "
                             f"{list(array.shape)}")
        flags[name] = (array > 0)[:, :-1]
    stay = (actions[:, 1:] == actions[:, :-1])
    result = np.full((2, 2), np.nan)
    for i, was_rewarded in enumerate((True, False)):
        for j, was_common in enumerate((True, False)):
            cell = (flags["rewarded"] == was_rewarded) & (flags["common"] == was_common)
            if cell.any():
                result[i, j] = stay[cell].mean()
    return result
