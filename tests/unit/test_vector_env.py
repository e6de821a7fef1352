"""The batched robot env: Gymnasium API, reset noise, determinism, SAME_STEP autoreset, time limits."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, VectorEnv

import bmaml_robot as bm

DIRECTION_FAMILY = {"HalfCheetah": "HalfCheetahDir", "Ant": "AntDir", "Swimmer": "SwimmerDir"}
DIMS = {  # robot: (obs_dim, act_dim, nq, nv)
    "HalfCheetah": (17, 6, 9, 9),
    "Ant": (105, 8, 15, 14),
    "Swimmer": (8, 2, 5, 5),
    "Hopper": (11, 3, 6, 6),
    "Walker2d": (17, 6, 9, 9),
    "Navigation2D": (2, 2, 2, 0),
}


def random_actions(env: bm.BatchedRobotEnv, horizon: int, rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(-1.3, 1.3, size=(horizon, env.num_envs, env.act_dim)) * env.single_action_space.high


# --- Gymnasium API ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(bm.FAMILIES))
def test_vector_env_spaces_and_metadata(name):
    robot = bm.FAMILIES[name].robot
    obs_dim, act_dim, nq, nv = DIMS[robot]
    env = bm.make_vec(name, 3, seed=0)
    assert isinstance(env, VectorEnv) and isinstance(env, bm.BatchedRobotEnv)
    assert env.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    assert (env.num_envs, env.obs_dim, env.act_dim) == (3, obs_dim, act_dim)
    assert env.single_observation_space == gymnasium.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float64)
    assert env.observation_space.shape == (3, obs_dim) and env.observation_space.dtype == np.float64
    assert env.single_action_space.shape == (act_dim,) and env.single_action_space.dtype == np.float32
    assert env.action_space.shape == (3, act_dim) and env.action_space.dtype == np.float32
    bound = 0.1 if robot == "Navigation2D" else 1.0  # Gymnasium's ctrlrange for the MuJoCo robots
    np.testing.assert_array_equal(env.single_action_space.low, np.float32(-bound))
    np.testing.assert_array_equal(env.single_action_space.high, np.float32(bound))
    qpos, qvel = env.get_state()
    assert qpos.shape == (3, nq) and qvel.shape == (3, nv)

    obs, info = env.reset(seed=1)
    assert obs.dtype == np.float64 and obs in env.observation_space and info == {}
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert obs in env.observation_space
    assert reward.shape == (3,) and reward.dtype == np.float64
    assert terminated.dtype == truncated.dtype == np.bool_
    for key in ("x_velocity", *bm.REWARD_TERMS):
        assert info[key].shape == (3,) and info[key].dtype == np.float64, key
    assert info["final_obs"].shape == (3, obs_dim)
    assert info["_final_obs"].dtype == np.bool_ and info["unstable"].dtype == np.bool_
    assert not info["unstable"].any() and "unstable_reason" not in info
    env.close()
    assert env.closed
    env.close()  # twice is harmless


def test_reward_is_the_sum_of_its_terms(rollout):
    env = bm.make_vec("AntGoal", 4, seed=0, max_episode_steps=7)
    env.set_tasks(env.sample_tasks(4, np.random.default_rng(0)))
    env.reset(seed=0)
    record = rollout(env, random_actions(env, 12, np.random.default_rng(1)))
    total = sum(record[name] for name in bm.REWARD_TERMS)
    np.testing.assert_allclose(record["reward"], total, rtol=1e-12, atol=1e-12)
    assert np.all(record["reward_survive"][~record["terminated"]] == 0.05)


# --- reset noise -----------------------------------------------------------------------------


@pytest.mark.parametrize("robot", ["HalfCheetah", "Ant", "Swimmer"])
def test_reset_noise_matches_gymnasium(robot, make_reference):
    """qpos = init_qpos + U(-0.1, 0.1); qvel ~ N(0, 0.1^2) (HalfCheetah, Ant) or U(-0.1, 0.1) (Swimmer)."""
    ref = make_reference(robot)
    num_envs = 1000  # x 2 resets: 2000 draws (each Ant env reserves a 15 MB MuJoCo arena)
    env = bm.make_vec(DIRECTION_FAMILY[robot], num_envs, num_threads=2, seed=0)
    env.reset(seed=12345)
    states = [env.get_state()]
    env.reset()
    states.append(env.get_state())
    qpos, qvel = (np.concatenate(s) for s in zip(*states))

    dq = qpos - ref.init_qpos
    assert np.all(np.abs(dq) <= 0.1)
    np.testing.assert_allclose(dq.mean(axis=0), 0.0, atol=0.01)
    np.testing.assert_allclose(dq.std(axis=0), 0.1 / np.sqrt(3), rtol=0.07)
    assert np.all(dq.min(axis=0) < -0.098) and np.all(dq.max(axis=0) > 0.098)

    np.testing.assert_array_equal(ref.init_qvel, 0.0)
    np.testing.assert_allclose(qvel.mean(axis=0), 0.0, atol=0.012)
    beyond_one_sigma = np.mean(np.abs(qvel) > 0.1)
    if robot == "Swimmer":
        assert np.all(np.abs(qvel) <= 0.1)
        np.testing.assert_allclose(qvel.std(axis=0), 0.1 / np.sqrt(3), rtol=0.07)
        assert np.all(qvel.min(axis=0) < -0.098) and np.all(qvel.max(axis=0) > 0.098)
    else:
        np.testing.assert_allclose(qvel.std(axis=0), 0.1, rtol=0.08)
        assert 0.30 < beyond_one_sigma < 0.335  # 31.7% for a normal
        assert 0.035 < np.mean(np.abs(qvel) > 0.2) < 0.056  # 4.55%
    # Every env draws its own noise, and every reset new noise.
    assert len(np.unique(qpos, axis=0)) == 2 * num_envs

    # Gymnasium's own resets agree (fewer of them: it is slower).
    ref_qpos, ref_qvel = [], []
    for s in range(400):
        ref.reset(seed=s)
        ref_qpos.append(ref.data.qpos.copy())
        ref_qvel.append(ref.data.qvel.copy())
    ref_qpos, ref_qvel = np.array(ref_qpos), np.array(ref_qvel)
    assert np.all(np.abs(ref_qpos - ref.init_qpos) <= 0.1)
    np.testing.assert_allclose((ref_qpos - ref.init_qpos).std(), dq.std(), rtol=0.1)
    np.testing.assert_allclose(ref_qvel.std(), qvel.std(), rtol=0.1)
    assert (np.abs(ref_qvel).max() <= 0.1) == (robot == "Swimmer")


def test_reset_observation_is_the_observation_of_the_reset_state():
    env = bm.make_vec("HalfCheetahDir", 5, seed=3)
    obs, _ = env.reset(seed=3)
    qpos, qvel = env.get_state()
    np.testing.assert_array_equal(obs, np.concatenate([qpos[:, 1:], qvel], axis=1))
    np.testing.assert_array_equal(env.set_state(qpos, qvel), obs)


# --- determinism -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "num_envs", "horizon"), [("HalfCheetahDir", 24, 40), ("AntGoal", 10, 30), ("SwimmerVel", 17, 30)]
)
def test_bit_identical_for_any_num_threads(name, num_envs, horizon, rollout, same_rollouts):
    rng = np.random.default_rng(0)
    tasks = bm.get_family(name).sample_tasks(num_envs, rng)
    actions = None
    records = []
    for num_threads in (1, 2, 3, 2 * num_envs):  # the last: more threads than envs
        env = bm.make_vec(name, num_envs, num_threads=num_threads, seed=77, max_episode_steps=12)
        env.set_tasks(tasks)
        env.reset(seed=5)
        if actions is None:
            actions = random_actions(env, horizon, rng)
        records.append(rollout(env, actions))
        env.close()
    assert records[0]["_final_obs"].any(), "episodes should have ended and been reset inside the run"
    for other in records[1:]:
        same_rollouts(records[0], other)


def test_different_seeds_give_different_resets():
    a, _ = bm.make_vec("AntDir", 4, seed=0).reset(seed=0)
    b, _ = bm.make_vec("AntDir", 4, seed=0).reset(seed=1)
    assert not np.any(np.all(a == b, axis=1))
    # ... and within one seed every env has its own stream.
    assert len(np.unique(a, axis=0)) == 4


def test_reset_with_the_same_seed_twice_replays_the_same_stream(rollout, same_rollouts):
    """Also after an odd number of normal draws (HalfCheetah has nv = 9), and with autoresets."""
    env = bm.make_vec("HalfCheetahVel", 6, num_threads=2, seed=0, max_episode_steps=4)
    env.set_tasks(env.sample_tasks(6, np.random.default_rng(0)))
    actions = random_actions(env, 15, np.random.default_rng(1))
    first_obs, _ = env.reset(seed=42)
    first = rollout(env, actions)
    env.reset()  # an unseeded reset in between must not leak into the next seeded one
    again_obs, _ = env.reset(seed=42)
    again = rollout(env, actions)
    np.testing.assert_array_equal(first_obs, again_obs)
    same_rollouts(first, again)


def test_constructor_seed_is_the_seed_of_the_first_reset():
    a, _ = bm.make_vec("HalfCheetahDir", 3, seed=9).reset()
    b, _ = bm.make_vec("HalfCheetahDir", 3, seed=0).reset(seed=9)
    np.testing.assert_array_equal(a, b)
    big, _ = bm.make_vec("HalfCheetahDir", 3, seed=2**64 - 1).reset()
    assert np.all(np.isfinite(big))


def test_unseeded_resets_continue_the_stream():
    env = bm.make_vec("SwimmerDir", 3, seed=0)
    first, _ = env.reset(seed=0)
    second, _ = env.reset()
    assert not np.any(np.all(first == second, axis=1))


@pytest.mark.parametrize("name", ["HalfCheetahDir", "AntGoal", "SwimmerVel", "Navigation2D"])
def test_reset_streams_start_each_env_as_its_own_seed_and_stream(name, rollout, same_rollouts):
    """Env i of a reset_streams batch == env streams[i] of an env reset with seeds[i] (per-task
    seeds in one batch): same observations, same state, then the same steps."""
    K, B = 3, 4
    seeds = np.array([7, 2**63 + 5, 123456789], dtype=np.uint64)
    env = bm.make_vec(name, K * B, num_threads=2, seed=0, max_episode_steps=6)
    tasks = env.sample_tasks(K, np.random.default_rng(1))
    env.set_tasks([task for task in tasks for _ in range(B)])
    obs = env.reset_streams(np.repeat(seeds, B), np.tile(np.arange(B), K))
    qpos, qvel = env.get_state()
    actions = random_actions(env, 8, np.random.default_rng(2))
    batch = rollout(env, actions)
    for k, seed in enumerate(seeds):
        one = bm.make_vec(name, B, num_threads=1, seed=1, max_episode_steps=6)
        one.set_tasks([tasks[k]] * B)
        rows = slice(k * B, (k + 1) * B)
        one_obs, _ = one.reset(seed=int(seed))
        np.testing.assert_array_equal(obs[rows], one_obs)
        one_qpos, one_qvel = one.get_state()
        np.testing.assert_array_equal(qpos[rows], one_qpos)
        np.testing.assert_array_equal(qvel[rows], one_qvel)
        part = {key: value[rows] if key in ("qpos", "qvel") else value[:, rows] for key, value in batch.items()}
        same_rollouts(part, rollout(one, actions[:, rows]))


# --- SAME_STEP autoreset and time limits -----------------------------------------------------


def test_truncation_at_max_episode_steps_with_same_step_autoreset(rollout):
    max_steps, horizon, seed = 5, 12, 21
    rng = np.random.default_rng(3)
    env = bm.make_vec("HalfCheetahDir", 3, seed=seed, max_episode_steps=max_steps)
    twin = bm.make_vec("HalfCheetahDir", 3, seed=seed, max_episode_steps=1000)  # same, no time limit
    tasks = [{"direction": d} for d in (1.0, -1.0, 1.0)]
    env.set_tasks(tasks)
    twin.set_tasks(tasks)
    env.reset(seed=seed)
    twin.reset(seed=seed)
    actions = random_actions(env, horizon, rng)
    record = rollout(env, actions)
    twin_record = rollout(twin, actions[:max_steps])

    ends = np.zeros((horizon, 3), bool)
    ends[[max_steps - 1, 2 * max_steps - 1]] = True
    np.testing.assert_array_equal(record["truncated"], ends)
    assert not record["terminated"].any()
    np.testing.assert_array_equal(record["_final_obs"], ends)

    # Up to the end, the time limit changes nothing; the ending step is reported in full.
    last = max_steps - 1
    np.testing.assert_array_equal(record["obs"][:last], twin_record["obs"][:last])
    np.testing.assert_array_equal(record["final_obs"][last], twin_record["obs"][last])
    for key in ("reward", "x_velocity", *bm.REWARD_TERMS):
        np.testing.assert_array_equal(record[key][:max_steps], twin_record[key], err_msg=key)
    assert np.all(np.isfinite(record["final_obs"][ends]))

    # The returned observation starts the next episode: the second draw of each env's stream.
    fresh = bm.make_vec("HalfCheetahDir", 3, seed=seed)
    fresh.reset(seed=seed)
    second_reset, _ = fresh.reset()
    np.testing.assert_array_equal(record["obs"][last], second_reset)
    assert not np.allclose(record["obs"][last], record["final_obs"][last])


def test_set_state_and_reset_start_new_episodes():
    env = bm.make_vec("SwimmerDir", 2, seed=0, max_episode_steps=3)
    env.reset(seed=0)
    zeros = np.zeros((2, 2))
    env.step(zeros)
    env.step(zeros)
    qpos, qvel = env.get_state()
    env.set_state(qpos, qvel)  # the step counters restart here
    assert not any(env.step(zeros)[3].any() for _ in range(2))
    assert env.step(zeros)[3].all()
    env.step(zeros)
    env.reset()
    assert not any(env.step(zeros)[3].any() for _ in range(2))
    assert env.step(zeros)[3].all()


def test_set_tasks_applies_from_the_next_step_without_ending_episodes():
    env = bm.make_vec("HalfCheetahDir", 2, seed=0, max_episode_steps=4)
    env.set_tasks([{"direction": 1.0}, {"direction": 1.0}])
    env.reset(seed=0)
    actions = np.full((2, 6), 0.5)
    env.step(actions)
    env.set_tasks([{"direction": -1.0}, {"direction": 1.0}])
    assert env.tasks == [{"direction": -1.0}, {"direction": 1.0}]
    _, _, terminated, truncated, info = env.step(actions)
    assert not (terminated.any() or truncated.any())
    assert info["reward_task"][0] == -info["x_velocity"][0]
    assert info["reward_task"][1] == info["x_velocity"][1]


def test_ant_terminates_when_unhealthy_and_is_reset(rollout):
    env = bm.make_vec("AntDir", 3, seed=0, max_episode_steps=1000)
    env.set_tasks([{"direction": 1.0}] * 3)
    env.reset(seed=0)
    qpos, qvel = env.get_state()
    qpos[0, 2] = 1.5  # above the healthy range (0.2 <= z <= 1): ends at once
    qvel[1, 2] = 2.0  # jumps out of it within a few steps
    env.set_state(qpos, qvel)
    record = rollout(env, np.zeros((15, 3, 8)))

    assert record["terminated"][0, 0]
    jump_end = int(np.argmax(record["terminated"][:, 1]))
    assert record["terminated"][jump_end, 1] and jump_end > 0
    assert not record["terminated"][:, 2].any(), "an ant resting near its initial pose stays healthy"
    assert not record["truncated"].any()
    for t, i in [(0, 0), (jump_end, 1)]:
        z = record["final_obs"][t, i, 0]  # the observation starts with qpos[2], the torso height
        assert not 0.2 <= z <= 1.0
        assert record["reward_survive"][t, i] == 0.0
        assert 0.65 <= record["obs"][t, i, 0] <= 0.85  # a fresh reset: 0.75 + U(-0.1, 0.1)
    assert np.all(record["reward_survive"][:jump_end, 1] == 0.05)
    np.testing.assert_array_equal(record["_final_obs"], record["terminated"])


def test_default_tasks_come_from_the_family_and_a_closed_env_says_so():
    env = bm.make_vec("HalfCheetahDir", 6, seed=3)
    assert len(env.tasks) == 6 and {t["direction"] for t in env.tasks} <= {-1.0, 1.0}
    assert env.tasks == bm.make_vec("HalfCheetahDir", 6, seed=3).tasks
    env.close()
    with pytest.raises(RuntimeError, match=r"env is closed: step\(\) after close\(\)"):
        env.step(np.zeros((6, 6)))
