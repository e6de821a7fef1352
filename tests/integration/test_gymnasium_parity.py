"""Alignment with Gymnasium's v5 robots (HalfCheetah-v5, Ant-v5, Swimmer-v5); the families that
change the physics (and the Hopper and Walker2d) are in test_dynamics_parity.py.

Each env of a batch starts from a random state (not only from reset) set with ``set_state``; the
reference gets the same state (``mj_resetData`` then ``set_state``, as ``MujocoEnv.reset`` does)
and the clipped actions. Observations and x-velocity must agree to 1e-8 (they are bit-identical:
the extension links the same libmujoco and repeats Gymnasium's calls), terminations must agree,
and the reward terms must be the documented functions of the reference's physics. An env is
compared until its episode ends; ours resets in the same step, so its last observation is then
read from ``info["final_obs"]``.
"""

from __future__ import annotations

import numpy as np
import pytest

import bmaml_robot as bm

mujoco = pytest.importorskip("mujoco")
pytest.importorskip("gymnasium")

ROBOTS = ("HalfCheetah", "Ant", "Swimmer")
DIRECTION_FAMILY = {"HalfCheetah": "HalfCheetahDir", "Ant": "AntDir", "Swimmer": "SwimmerDir"}
#: The MAML reference code's control cost weights (pytorch-maml-rl's half_cheetah.py: 0.05; ant.py: 0.5e-2).
CTRL_COST_WEIGHT = {"HalfCheetah": 0.05, "Ant": 0.5e-2, "Swimmer": 0.05}
#: The reference's constants added to the Ant's task terms (ant.py: AntVel +1.0, AntPos +4.0).
ANT_TASK_OFFSET = {"direction": 0.0, "velocity": 1.0, "goal": 4.0}
CONTACT_COST_WEIGHT = 5e-4
SURVIVE_REWARD = 0.05


def random_states(ref, num_envs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """qpos around the reference's init_qpos, random qvel: states a reset never produces."""
    qpos = ref.init_qpos + rng.uniform(-0.2, 0.2, size=(num_envs, ref.model.nq))
    qvel = rng.normal(0.0, 1.0, size=(num_envs, ref.model.nv))
    return qpos, qvel


def random_actions(ref, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Actions up to 1.5x the bounds: about a third of them out of range (ours clip them)."""
    return rng.uniform(-1.5, 1.5, size=(*shape, ref.action_space.shape[0])) * ref.action_space.high


def set_reference_state(ref, qpos: np.ndarray, qvel: np.ndarray) -> None:
    mujoco.mj_resetData(ref.model, ref.data)
    ref.set_state(qpos, qvel)


def our_last_obs(record: dict, t: int, i: int) -> np.ndarray:
    """Env i's observation after step t: the final one if its episode ended there."""
    return record["final_obs"][t, i] if record["_final_obs"][t, i] else record["obs"][t, i]


def expected_task_reward(family: bm.TaskFamily, task: dict, ref, x_velocity: float) -> float:
    offset = ANT_TASK_OFFSET[family.objective] if family.robot == "Ant" else 0.0
    if family.objective == "direction":
        return task["direction"] * x_velocity
    if family.objective == "velocity":
        return -abs(x_velocity - task["velocity"]) + offset
    assert family.objective == "goal"
    # The MAML reference code measures the goal distance at the torso's frame (Gymnasium's main body).
    x, y = ref.data.body("torso").xpos[:2]
    return -(abs(x - task["goal"][0]) + abs(y - task["goal"][1])) + offset


@pytest.mark.parametrize("robot", ROBOTS)
def test_observations_x_velocity_and_terminations_match_gymnasium(robot, make_reference, rollout):
    ref = make_reference(robot)
    rng = np.random.default_rng(sum(map(ord, robot)))
    num_envs, horizon, max_steps = 4, 40, 30
    env = bm.make_vec(DIRECTION_FAMILY[robot], num_envs, num_threads=2, seed=3, max_episode_steps=max_steps)
    env.set_tasks([{"direction": 1.0}] * num_envs)
    qpos, qvel = random_states(ref, num_envs, rng)
    if robot == "Ant":
        qvel[:2, 2] = 4.0  # two ants jump out of the healthy z range: terminations must agree
    first_obs = env.set_state(qpos, qvel)
    actions = random_actions(ref, (horizon, num_envs), rng)
    assert np.any(np.abs(actions) > ref.action_space.high)
    record = rollout(env, actions)
    low, high = ref.action_space.low, ref.action_space.high

    steps_compared = terminations = 0
    for i in range(num_envs):
        set_reference_state(ref, qpos[i], qvel[i])
        np.testing.assert_array_equal(first_obs[i], ref._get_obs())
        for t in range(horizon):
            ref_obs, _, ref_terminated, _, ref_info = ref.step(np.clip(actions[t, i], low, high))
            obs = our_last_obs(record, t, i)
            where = f"env {i}, step {t}"
            np.testing.assert_allclose(obs, ref_obs, rtol=0, atol=1e-8, err_msg=where)
            np.testing.assert_allclose(record["x_velocity"][t, i], ref_info["x_velocity"], rtol=0, atol=1e-8, err_msg=where)
            # Stronger than the specification, true today: the very same bits.
            np.testing.assert_array_equal(obs, ref_obs, err_msg=where)
            assert record["x_velocity"][t, i] == ref_info["x_velocity"], where
            assert record["terminated"][t, i] == ref_terminated, where
            assert not record["unstable"][t, i], where
            steps_compared += 1
            if ref_terminated:
                terminations += 1
                break
            assert record["truncated"][t, i] == (t == max_steps - 1), where
            if t == max_steps - 1:
                break
    assert steps_compared >= num_envs * 2
    if robot == "Ant":
        assert terminations >= 2, "the jumping ants should have left the healthy range"


@pytest.mark.parametrize("robot", ROBOTS)
def test_direction_rewards_are_gymnasium_x_velocity_and_costs(robot, make_reference, rollout):
    """Direction +1: reward_task is Gymnasium's x_velocity; ctrl cost on the clipped action;
    Ant's contact cost and survive bonus from the reference's own data."""
    ref = make_reference(robot)
    rng = np.random.default_rng(7)
    num_envs, horizon = 3, 25
    env = bm.make_vec(DIRECTION_FAMILY[robot], num_envs, seed=1, max_episode_steps=1000)
    env.set_tasks([{"direction": 1.0}] * num_envs)
    qpos, qvel = random_states(ref, num_envs, rng)
    env.set_state(qpos, qvel)
    actions = random_actions(ref, (horizon, num_envs), rng)
    record = rollout(env, actions)
    low, high = ref.action_space.low, ref.action_space.high

    touched = False
    for i in range(num_envs):
        set_reference_state(ref, qpos[i], qvel[i])
        for t in range(horizon):
            clipped = np.clip(actions[t, i], low, high)
            _, _, ref_terminated, _, ref_info = ref.step(clipped)
            where = f"env {i}, step {t}"
            assert record["reward_task"][t, i] == ref_info["x_velocity"], where
            np.testing.assert_allclose(
                record["reward_ctrl"][t, i], -CTRL_COST_WEIGHT[robot] * np.sum(clipped**2), rtol=1e-12, err_msg=where
            )
            if robot == "Ant":
                contact = -CONTACT_COST_WEIGHT * np.sum(np.clip(ref.data.cfrc_ext, -1.0, 1.0) ** 2)
                touched |= contact < 0.0
                np.testing.assert_allclose(record["reward_contact"][t, i], contact, rtol=1e-12, atol=1e-300, err_msg=where)
                np.testing.assert_allclose(record["reward_contact"][t, i], ref_info["reward_contact"], rtol=1e-12, atol=1e-300)
                assert record["reward_survive"][t, i] == (0.0 if ref_terminated else SURVIVE_REWARD), where
            else:
                assert record["reward_contact"][t, i] == 0.0 and record["reward_survive"][t, i] == 0.0, where
            terms = [record[name][t, i] for name in bm.REWARD_TERMS]
            np.testing.assert_allclose(record["reward"][t, i], sum(terms), rtol=1e-12, atol=1e-12, err_msg=where)
            if ref_terminated:
                break
    if robot == "Ant":
        assert touched, "the ants should have touched the floor: the contact term was never tested"


@pytest.mark.parametrize("name", [n for n, f in bm.FAMILIES.items() if f.robot != "Navigation2D" and not f.physics])
def test_task_rewards_follow_reference_physics(name, make_reference, rollout):
    """Every MuJoCo family with its own sampled tasks: reward_task is the documented function
    of the reference's x-velocity or torso position and of the env's task."""
    family = bm.FAMILIES[name]
    ref = make_reference(family.robot)
    rng = np.random.default_rng(11)
    num_envs, horizon = 3, 12
    env = bm.make_vec(name, num_envs, seed=2, max_episode_steps=1000)
    tasks = env.sample_tasks(num_envs, rng)
    env.set_tasks(tasks)
    qpos, qvel = random_states(ref, num_envs, rng)
    env.set_state(qpos, qvel)
    actions = random_actions(ref, (horizon, num_envs), rng)
    record = rollout(env, actions)
    low, high = ref.action_space.low, ref.action_space.high

    for i in range(num_envs):
        set_reference_state(ref, qpos[i], qvel[i])
        for t in range(horizon):
            _, _, ref_terminated, _, ref_info = ref.step(np.clip(actions[t, i], low, high))
            expected = expected_task_reward(family, tasks[i], ref, ref_info["x_velocity"])
            np.testing.assert_allclose(record["reward_task"][t, i], expected, rtol=1e-12, atol=1e-12, err_msg=f"{name} env {i} step {t}")
            if ref_terminated:
                break


def test_clipping_happens_before_the_physics(make_reference):
    """An action far out of range moves the robot exactly as the bound does."""
    ref = make_reference("HalfCheetah")
    rng = np.random.default_rng(5)
    env = bm.make_vec("HalfCheetahDir", 2, max_episode_steps=1000)
    qpos, qvel = random_states(ref, 1, rng)
    env.set_state(np.repeat(qpos, 2, axis=0), np.repeat(qvel, 2, axis=0))
    bound = np.where(rng.random(6) < 0.5, ref.action_space.low, ref.action_space.high)
    obs, reward, *_ = env.step(np.stack([bound * 1e6, bound]))
    np.testing.assert_array_equal(obs[0], obs[1])
    assert reward[0] == reward[1]


@pytest.mark.slow
@pytest.mark.parametrize("robot", ROBOTS)
def test_long_episodes_match_gymnasium(robot, make_reference, rollout):
    """Whole episodes from many random states: errors that grow slowly would show here."""
    ref = make_reference(robot)
    rng = np.random.default_rng(99)
    num_envs, horizon = 16, 400
    env = bm.make_vec(DIRECTION_FAMILY[robot], num_envs, num_threads=2, seed=0, max_episode_steps=horizon)
    env.set_tasks([{"direction": 1.0}] * num_envs)
    qpos, qvel = random_states(ref, num_envs, rng)
    env.set_state(qpos, qvel)
    actions = random_actions(ref, (horizon, num_envs), rng)
    record = rollout(env, actions)
    low, high = ref.action_space.low, ref.action_space.high
    for i in range(num_envs):
        set_reference_state(ref, qpos[i], qvel[i])
        for t in range(horizon):
            ref_obs, _, ref_terminated, _, ref_info = ref.step(np.clip(actions[t, i], low, high))
            np.testing.assert_array_equal(our_last_obs(record, t, i), ref_obs, err_msg=f"env {i}, step {t}")
            assert record["x_velocity"][t, i] == ref_info["x_velocity"]
            assert record["terminated"][t, i] == ref_terminated
            if ref_terminated:
                break
