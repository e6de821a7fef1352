"""Task families: sampling distributions and rewards as documented; Navigation2D."""

from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest

import bmaml_robot as bm

EXPECTED_FAMILIES = {
    "HalfCheetahDir", "HalfCheetahVel", "AntDir", "AntVel", "AntGoal", "SwimmerDir", "SwimmerVel", "Navigation2D",
    "HopperParams", "Walker2dParams", "HalfCheetahCrippled", "AntCrippled", "HalfCheetahMass", "SwimmerFluid",
}
VELOCITY_HIGH = {"HalfCheetahVel": 2.0, "AntVel": 3.0, "SwimmerVel": 0.5}


def test_the_documented_families_exist():
    assert set(bm.FAMILIES) == EXPECTED_FAMILIES
    for name, family in bm.FAMILIES.items():
        assert family.name == name and bm.get_family(name) is family


@pytest.mark.parametrize("name", sorted(EXPECTED_FAMILIES))
def test_every_family_makes_an_env_that_steps_with_its_tasks(name, rollout):
    env = bm.make_vec(name, 4, num_threads=2, seed=0, max_episode_steps=6)
    tasks = env.sample_tasks(4, np.random.default_rng(0))
    assert all(set(task) == set(env.family.task_keys) for task in tasks)
    env.set_tasks(tasks)
    obs, _ = env.reset(seed=0)
    assert np.all(np.isfinite(obs))
    record = rollout(env, np.random.default_rng(1).uniform(-1, 1, (8, 4, env.act_dim)))
    for key in ("obs", "reward", "x_velocity", *bm.REWARD_TERMS):
        assert np.all(np.isfinite(record[key])), key
    assert record["_final_obs"].any()


@pytest.mark.parametrize("name", ["HopperParams", "Walker2dParams"])
def test_rand_param_scales_are_log_uniform_with_the_reference_bases(name):
    """ProMP's rand_param_envs: every element x base^u, u ~ U[-3, 3] i.i.d.; base 1.5, damping 1.3."""
    family = bm.get_family(name)
    tasks = family.sample_tasks(400, np.random.default_rng(0))
    assert all(family.in_distribution(t) for t in tasks)
    for field, base in {"body_mass": 1.5, "body_inertia": 1.5, "dof_damping": 1.3, "geom_friction": 1.5}.items():
        u = np.log(np.array([list(t[field].values()) for t in tasks], dtype=float)).ravel() / np.log(base)
        assert np.all(np.abs(u) <= 3 + 1e-9) and np.abs(u).max() > 2.98, field
        np.testing.assert_allclose(u.mean(), 0.0, atol=0.1, err_msg=field)
        np.testing.assert_allclose(u.std(), np.sqrt(3), rtol=0.03, err_msg=field)
    assert not family.in_distribution({"body_mass": {"torso": 1.5**3.1}})
    assert family.in_distribution({})


@pytest.mark.parametrize(("name", "groups"), [
    ("HalfCheetahCrippled", [("bshin",), ("bfoot",), ("fthigh",), ("fshin",), ("ffoot",)]),
    ("AntCrippled", [("hip_1", "ankle_1"), ("hip_2", "ankle_2"), ("hip_3", "ankle_3")]),
])
def test_crippled_tasks_disable_one_listed_group_uniformly(name, groups):
    family = bm.get_family(name)
    tasks = family.sample_tasks(3000, np.random.default_rng(0))
    dead = [tuple(n for n, g in t["actuator_gear"].items() if g == 0.0) for t in tasks]
    assert all(set(t["actuator_gear"].values()) == {0.0, 1.0} for t in tasks)
    counts = np.array([dead.count(g) for g in groups]) / len(tasks)
    np.testing.assert_allclose(counts, 1 / len(groups), atol=0.03)
    assert all(family.in_distribution(t) for t in tasks[:20])
    held_out = {"actuator_gear": {"bthigh": 0.0}} if name == "HalfCheetahCrippled" else {
        "actuator_gear": {"hip_4": 0.0, "ankle_4": 0.0}}
    assert not family.in_distribution(held_out) and not family.in_distribution({})


def test_torso_mass_and_fluid_distributions():
    mass = bm.get_family("HalfCheetahMass")
    tasks = mass.sample_tasks(2000, np.random.default_rng(0))
    s = np.array([t["body_mass"]["torso"] for t in tasks])
    np.testing.assert_array_equal(np.array([t["body_inertia"]["torso"] for t in tasks]), np.repeat(s[:, None], 3, axis=1))
    assert all(t["body_mass"]["bthigh"] == 1.0 for t in tasks)
    u = np.log(s) / np.log(1.5)
    assert np.all(np.abs(u) <= 3) and np.abs(u).max() > 2.99
    np.testing.assert_allclose(u.std(), np.sqrt(3), rtol=0.05)
    assert not mass.in_distribution({"body_mass": {"torso": 2.0}})  # the inertia must follow the mass

    fluid = bm.get_family("SwimmerFluid")
    tasks = fluid.sample_tasks(4000, np.random.default_rng(0))
    for key, (low, high) in {"density": (4.8, 4000.0), "viscosity": (0.0022, 0.1)}.items():
        x = np.log([t[key] for t in tasks])
        assert np.all((x >= np.log(low)) & (x <= np.log(high))), key
        np.testing.assert_allclose(x.mean(), (np.log(low) + np.log(high)) / 2, atol=0.06, err_msg=key)
    assert np.corrcoef(np.log([t["density"] for t in tasks]), np.log([t["viscosity"] for t in tasks]))[0, 1] < 0.05
    assert fluid.in_distribution({}) and not fluid.in_distribution({"density": 1.0})


def test_physics_tasks_change_the_body_and_only_where_said():
    """A dead motor: the same action moves the crippled cheetah differently, and gives it the same
    control cost (the commanded action is charged, as the body, not the reward, changes)."""
    env, actions = twin_envs("HalfCheetahCrippled", [{}, {"actuator_gear": {"fshin": 0.0}}])
    moved = False
    for _ in range(5):
        obs, _, _, _, info = env.step(actions)
        moved |= not np.array_equal(obs[0], obs[1])
        assert info["reward_ctrl"][0] == info["reward_ctrl"][1]
    assert moved


def test_sampling_is_reproducible():
    family = bm.get_family("AntGoal")
    assert family.sample_tasks(5, np.random.default_rng(3)) == family.sample_tasks(5, np.random.default_rng(3))
    assert family.sample_tasks(5, np.random.default_rng(3)) != family.sample_tasks(5, np.random.default_rng(4))


@pytest.mark.parametrize("name", ["HalfCheetahDir", "AntDir", "SwimmerDir"])
def test_direction_tasks_are_plus_or_minus_one(name):
    tasks = bm.get_family(name).sample_tasks(2000, np.random.default_rng(0))
    directions = np.array([t["direction"] for t in tasks])
    assert set(directions) == {-1.0, 1.0}
    assert 0.45 < np.mean(directions == 1.0) < 0.55


@pytest.mark.parametrize("name", sorted(VELOCITY_HIGH))
def test_velocity_tasks_are_uniform_in_range(name):
    high = VELOCITY_HIGH[name]
    v = np.array([t["velocity"] for t in bm.get_family(name).sample_tasks(2000, np.random.default_rng(0))])
    assert np.all((v >= 0.0) & (v <= high))
    assert v.min() < 0.01 * high and v.max() > 0.99 * high
    np.testing.assert_allclose(v.mean(), high / 2, rtol=0.05)
    np.testing.assert_allclose(v.std(), high / np.sqrt(12), rtol=0.05)


def test_ant_goals_are_uniform_in_the_reference_square():
    """pytorch-maml-rl's AntPos (and the original MAML code): goals ~ U[-3, 3]^2."""
    goals = np.array([t["goal"] for t in bm.get_family("AntGoal").sample_tasks(4000, np.random.default_rng(0))])
    assert goals.shape == (4000, 2)
    assert np.all(np.abs(goals) <= 3.0) and np.all(np.abs(goals).max(axis=0) > 2.99)
    np.testing.assert_allclose(goals.mean(axis=0), 0.0, atol=0.12)
    np.testing.assert_allclose(goals.std(axis=0), 6 / np.sqrt(12), rtol=0.05)
    quadrants = np.histogram2d(goals[:, 0] > 0, goals[:, 1] > 0, bins=2)[0] / len(goals)
    np.testing.assert_allclose(quadrants, 0.25, atol=0.025)


def test_navigation_goals_are_uniform_in_the_square():
    goals = np.array([t["goal"] for t in bm.get_family("Navigation2D").sample_tasks(4000, np.random.default_rng(0))])
    assert np.all(np.abs(goals) <= 0.5) and np.all(np.abs(goals).max(axis=0) > 0.49)
    np.testing.assert_allclose(goals.mean(axis=0), 0.0, atol=0.02)
    np.testing.assert_allclose(goals.std(axis=0), 1 / np.sqrt(12), rtol=0.05)


def twin_envs(name: str, tasks: list[dict], seed: int = 0) -> tuple[bm.BatchedRobotEnv, np.ndarray]:
    """len(tasks) envs in the same random state, each with its own task; one step's actions."""
    env = bm.make_vec(name, len(tasks), seed=seed, max_episode_steps=1000)
    env.set_tasks(tasks)
    env.reset(seed=seed)
    qpos, qvel = env.get_state()
    env.set_state(np.repeat(qpos[:1], len(tasks), axis=0), np.repeat(qvel[:1], len(tasks), axis=0))
    action = np.random.default_rng(seed).uniform(-1, 1, env.act_dim)
    return env, np.repeat(action[None], len(tasks), axis=0)


@pytest.mark.parametrize("name", ["HalfCheetahDir", "AntDir", "SwimmerDir"])
def test_direction_minus_one_flips_the_task_reward(name):
    env, actions = twin_envs(name, [{"direction": 1.0}, {"direction": -1.0}])
    for _ in range(5):
        obs, reward, _, _, info = env.step(actions)
        np.testing.assert_array_equal(obs[0], obs[1])  # the task never changes the physics
        assert info["x_velocity"][0] == info["x_velocity"][1] != 0.0
        assert info["reward_task"][0] == info["x_velocity"][0] == -info["reward_task"][1]
        assert info["reward_ctrl"][0] == info["reward_ctrl"][1] < 0.0
        np.testing.assert_allclose(reward[0] - reward[1], 2 * info["x_velocity"][0], rtol=1e-12)


@pytest.mark.parametrize("name", sorted(VELOCITY_HIGH))
def test_velocity_reward_is_minus_the_speed_error(name):
    """The Ant's has the reference's +1 (it terminates early: see csrc/objective.h)."""
    goals = [0.0, 0.3, VELOCITY_HIGH[name]]
    offset = 1.0 if bm.get_family(name).robot == "Ant" else 0.0
    env, actions = twin_envs(name, [{"velocity": v} for v in goals])
    for _ in range(5):
        _, _, _, _, info = env.step(actions)
        np.testing.assert_array_equal(info["reward_task"], -np.abs(info["x_velocity"] - goals) + offset)


def test_ant_goal_reward_is_minus_the_l1_distance():
    """Two goals far out in opposite corners: with an L1 distance the two task rewards always sum to
    -(4 * 20) + 2 * 4 (the reference's +4 per step); their difference measures the torso position,
    which must be the one of the step."""
    env, actions = twin_envs("AntGoal", [{"goal": [-20.0, -20.0]}, {"goal": [20.0, 20.0]}])
    for _ in range(5):
        _, _, _, _, info = env.step(actions)
        np.testing.assert_allclose(info["reward_task"].sum(), -80.0 + 8.0, rtol=0, atol=1e-12)
        x_plus_y = (info["reward_task"][1] - info["reward_task"][0]) / 2
        qpos, _ = env.get_state()
        assert abs(x_plus_y - (qpos[0, 0] + qpos[0, 1])) < 0.05  # torso frame vs root joint: close


# --- Navigation2D ----------------------------------------------------------------------------


def test_navigation_moves_by_clipped_actions_and_pays_minus_the_distance():
    goal = np.array([0.3, -0.2])
    env = bm.make_vec("Navigation2D", 1, seed=0, max_episode_steps=100)
    env.set_tasks([{"goal": list(goal)}])
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [[0.0, 0.0]])
    obs, reward, terminated, _, info = env.step(np.array([[5.0, -0.05]]))
    np.testing.assert_array_equal(obs, [[0.1, -0.05]])
    assert reward[0] == -np.hypot(0.1 - goal[0], -0.05 - goal[1]) == info["reward_task"][0]
    assert info["reward_ctrl"][0] == 0.0 and not terminated[0]
    obs, *_ = env.step(np.array([[-1e9, -1e9]]))
    np.testing.assert_allclose(obs, [[0.0, -0.15]], atol=1e-15)


@pytest.mark.parametrize(
    ("offset", "ends"),
    [((0.009, -0.009), True), ((0.0, 0.0), True), ((0.011, 0.0), False), ((0.0, -0.0105), False), ((0.02, 0.02), False)],
)
def test_navigation_terminates_within_0_01_of_the_goal_per_axis(offset, ends):
    goal = np.array([0.3, -0.2])
    env = bm.make_vec("Navigation2D", 1, seed=0)
    env.set_tasks([{"goal": list(goal)}])
    position = goal + offset
    obs = env.set_state(position[None], np.zeros((1, 0)))
    np.testing.assert_array_equal(obs[0], position)
    obs, reward, terminated, truncated, info = env.step(np.zeros((1, 2)))
    assert terminated[0] == ends and not truncated[0]
    np.testing.assert_allclose(reward[0], -np.hypot(*offset), rtol=1e-12, atol=1e-15)
    if ends:
        np.testing.assert_array_equal(info["final_obs"][0], position)
        np.testing.assert_array_equal(obs[0], [0.0, 0.0])  # reset to the origin in the same step
    else:
        np.testing.assert_array_equal(obs[0], position)


def test_navigation_reaches_its_goal_with_greedy_steps():
    goal = np.array([0.35, -0.25])
    env = bm.make_vec("Navigation2D", 1, seed=0)
    env.set_tasks([{"goal": list(goal)}])
    obs, _ = env.reset(seed=0)
    for step in range(1, 10):  # noqa: B007 (the count is checked after the loop)
        obs, reward, terminated, _, _ = env.step(goal - obs)  # clipped to steps of 0.1 per axis
        if terminated[0]:
            break
    assert step == 4  # max(0.35, 0.25) / 0.1 rounded up
    assert abs(reward[0]) < 0.01


# --- single (gymnasium.make) envs ------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED_FAMILIES))
def test_every_family_is_registered_and_passes_gymnasiums_env_checker(name):
    from gymnasium.utils.env_checker import check_env

    env = gymnasium.make(f"bmaml_robot/{name}-v0")
    assert env.unwrapped.family is bm.FAMILIES[name]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Box observation space (minimum|maximum) value is")
        check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_single_env_with_a_fixed_task():
    env = gymnasium.make("bmaml_robot/HalfCheetahDir-v0", task={"direction": -1.0})
    obs, info = env.reset(seed=0)
    assert obs.shape == (17,) and info["task"] == {"direction": -1.0}
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert isinstance(reward, float) and not terminated and not truncated
        assert info["reward_task"] == -info["x_velocity"]
        assert obs in env.observation_space
    env.close()


def test_single_env_returns_the_last_observation_when_its_episode_ends():
    env = gymnasium.make("bmaml_robot/Navigation2D-v0", task={"goal": [0.05, 0.0]})
    obs, _ = env.reset(seed=0)
    obs, reward, terminated, truncated, _ = env.step(np.array([0.05, 0.0], np.float32))
    assert terminated and not truncated
    np.testing.assert_allclose(obs, [0.05, 0.0], atol=1e-8)  # not the origin it was reset to


def test_single_env_draws_a_task_per_reset_when_none_is_fixed():
    env = gymnasium.make("bmaml_robot/AntGoal-v0")
    tasks = [env.reset(seed=s)[1]["task"] for s in range(3)]
    assert tasks[0] != tasks[1] != tasks[2]
    assert env.reset(seed=0)[1]["task"] == tasks[0]
    assert all(np.hypot(*t["goal"]) <= 3.0 for t in tasks)


def test_in_distribution_is_the_support_of_each_family() -> None:
    """Every sampled task is in the distribution; tasks outside it are allowed but flagged."""
    for name, family in bm.FAMILIES.items():
        tasks = family.sample_tasks(500, np.random.default_rng(1))
        assert all(family.in_distribution(task) for task in tasks), name
    assert not bm.get_family("HalfCheetahDir").in_distribution({"direction": 0.5})
    assert not bm.get_family("HalfCheetahVel").in_distribution({"velocity": 2.5})
    assert not bm.get_family("AntGoal").in_distribution({"goal": [3.5, 0.0]})
    assert bm.get_family("AntGoal").in_distribution({"goal": [-3.0, 3.0]})
    assert not bm.get_family("Navigation2D").in_distribution({"goal": [0.0, 0.6]})
    with pytest.raises(ValueError, match="task"):
        bm.get_family("AntGoal").in_distribution({"goal": [np.nan, 0.0]})
