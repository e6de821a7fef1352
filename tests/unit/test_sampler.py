"""MetaSampler: the batch of episodes that meta-training learns from.

Every property is checked against what the batched env really returned (a recorder wraps
``sampler.env.step``) or against the policy itself, never against the sampler's own bookkeeping:
shapes, mask semantics (1 until an episode's last step, 0 after; Ant terminations end episodes
early), the final observations, the stored log-probs, per-task parameters and recurrent state.

Randomness is per task: a slice of tasks sampled on its own (as a Ray worker does) gives
bit-identical episodes to the same slice of a full-batch sample, for every policy kind, with
per-task or shared parameters, whatever the thread counts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from bmaml_robot.envs.families import get_family
from bmaml_robot.envs.vector_env import BatchedRobotEnv
from bmaml_robot.meta.episodes import Episodes
from bmaml_robot.meta.sampler import MetaSampler, _run_shape, task_seeds
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
    # Task k's B envs start as a B-env env reset with the task's own reset seed.
    task_env = BatchedRobotEnv(task, B, max_episode_steps=T)
    reset_obs = np.concatenate([task_env.reset(seed=int(s))[0] for s in task_seeds(11, 0, K)[0]])
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
    # Observations: the reset obs, then each step's obs; actions: the policy's, and the env received
    # them mapped from the normalised space [-10, 10] onto its bounds [-1, 1] (pytorch-maml-rl's
    # NormalizedActionWrapper: lb + (clip(a, -s, s) + s) (ub - lb) / 2s).
    obs = episodes.observations.reshape(T, N, -1)
    np.testing.assert_allclose(obs[0].numpy(), reset_obs, rtol=1e-6, atol=1e-6)
    for t in range(1, steps):
        rows = expected_mask[t] > 0
        np.testing.assert_allclose(obs[t].numpy()[rows], recorder.outputs[t - 1][0][rows], rtol=1e-6, atol=1e-6)
    acts = episodes.actions.reshape(T, N, -1)
    for t in range(steps):
        rows = expected_mask[t] > 0
        clipped = np.clip(acts[t].numpy()[rows].astype(np.float64), -10.0, 10.0)
        np.testing.assert_allclose(recorder.actions[t][rows], -1.0 + (clipped + 10.0) * 2.0 / 20.0, rtol=0, atol=1e-15)
        assert np.abs(acts[t].numpy()[rows]).max() > 1.0  # the policy's own space is wider than the robot's
    # Masked steps are zeros (whatever the envs did after their episode ended).
    masked = torch.from_numpy(expected_mask == 0).view(T, K, B)
    assert (episodes.observations[masked] == 0).all() and (episodes.actions[masked] == 0).all()
    assert (episodes.log_probs[masked] == 0).all()
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


# ----------------------------------------------------------------------------- per-task randomness
def assert_same_episodes(a: Episodes, b: Episodes) -> None:
    for name, x, y in zip(a._fields, a, b):
        if x is None or y is None:
            assert x is None and y is None, name
        else:
            assert x.dtype == y.dtype and torch.equal(x, y), name


def perturbed_params(policy: Any, K: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: (p + 0.2 * torch.randn(p.shape, generator=g)).detach() for n, p in policy.batched_params(K).items()}


def sample_slice(family: str, tasks: list, start: int, stop: int, B: int, T: int, policy: Any,
                 params: dict | None, seed: int, threads: int = 1) -> Episodes:
    sampler = MetaSampler(family, stop - start, B, T, num_threads=threads)
    sampler.set_tasks(tasks[start:stop])
    sliced = None if params is None else {n: p[start:stop] for n, p in params.items()}
    try:
        return sampler.sample(policy, sliced, seed, first_task=start)
    finally:
        sampler.close()


@pytest.mark.parametrize("kind", ["mlp", "rnn", "gru", "lstm"])
@pytest.mark.parametrize("per_task", [False, True], ids=["meta-params", "per-task-params"])
def test_a_slice_of_tasks_sampled_alone_equals_that_slice_of_the_full_batch(kind: str, per_task: bool) -> None:
    # AntDir with bang-bang actions: episodes end at different steps, so slices stop stepping
    # earlier than the full batch. B = 3 envs per task: MKL's 2-3 row matmuls depend on the
    # data's alignment, the case the sampler's padding exists for.
    family, K, B, T = "AntDir", 5, 3, 25
    tasks = get_family(family).sample_tasks(K, np.random.default_rng(4))
    full_sampler = MetaSampler(family, K, B, T, num_threads=2)
    full_sampler.set_tasks(tasks)
    policy = make_policy(kind, full_sampler.obs_dim, full_sampler.act_dim, hidden_size=13, hidden_sizes=(32, 7),
                         init_log_std=2.0, seed=1)
    params = perturbed_params(policy, K, seed=2) if per_task else None
    full = full_sampler.sample(policy, params, seed=8)
    assert (full.mask.sum(0) < T).any(), "some Ants should fall (episodes of different lengths)"
    for start, stop in ((0, 2), (2, 5), (4, 5), (1, 4)):
        alone = sample_slice(family, tasks, start, stop, B, T, policy, params, seed=8)
        assert_same_episodes(alone, full.select_tasks(start, stop))


def test_slices_match_for_a_benchmark_sized_batch() -> None:
    # 20 envs per task (the MAML setting), MLP 64x64, a worker-sized slice of 7 tasks.
    family, K, B, T = "HalfCheetahDir", 12, 20, 8
    tasks = get_family(family).sample_tasks(K, np.random.default_rng(0))
    sampler = make_sampler(family, K, B, T, threads=2)
    policy = make_policy("mlp", sampler.obs_dim, sampler.act_dim, seed=0)
    params = perturbed_params(policy, K, seed=3)
    for p in (None, params):
        full = sampler.sample(policy, p, seed=123)
        assert_same_episodes(sample_slice(family, tasks, 5, 12, B, T, policy, p, seed=123), full.select_tasks(5, 12))


def test_each_task_has_its_own_streams() -> None:
    K, B, T = 3, 2, 10
    family = "HalfCheetahDir"
    tasks = get_family(family).sample_tasks(K, np.random.default_rng(0))
    policy = make_policy("gru", 17, 6, hidden_size=8, seed=0)
    params = perturbed_params(policy, K, seed=0)
    base = sample_slice(family, tasks, 0, K, B, T, policy, params, seed=5)
    # Another task's parameters and task do not change task 0's episodes...
    other = {n: p.clone() for n, p in params.items()}
    for p in other.values():
        p[1:] += 0.5
    changed = sample_slice(family, [tasks[0], tasks[2], tasks[1]], 0, K, B, T, policy, other, seed=5)
    assert_same_episodes(changed.select_tasks(0, 1), base.select_tasks(0, 1))
    assert not torch.equal(changed.actions[:, 1:], base.actions[:, 1:])
    # ...but the task's index does: the same task and params as task 1 of the batch draw other noise.
    sampler = make_sampler(family, 1, B, T)
    sampler.set_tasks(tasks[:1])
    as_task_1 = sampler.sample(policy, {n: p[:1] for n, p in params.items()}, seed=5, first_task=1)
    assert not torch.equal(as_task_1.observations[0], base.observations[0, 0:1])
    assert not torch.equal(as_task_1.actions, base.actions[:, 0:1])


def test_task_seeds_are_per_task_and_checked() -> None:
    reset, noise = task_seeds(7, 0, 10)
    assert reset.dtype == noise.dtype == np.uint64 and reset.shape == noise.shape == (10,)
    assert len(set(reset.tolist()) | set(noise.tolist())) == 20
    for start, stop in ((0, 3), (3, 10), (9, 10)):
        r, n = task_seeds(7, start, stop - start)
        np.testing.assert_array_equal(r, reset[start:stop])
        np.testing.assert_array_equal(n, noise[start:stop])
    assert not np.array_equal(task_seeds(8, 0, 10)[0], reset)
    task_seeds(2**64 - 1, 0, 1)  # every seed the config accepts
    with pytest.raises(ValueError, match=r"seed: expected an integer in \[0, 2\*\*64\), got -1"):
        task_seeds(-1, 0, 1)
    with pytest.raises(ValueError, match=r"first_task: expected an integer in \[0, 2\*\*63\), got 1.5"):
        task_seeds(0, 1.5, 1)  # type: ignore[arg-type]


def test_callers_torch_threads_change_nothing_and_are_restored() -> None:
    sampler = make_sampler("AntDir", 5, 3, 15)
    policy = make_policy("gru", sampler.obs_dim, sampler.act_dim, hidden_size=13, init_log_std=1.0, seed=0)
    one = sampler.sample(policy, None, seed=2)
    torch.set_num_threads(2)
    two = sampler.sample(policy, None, seed=2)
    assert torch.get_num_threads() == 2
    assert_same_episodes(one, two)


@pytest.mark.parametrize("K, B, expected", [(40, 20, (40, 20)), (20, 20, (24, 20)), (5, 3, (8, 4)),
                                            (1, 1, (8, 4)), (3, 32, (3, 32)), (2, 6, (4, 8))])
def test_policy_batch_padding(K: int, B: int, expected: tuple[int, int]) -> None:
    K_run, B_run = _run_shape(K, B)
    assert (K_run, B_run) == expected
    assert B_run % 4 == 0 and (K_run * B_run) % 32 == 0 and K_run >= K and B_run >= B
