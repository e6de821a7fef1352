"""MetaSampler: the batch of episodes that meta-training learns from.

Every property is checked against what the batched env really returned (a recorder wraps
``sampler.env.step``) or against the policy itself, never against the sampler's own bookkeeping:
shapes, mask semantics (1 until an episode's last step, 0 after; Ant terminations end episodes
early), the final observations, the stored log-probs, per-task parameters and recurrent state.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from bmaml_robot.envs.families import get_family
from bmaml_robot.meta.sampler import MetaSampler
from bmaml_robot.policies import make_policy


@pytest.fixture(autouse=True)
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class StepRecorder:
    """Wraps ``env.step`` (instance attribute) and keeps every input and output."""

    def __init__(self, env: Any) -> None:
        self.env = env
        self.inner = env.step
        self.actions: list[np.ndarray] = []
        self.outputs: list[tuple] = []
        env.step = self

    def __call__(self, actions: np.ndarray):
        self.actions.append(np.array(actions, copy=True))
        out = self.inner(actions)
        obs, reward, term, trunc, info = out
        self.outputs.append((obs.copy(), reward.copy(), term.copy(), trunc.copy(), info["final_obs"].copy()))
        return out


def make_sampler(task: str, K: int, B: int, T: int, *, seed: int = 0, threads: int = 1) -> MetaSampler:
    sampler = MetaSampler(task, K, B, T, num_threads=threads)
    sampler.set_tasks(get_family(task).sample_tasks(K, np.random.default_rng(seed)))
    return sampler


def masked_equal(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, **tol: float) -> None:
    valid = mask > 0
    torch.testing.assert_close(a[valid], b[valid], **tol)


# ----------------------------------------------------------------------------- shapes, env agreement
@pytest.mark.parametrize("task, policy_kind", [("HalfCheetahDir", "mlp"), ("AntDir", "gru")])
def test_episodes_shapes_and_agreement_with_the_env(task: str, policy_kind: str) -> None:
    K, B, T = 2, 3, 40
    sampler = make_sampler(task, K, B, T)
    env = sampler.env
    # init_log_std=3: nearly bang-bang actions, so some Ants fall over and terminate early.
    policy = make_policy(policy_kind, env.obs_dim, env.act_dim, hidden_size=16, init_log_std=3.0, seed=0)
    reset_obs = env.reset(seed=11)[0].copy()
    recorder = StepRecorder(env)
    steps_before = sampler.env_steps
    episodes = sampler.sample(policy, None, seed=11)
    episodes.validate()

    N = K * B
    assert episodes.observations.shape == (T, K, B, env.obs_dim)
    assert episodes.actions.shape == (T, K, B, env.act_dim)
    for name in ("rewards", "mask", "log_probs", "terminated"):
        assert getattr(episodes, name).shape == (T, K, B), name
    assert episodes.last_observations.shape == (K, B, env.obs_dim)
    assert episodes.terminated.dtype == torch.bool
    assert episodes.advantages is None and episodes.returns is None

    # Recompute "alive" from the env's own outputs.
    steps = len(recorder.outputs)
    alive = np.ones(N, dtype=bool)
    expected_mask = np.zeros((T, N))
    expected_last = np.full((N, env.obs_dim), np.nan)
    end_step = np.full(N, -1)
    for t in range(steps):
        expected_mask[t] = alive
        obs, reward, term, trunc, final_obs = recorder.outputs[t]
        ended = alive & (term | trunc)
        expected_last[ended] = final_obs[ended]
        end_step[ended] = t
        alive &= ~(term | trunc)
    assert (end_step >= 0).all(), "every episode ends (terminated or truncated at the horizon)"
    mask = episodes.mask.reshape(T, N).numpy()
    np.testing.assert_array_equal(mask, expected_mask)
    # 1 from t = 0 through the episode's last step, 0 after: a prefix of ones, per episode.
    lengths = mask.sum(0).astype(int)
    np.testing.assert_array_equal(lengths, end_step + 1)
    for n in range(N):
        assert mask[: lengths[n], n].all() and not mask[lengths[n]:, n].any()

    terminated = episodes.terminated.reshape(T, N).numpy()
    for n in range(N):
        if lengths[n] < T:  # ended early: only by termination, flagged at its last step only
            assert terminated[lengths[n] - 1, n] and terminated.sum(0)[n] == 1
        else:
            assert terminated.sum(0)[n] == int(recorder.outputs[T - 1][2][n])
    # Rewards: the env's for valid steps, zero after the end.
    rewards = episodes.rewards.reshape(T, N).numpy()
    for t in range(steps):
        np.testing.assert_allclose(rewards[t], np.where(expected_mask[t] > 0, recorder.outputs[t][1], 0.0),
                                   rtol=1e-6, atol=1e-6)
    assert (rewards[expected_mask == 0] == 0).all()
    # Observations: the reset obs, then each step's obs; actions: exactly what the env received.
    obs = episodes.observations.reshape(T, N, -1)
    np.testing.assert_allclose(obs[0].numpy(), reset_obs, rtol=1e-6, atol=1e-6)
    for t in range(1, steps):
        rows = expected_mask[t] > 0
        np.testing.assert_allclose(obs[t].numpy()[rows], recorder.outputs[t - 1][0][rows], rtol=1e-6, atol=1e-6)
    acts = episodes.actions.reshape(T, N, -1)
    for t in range(steps):
        np.testing.assert_array_equal(acts[t].numpy(), recorder.actions[t])
    # Last observations: the env's final observation of each episode (not the autoreset obs).
    np.testing.assert_allclose(episodes.last_observations.reshape(N, -1).numpy(), expected_last, rtol=1e-6, atol=1e-6)
    assert sampler.env_steps - steps_before == int(mask.sum())
    if task == "AntDir":
        assert (lengths < T).any(), "bang-bang Ants should fall over (terminate) within the horizon"
        assert terminated.any()


def test_navigation_goal_reached_ends_the_episode_early() -> None:
    # A policy whose mean is 0 at the origin (tanh MLP, zero biases) barely moves with a tiny std:
    # a goal at the origin is reached at the first step, a far one never.
    K, B, T = 2, 2, 15
    sampler = MetaSampler("Navigation2D", K, B, T)
    sampler.set_tasks([{"goal": [0.001, -0.002]}, {"goal": [0.45, 0.45]}])
    policy = make_policy("mlp", 2, 2, init_log_std=-8.0, seed=0)
    episodes = sampler.sample(policy, None, seed=3)
    np.testing.assert_array_equal(episodes.mask[:, 0].sum(0).numpy(), [1, 1])
    assert episodes.terminated[0, 0].all()
    np.testing.assert_array_equal(episodes.mask[:, 1].sum(0).numpy(), [T, T])
    assert not episodes.terminated[:, 1].any()
    assert (episodes.rewards[1:, 0] == 0).all()
    # Return of the finished episodes is minus the (tiny) distance left at the first step.
    assert (episodes.episode_returns()[0] > -0.01).all()


# ----------------------------------------------------------------------------- log-probs and params
@pytest.mark.parametrize("kind", ["mlp", "rnn", "gru", "lstm"])
def test_log_probs_are_the_policys_under_the_sampling_params(kind: str) -> None:
    K, B, T = 2, 3, 25
    sampler = make_sampler("AntDir", K, B, T, seed=1)
    env = sampler.env
    policy = make_policy(kind, env.obs_dim, env.act_dim, hidden_size=16, init_log_std=1.0, seed=2)
    # Per-task params that differ from the meta-params and between the two tasks.
    g = torch.Generator().manual_seed(5)
    params = {n: (p + 0.3 * torch.randn(p.shape, generator=g)).detach()
              for n, p in policy.batched_params(K).items()}
    episodes = sampler.sample(policy, params, seed=4)
    with torch.no_grad():
        mean, log_std = policy.sequence(episodes.observations, params)
        expected = policy.distribution(mean, log_std).log_prob(episodes.actions)
        masked_equal(episodes.log_probs, expected, episodes.mask, rtol=1e-5, atol=1e-4)
        # Not the meta-params' log-probs (the params really were used).
        mean0, log_std0 = policy.sequence(episodes.observations, None)
        meta = policy.distribution(mean0, log_std0).log_prob(episodes.actions)
        valid = episodes.mask > 0
        assert (episodes.log_probs[valid] - meta[valid]).abs().max() > 1e-2
        # Swapping the two tasks' params changes the log-probs: task k used params[k].
        swapped = {n: p.flip(0) for n, p in params.items()}
        other = policy.distribution(*policy.sequence(episodes.observations, swapped)).log_prob(episodes.actions)
        assert (episodes.log_probs[valid] - other[valid]).abs().max() > 1e-2


def test_per_task_params_give_per_task_action_distributions() -> None:
    K, B, T = 2, 4, 10
    sampler = make_sampler("HalfCheetahDir", K, B, T)
    policy = make_policy("mlp", 17, 6, hidden_sizes=(16, 16), init_log_std=-6.0, seed=0)
    params = {n: p.detach().clone() for n, p in policy.batched_params(K).items()}
    params["mean.bias"][0] = -20.0
    params["mean.bias"][1] = +20.0
    episodes = sampler.sample(policy, params, seed=0)
    actions = episodes.actions
    # The output layer's inputs are tanh features (|.| <= 1), 16 of them per output with Xavier
    # weights (|w| <= 0.5): |W h| <= 8, so the biases decide the sign of every action.
    assert (actions[:, 0] < -10.0).all() and (actions[:, 1] > 10.0).all()


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_recurrent_state_is_carried_through_the_episode(kind: str) -> None:
    K, B, T = 2, 2, 30
    sampler = make_sampler("HalfCheetahDir", K, B, T, seed=3)
    policy = make_policy(kind, 17, 6, hidden_size=16, init_log_std=-1.0, seed=1)
    episodes = sampler.sample(policy, None, seed=9)
    with torch.no_grad():
        carried = policy.distribution(*policy.sequence(episodes.observations)).log_prob(episodes.actions)
        masked_equal(episodes.log_probs, carried, episodes.mask, rtol=1e-5, atol=1e-4)
        # A policy that forgot its state at every step would give other log-probs.
        stateless = []
        for t in range(T):
            mean, log_std, _ = policy.step(episodes.observations[t], policy.initial_state((K, B)))
            stateless.append(policy.distribution(mean, log_std).log_prob(episodes.actions[t]))
        stateless = torch.stack(stateless)
        assert (episodes.log_probs[1:] - stateless[1:]).abs().max() > 1e-2
        torch.testing.assert_close(episodes.log_probs[0], stateless[0], rtol=1e-5, atol=1e-5)


def test_state_is_reset_at_episode_start_of_each_batch() -> None:
    # Two consecutive batches with the same seed are identical: nothing (state, noise) leaks.
    sampler = make_sampler("HalfCheetahDir", 2, 2, 12)
    policy = make_policy("lstm", 17, 6, hidden_size=8, seed=0)
    a = sampler.sample(policy, None, seed=5)
    b = sampler.sample(policy, None, seed=5)
    c = sampler.sample(policy, None, seed=6)
    for x, y in zip(a, b):
        if x is not None:
            assert torch.equal(x, y)
    assert not torch.equal(a.actions, c.actions)


def test_sampling_does_not_depend_on_the_thread_count() -> None:
    batches = []
    for threads in (1, 2):
        sampler = make_sampler("AntDir", 2, 3, 20, threads=threads)
        policy = make_policy("mlp", sampler.env.obs_dim, sampler.env.act_dim, init_log_std=3.0, seed=0)
        batches.append(sampler.sample(policy, None, seed=7))
    for x, y in zip(*batches):
        if x is not None:
            assert torch.equal(x, y)


def test_set_tasks_checks_the_number_of_tasks() -> None:
    sampler = MetaSampler("Navigation2D", 3, 2, 5)
    with pytest.raises(ValueError, match=r"tasks: expected 3 tasks, got 2"):
        sampler.set_tasks([{"goal": [0, 0]}] * 2)


def test_each_task_goes_to_its_episodes() -> None:
    # Task k is given to envs k*B .. k*B+B-1: rewards of a task's episodes follow its own goal.
    K, B, T = 3, 2, 5
    sampler = MetaSampler("Navigation2D", K, B, T)
    goals = [[0.4, 0.0], [-0.4, 0.0], [0.0, 0.4]]
    sampler.set_tasks([{"goal": g} for g in goals])
    policy = make_policy("mlp", 2, 2, init_log_std=-8.0, seed=0)  # stays (almost) at the origin
    episodes = sampler.sample(policy, None, seed=0)
    # First reward: minus the distance from (about) the origin to the task's goal.
    torch.testing.assert_close(episodes.rewards[0], torch.full((K, B), -0.4), atol=1e-3, rtol=0)
    pos = episodes.observations[1]  # position after the first step (its reward's), per env
    for k, goal in enumerate(goals):
        dist = (pos[k] - torch.tensor(goal)).norm(dim=-1)
        torch.testing.assert_close(episodes.rewards[0, k], -dist, atol=1e-5, rtol=0)
