"""The envs as Gymnasium users expect them: make/make_vec with max_episode_steps, render modes,
NEXT_STEP and SAME_STEP autoreset against SyncVectorEnv, seed lists, Gymnasium's vector wrappers."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers.vector import DtypeObservation, NormalizeObservation, RecordEpisodeStatistics

import bmaml_robot as bm
from bmaml_robot.envs import rendering
from bmaml_robot.envs.rendering import GLUnavailableError

NEXT, SAME = AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP
#: Goals for Navigation2D reached in 1 to 5 steps (terminated, at different steps) or never (truncated).
GOALS = [[0.3, -0.2], [-0.45, 0.1], [0.05, 0.05], [3.0, 3.0], [0.2, 0.49]]


def env_id(family: str) -> str:
    return f"bmaml_robot/{family}-v0"


def toward_goals(obs: np.ndarray, t: int) -> np.ndarray:
    return np.clip(np.array(GOALS) - obs, -0.1, 0.1).astype(np.float32)


def no_gl() -> str | None:
    """Why MuJoCo frames cannot be rendered here (no headless OpenGL), or None."""
    try:
        rendering.gl_backend()
    except GLUnavailableError as error:
        return str(error)
    return None


# --- 1. max_episode_steps ---------------------------------------------------------------------


def episode_length(env: gym.Env, limit: int = 1000) -> int:
    env.reset(seed=0)
    for t in range(1, limit + 1):
        *_, terminated, truncated, _ = env.step(np.zeros(env.action_space.shape, np.float32))
        if terminated or truncated:
            return t
    return limit + 1


def test_spec_says_100_steps_and_make_honours_max_episode_steps():
    spec = gym.spec(env_id("HalfCheetahDir"))
    assert spec.max_episode_steps == 100
    assert spec.vector_entry_point == "bmaml_robot.envs.vector_env:make_gymnasium_vec"
    assert episode_length(gym.make(env_id("HalfCheetahDir"))) == 100
    longer = gym.make(env_id("HalfCheetahDir"), max_episode_steps=150)  # past the old built-in 100
    assert longer.spec.max_episode_steps == 150 and episode_length(longer) == 150
    assert episode_length(gym.make(env_id("SwimmerVel"), max_episode_steps=7)) == 7
    # -1: no TimeLimit, and the env made by make has no limit of its own.
    assert episode_length(gym.make(env_id("HalfCheetahDir"), max_episode_steps=-1), limit=300) == 301
    # Made directly, the env's own limit applies.
    direct = gym.envs.registration.load_env_creator(spec.entry_point)("HalfCheetahDir", max_episode_steps=12)
    assert episode_length(direct) == 12


def test_make_vec_honours_max_episode_steps():
    env = gym.make_vec(env_id("SwimmerDir"), num_envs=2)
    assert env.max_episode_steps == 100
    env = gym.make_vec(env_id("SwimmerDir"), num_envs=2, max_episode_steps=6)
    assert env.max_episode_steps == 6
    env.reset(seed=0)
    truncated = [env.step(np.zeros((2, 2), np.float32))[3] for _ in range(13)]
    assert [t.all() for t in truncated] == [False] * 5 + [True] + [False] * 6 + [True]


# --- 3. make_vec ------------------------------------------------------------------------------


def test_make_vec_builds_the_batched_env_with_next_step_autoreset():
    env = gym.make_vec(env_id("HalfCheetahDir"), num_envs=3)
    assert type(env) is bm.BatchedRobotEnv and env.num_envs == 3
    assert env.metadata["autoreset_mode"] is NEXT and env.spec.id == env_id("HalfCheetahDir")
    same = gym.make_vec(env_id("HalfCheetahDir"), num_envs=3, autoreset_mode=SAME)
    assert same.metadata["autoreset_mode"] is SAME
    assert env.metadata["autoreset_mode"] is NEXT  # metadata is per instance
    assert bm.make_vec("HalfCheetahDir", 3).metadata["autoreset_mode"] is SAME  # the package's default
    explicit = gym.make_vec(env_id("HalfCheetahDir"), num_envs=3, vectorization_mode="vector_entry_point")
    assert type(explicit) is bm.BatchedRobotEnv
    assert type(gym.make_vec(env_id("HalfCheetahDir"), num_envs=3, vectorization_mode="sync")) is SyncVectorEnv
    tasks = [{"direction": 1.0}, {"direction": -1.0}, {"direction": 1.0}]
    assert gym.make_vec(env_id("HalfCheetahDir"), num_envs=3, tasks=tasks).tasks == tasks
    assert gym.make_vec(env_id("HalfCheetahDir"), num_envs=3, task={"direction": -1.0}).tasks == [{"direction": -1.0}] * 3


def test_make_vec_bad_input_names_the_argument():
    with pytest.raises(ValueError, match=r"render_mode: the batched env does not render \(expected None\), got 'rgb_array'"):
        gym.make_vec(env_id("HalfCheetahDir"), num_envs=2, render_mode="rgb_array")
    with pytest.raises(ValueError, match=r"task, tasks: expected at most one of them"):
        gym.make_vec(env_id("HalfCheetahDir"), num_envs=2, task={"direction": 1.0}, tasks=[{"direction": 1.0}] * 2)
    with pytest.raises(ValueError, match=r"task: HalfCheetahDir tasks have exactly the keys \['direction'\]"):
        gym.make_vec(env_id("HalfCheetahDir"), num_envs=2, task={"velocity": 1.0})
    with pytest.raises(ValueError, match=r"autoreset_mode: expected AutoresetMode.SAME_STEP or AutoresetMode.NEXT_STEP "
                                         r"\(or \['SameStep', 'NextStep'\]\), got <AutoresetMode.DISABLED"):
        gym.make_vec(env_id("HalfCheetahDir"), num_envs=2, autoreset_mode=AutoresetMode.DISABLED)
    with pytest.raises(ValueError, match=r"autoreset_mode: .*got 'next'"):
        bm.make_vec("HalfCheetahDir", 2, autoreset_mode="next")
    assert bm.make_vec("HalfCheetahDir", 2, autoreset_mode="NextStep").autoreset_mode is NEXT


def test_make_vec_default_equals_make_vec_sync():
    """The batched env and Gymnasium's SyncVectorEnv of single envs: the same episodes."""
    kwargs = {"num_envs": 3, "task": {"direction": -1.0}, "max_episode_steps": 8}
    batched = gym.make_vec(env_id("HalfCheetahDir"), **kwargs)
    sync = gym.make_vec(env_id("HalfCheetahDir"), vectorization_mode="sync", **kwargs)
    actions = np.random.default_rng(0).uniform(-1, 1, (20, 3, 6)).astype(np.float32)
    assert_same_rollouts(sync, batched, [5, 6, 7], actions)


# --- 4. autoreset modes against SyncVectorEnv -------------------------------------------------


def assert_same_rollouts(reference: Any, env: Any, seeds: list[int], actions: np.ndarray | Callable) -> int:
    """Step both with the same actions; every output must be identical. Returns the episode ends."""
    obs, _ = reference.reset(seed=seeds)
    mine, _ = env.reset(seed=seeds)
    np.testing.assert_array_equal(mine, obs)
    ends = 0
    for t in range(len(actions) if isinstance(actions, np.ndarray) else 40):
        action = actions[t] if isinstance(actions, np.ndarray) else actions(obs, t)
        expected, got = reference.step(action), env.step(action)
        for k, name in enumerate(("obs", "reward", "terminated", "truncated")):
            np.testing.assert_array_equal(got[k], expected[k], err_msg=f"{name} at step {t}")
        if reference.metadata["autoreset_mode"] is SAME:
            for i in np.flatnonzero(expected[2] | expected[3]):
                np.testing.assert_array_equal(got[4]["final_obs"][i], expected[4]["final_obs"][i])
            ended = expected[4].get("_final_obs", np.zeros(len(obs), bool))  # absent where none ended
            np.testing.assert_array_equal(got[4]["_final_obs"], ended)
        obs = expected[0]
        ends += int((expected[2] | expected[3]).sum())
    return ends


def sync_of_single_envs(family: str, tasks: list[dict], max_episode_steps: int, mode: AutoresetMode) -> SyncVectorEnv:
    return SyncVectorEnv([lambda task=task: gym.make(env_id(family), task=task, max_episode_steps=max_episode_steps)
                          for task in tasks], autoreset_mode=mode)


@pytest.mark.parametrize("mode", [NEXT, SAME])
def test_navigation_matches_sync_vector_env_across_terminations_and_truncations(mode):
    tasks = [{"goal": goal} for goal in GOALS]
    reference = sync_of_single_envs("Navigation2D", tasks, 7, mode)
    env = bm.make_vec("Navigation2D", len(tasks), max_episode_steps=7, autoreset_mode=mode)
    env.set_tasks(tasks)
    ends = assert_same_rollouts(reference, env, [11, 12, 13, 14, 15], toward_goals)
    assert ends > 20  # episodes ended at different steps, by reaching the goal and by the limit


@pytest.mark.parametrize("mode", [NEXT, SAME])
def test_half_cheetah_matches_sync_vector_env_with_a_short_time_limit(mode):
    tasks = [{"direction": 1.0}, {"direction": -1.0}, {"direction": 1.0}]
    reference = sync_of_single_envs("HalfCheetahDir", tasks, 9, mode)
    env = bm.make_vec("HalfCheetahDir", 3, max_episode_steps=9, autoreset_mode=mode, num_threads=2)
    env.set_tasks(tasks)
    actions = np.random.default_rng(1).uniform(-1.2, 1.2, (50, 3, 6)).astype(np.float32)
    assert assert_same_rollouts(reference, env, [3, 1, 4], actions) == 15  # 5 episodes each, reset noise included


def test_next_step_reports_the_end_then_the_new_episode():
    env = bm.make_vec("Navigation2D", 2, max_episode_steps=50, autoreset_mode=NEXT)
    env.set_tasks([{"goal": [0.1, 0.0]}, {"goal": [3.0, 0.0]}])
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(np.array([[0.1, 0.0], [0.1, 0.0]]))
    assert terminated.tolist() == [True, False] and "final_obs" not in info
    np.testing.assert_allclose(obs[0], [0.1, 0.0])  # the episode's last observation
    obs, reward, terminated, truncated, info = env.step(np.array([[0.1, 0.1], [0.1, 0.0]]))  # env 0's action ignored
    np.testing.assert_array_equal(obs[0], [0.0, 0.0])  # its new episode's first observation
    np.testing.assert_allclose(obs[1], [0.2, 0.0])
    assert reward[0] == 0.0 and not terminated.any() and not truncated.any()
    assert info["x_velocity"][0] == 0.0 and info["x_velocity"][1] == pytest.approx(0.1)
    obs, *_ = env.step(np.array([[0.0, 0.1], [0.1, 0.0]]))
    np.testing.assert_allclose(obs[0], [0.0, 0.1])


def test_termination_on_the_last_step_is_not_also_a_truncation():
    """The documented difference from Gymnasium's TimeLimit (it reports both)."""
    env = bm.make_vec("Navigation2D", 1, max_episode_steps=3, autoreset_mode=NEXT)
    env.set_tasks([{"goal": [0.3, 0.0]}])
    single = gym.make(env_id("Navigation2D"), task={"goal": [0.3, 0.0]}, max_episode_steps=3)
    env.reset(seed=0)
    single.reset(seed=0)
    for _ in range(3):
        _, _, terminated, truncated, _ = env.step(np.array([[0.1, 0.0]]))
        _, _, single_terminated, single_truncated, _ = single.step(np.array([0.1, 0.0], np.float32))
    assert (terminated[0], truncated[0]) == (True, False)
    assert (single_terminated, single_truncated) == (True, True)


@pytest.mark.parametrize("family", ["HalfCheetahDir", "AntDir"])
def test_next_step_equals_same_step_where_no_episode_ended(family):
    """Same seeds, same streams: reset, reset_streams, set_state and every step until an end."""
    envs = {mode: bm.make_vec(family, 3, seed=5, max_episode_steps=30, autoreset_mode=mode) for mode in (SAME, NEXT)}
    first = {mode: env.reset()[0] for mode, env in envs.items()}  # unseeded: stream i of seed 5
    np.testing.assert_array_equal(first[SAME], first[NEXT])
    streams = {mode: env.reset_streams([7, 7, 9], [0, 2, 2]) for mode, env in envs.items()}
    np.testing.assert_array_equal(streams[SAME], streams[NEXT])
    qpos, qvel = envs[SAME].get_state()
    np.testing.assert_array_equal(envs[NEXT].get_state()[0], qpos)
    states = {mode: env.set_state(qpos, qvel) for mode, env in envs.items()}
    np.testing.assert_array_equal(states[SAME], states[NEXT])
    act_dim = envs[SAME].act_dim
    for action in np.random.default_rng(2).uniform(-1, 1, (10, 3, act_dim)):
        same, nxt = envs[SAME].step(action), envs[NEXT].step(action)
        for k in range(4):
            np.testing.assert_array_equal(nxt[k], same[k])
        for key in ("x_velocity", *bm.REWARD_TERMS, "unstable"):
            np.testing.assert_array_equal(nxt[4][key], same[4][key])


def test_next_step_unstable_env_ends_truncated_then_restarts():
    env = bm.make_vec("HalfCheetahDir", 3, seed=0, autoreset_mode=NEXT)
    env.reset(seed=0)
    qpos, qvel = env.get_state()
    qvel[1] = 1e12  # env 1 blows up at its next step
    env.set_state(qpos, qvel)
    obs, reward, terminated, truncated, info = env.step(np.zeros((3, 6)))
    assert truncated.tolist() == [False, True, False] and reward[1] == 0.0
    assert info["unstable"].tolist() == [False, True, False]
    assert info["unstable_reason"][1] and np.isfinite(obs).all()
    obs, reward, terminated, truncated, info = env.step(np.zeros((3, 6)))
    assert not truncated.any() and not info["unstable"].any() and "unstable_reason" not in info
    qpos, qvel = env.get_state()
    np.testing.assert_array_equal(obs[1], np.concatenate([qpos[1, 1:], qvel[1]]))  # its new episode's start


def test_next_step_bad_input_has_the_core_words():
    envs = {mode: bm.make_vec("HalfCheetahDir", 3, autoreset_mode=mode) for mode in (SAME, NEXT)}
    with pytest.raises(gym.error.ResetNeeded, match=r"step: call reset\(\) before step\(\)"):
        envs[NEXT].step(np.zeros((3, 6)))
    nan = np.zeros((3, 6))
    nan[2, 4] = np.nan
    wide = np.ones((3, 6), np.longdouble)
    wide[1, 3] = np.longdouble(10) ** 4000
    for actions in (np.zeros((3, 5)), np.zeros((3, 6), np.int64), nan, wide, [[0.0] * 6] * 2):
        messages = []
        for env in envs.values():
            env.reset(seed=0)
            with pytest.raises((ValueError, TypeError)) as error:
                env.step(actions)
            messages.append((type(error.value), str(error.value)))
        assert messages[0] == messages[1], messages


# --- 4. NEXT_STEP on the threaded core: the core's hold mask --------------------------------


def step_outputs(env: bm.BatchedRobotEnv, actions: np.ndarray) -> list[np.ndarray]:
    """Every output of a step, info included (in a fixed order), for bitwise comparisons."""
    obs, reward, terminated, truncated, info = env.step(actions)
    return [obs, reward, terminated, truncated] + [np.asarray(info[key]) for key in sorted(info)]


@pytest.mark.parametrize("family", ["HalfCheetahDir", "Navigation2D"])
def test_next_step_is_bit_identical_for_any_num_threads(family):
    """NEXT_STEP runs on the threaded core: 1 and 3 threads give the same bits, through time limits,
    terminations at different steps (Navigation2D's goals) and an unstable env (HalfCheetah)."""
    num_envs = len(GOALS)
    envs = [bm.make_vec(family, num_envs, num_threads=threads, seed=3, max_episode_steps=6, autoreset_mode=NEXT)
            for threads in (1, 3)]
    assert [env.num_threads for env in envs] == [1, 3]
    for env in envs:
        if family == "Navigation2D":
            env.set_tasks([{"goal": goal} for goal in GOALS])
        env.reset(seed=list(range(num_envs)))
        if family == "HalfCheetahDir":
            qpos, qvel = env.get_state()
            qvel[3] = 1e12  # env 3 is unstable at the first step: its episodes end a step later
            env.set_state(qpos, qvel)
    actions = np.random.default_rng(0).uniform(-1.2, 1.2, (30, num_envs, envs[0].act_dim))
    ends = 0
    for t, action in enumerate(actions):
        one, three = (step_outputs(env, action * envs[0].single_action_space.high) for env in envs)
        for a, b in zip(one, three):
            np.testing.assert_array_equal(a, b, err_msg=f"step {t}")
        ends += int((one[2] | one[3]).sum())
    assert ends >= 20


def hold_mask(num_envs: int, *held: int) -> np.ndarray:
    mask = np.zeros(num_envs, bool)
    mask[list(held)] = True
    return mask


@pytest.mark.parametrize("threads", [1, 3])
def test_a_held_env_is_left_as_it_is(threads):
    """hold[i]: env i is not stepped (state, step count, reset stream unchanged) and reports its
    current observation, reward 0, not done, final_obs NaN; its action is not even read."""
    env = bm.make_vec("HalfCheetahDir", 4, num_threads=threads, seed=0, max_episode_steps=3)
    core = env._core
    obs = core.reset(0)
    qpos, qvel = core.get_state()
    actions = np.random.default_rng(0).uniform(-1, 1, (4, 6))
    actions[1] = np.nan  # held: ignored
    out = core.step(actions, hold_mask(4, 1, 3))
    next_obs, reward, terminated, truncated, x_velocity, terms, final_obs, instability = out
    after_qpos, after_qvel = core.get_state()
    for i in (1, 3):
        np.testing.assert_array_equal(after_qpos[i], qpos[i])
        np.testing.assert_array_equal(after_qvel[i], qvel[i])
        np.testing.assert_array_equal(next_obs[i], obs[i])
        assert reward[i] == 0.0 and x_velocity[i] == 0.0 and not terms[i].any()
        assert not terminated[i] and not truncated[i] and instability[i] == 0 and np.isnan(final_obs[i]).all()
    for i in (0, 2):
        assert not np.array_equal(after_qpos[i], qpos[i]) and reward[i] != 0.0
    # A held step is no step at all: env 1, held once, runs as env 1 of a core that never held it,
    # one step behind (its time limit and the reset noise after it included); the others in step.
    cores = [bm.make_vec("HalfCheetahDir", 4, num_threads=threads, seed=0, max_episode_steps=3)._core
             for _ in range(2)]
    for c in cores:
        c.reset(0)
    steps = np.random.default_rng(1).uniform(-1, 1, (9, 4, 6))
    expected = [cores[0].step(a) for a in steps]
    got = [cores[1].step(steps[0], hold_mask(4, 1))]
    got += [cores[1].step(np.where(hold_mask(4, 1)[:, None], steps[t - 1], steps[t])) for t in range(1, 9)]
    for t in range(1, 9):
        for k in range(8):
            np.testing.assert_array_equal(got[t][k][[0, 2, 3]], expected[t][k][[0, 2, 3]], err_msg=f"{t}, {k}")
            np.testing.assert_array_equal(got[t][k][1], expected[t - 1][k][1], err_msg=f"{t}, {k}")
    assert [bool(e[3][1]) for e in expected] == [False, False, True] * 3  # truncations in the window


def test_hold_none_or_all_false_is_the_plain_step():
    cores = [bm.make_vec("AntDir", 5, num_threads=2, seed=1, max_episode_steps=4)._core for _ in range(3)]
    for core in cores:
        core.reset(1)
    for action in np.random.default_rng(0).uniform(-1, 1, (9, 5, 8)):
        plain, none = cores[0].step(action), cores[1].step(action, None)
        for a, b, c in zip(plain, none, cores[2].step(action, np.zeros(5, bool))):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, c)


def test_hold_of_the_wrong_shape_or_dtype_names_hold():
    core = bm.make_vec("HalfCheetahDir", 3)._core
    core.reset(0)
    actions = np.zeros((3, 6))
    for hold, came in ((np.zeros(2, bool), r"got \(2,\)"), (np.zeros((3, 1), bool), r"got \(3, 1\)"),
                       (np.array(True), r"got \(\)")):
        with pytest.raises(ValueError, match=r"^hold: expected shape \(3,\), " + came + "$"):
            core.step(actions, hold)
    for hold, dtype in ((np.zeros(3, np.int64), "int64"), (np.zeros(3, np.uint8), "uint8"), ([0, 1, 0], "int64"),
                        (np.zeros(3), "float64"), ("abc", "<U3"), ([None] * 3, "object")):
        expected = rf"^hold: expected None or a bool array of shape \(3,\), got dtype {dtype}$"
        with pytest.raises(ValueError, match=expected):
            core.step(actions, hold)
    core.step(actions, [False, True, False])  # a list of bools is a bool array
    core.step(actions, np.zeros(6, bool)[::2])  # so is a strided view


def test_a_held_envs_action_may_be_anything_but_the_others_must_be_finite():
    core = bm.make_vec("HalfCheetahDir", 3, num_threads=2)._core
    core.reset(0)
    actions = np.zeros((3, 6))
    actions[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"^actions: expected finite values, got nan in row 1 \(column 2\)$"):
        core.step(actions)
    with pytest.raises(ValueError, match=r"^actions: expected finite values, got nan in row 1 \(column 2\)$"):
        core.step(actions, hold_mask(3, 0))
    core.step(actions, hold_mask(3, 1))
    wide = np.zeros((3, 6), np.longdouble)
    wide[2, 0] = np.longdouble(10) ** 4000  # beyond float64's range: an error unless held
    with pytest.raises(ValueError, match=r"^actions: expected values within float64's range, got .* in row 2"):
        core.step(wide, hold_mask(3, 1))
    core.step(wide, hold_mask(3, 2))
    with pytest.raises(TypeError, match=r"^actions: expected a floating-point array, got dtype int64$"):
        core.step(np.zeros((3, 6), np.int64), hold_mask(3, 0, 1, 2))  # shape and dtype are still checked
    with pytest.raises(ValueError, match=r"^actions: expected shape \(3, 6\), got \(3, 5\)$"):
        core.step(np.zeros((3, 5)), hold_mask(3, 0, 1, 2))


def test_next_step_ignores_the_autoreset_steps_action_even_nan():
    """Gymnasium ignores the action of an env in its autoreset step: NaN there is accepted."""
    envs = [bm.make_vec("Navigation2D", 2, num_threads=2, max_episode_steps=50, autoreset_mode=NEXT) for _ in range(2)]
    for env in envs:
        env.set_tasks([{"goal": [0.1, 0.0]}, {"goal": [3.0, 0.0]}])
        env.reset(seed=0)
        assert env.step(np.array([[0.1, 0.0], [0.1, 0.0]]))[2].tolist() == [True, False]
    nan = np.array([[np.nan, np.nan], [0.1, 0.0]])
    zero = np.array([[0.0, 0.0], [0.1, 0.0]])
    for a, b in zip(step_outputs(envs[0], nan), step_outputs(envs[1], zero)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"^actions: expected finite values, got nan in row 0 \(column 0\)$"):
        envs[0].step(nan)  # env 0 is stepped again: its action counts


# --- 4. reset(seed=list) ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", [SAME, NEXT])
def test_reset_with_a_seed_list(mode):
    env = bm.make_vec("HalfCheetahDir", 3, autoreset_mode=mode)
    obs, info = env.reset(seed=[4, 8, 15])
    again, _ = env.reset(seed=np.array([4, 8, 15], np.uint64))
    np.testing.assert_array_equal(obs, again)
    assert info == {}
    # Env i starts as the single env reset with seed[i] (stream 0 of seed[i]).
    for i, seed in enumerate([4, 8, 15]):
        single, _ = gym.make(env_id("HalfCheetahDir")).reset(seed=seed)
        np.testing.assert_array_equal(obs[i], single)
    np.testing.assert_array_equal(env.reset(seed=[4, 4, 4])[0][0], obs[0])
    env.reset(seed=[None, None, None])  # SyncVectorEnv's spelling of no seed
    with pytest.raises(ValueError, match=r"^seed: expected a list of num_envs=3 integers \(one per env\), got 2$"):
        env.reset(seed=[1, 2])
    with pytest.raises(ValueError, match=r"^seed\[1\]: expected an integer in \[0, 2\*\*64\), got -1$"):
        env.reset(seed=[1, -1, 2])
    with pytest.raises(ValueError, match=r"^seed\[2\]: expected an integer in \[0, 2\*\*64\), got None$"):
        env.reset(seed=[1, 2, None])
    with pytest.raises(ValueError, match=r"^seed: expected None, an integer in \[0, 2\*\*64\) or a list of 3"):
        env.reset(seed="123")


def test_int_seed_keeps_the_samplers_streams():
    env = bm.make_vec("HalfCheetahDir", 3)
    by_int, _ = env.reset(seed=4)
    np.testing.assert_array_equal(by_int, env.reset_streams([4, 4, 4], [0, 1, 2]))


# --- 4. Gymnasium's vector wrappers ----------------------------------------------------------


def test_vector_wrappers_over_next_step():
    env = RecordEpisodeStatistics(DtypeObservation(NormalizeObservation(
        bm.make_vec("HalfCheetahDir", 4, max_episode_steps=5, autoreset_mode=NEXT)), np.float32))
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (4, 17)
    returns, episodes = np.zeros(4), []
    for t in range(12):
        obs, reward, terminated, truncated, info = env.step(np.full((4, 6), 0.3, np.float32))
        assert obs.dtype == np.float32 and np.isfinite(obs).all()
        returns += reward
        if "episode" in info:
            np.testing.assert_allclose(info["episode"]["r"][info["_episode"]], returns[info["_episode"]])
            assert (info["episode"]["l"][info["_episode"]] == 5).all()
            episodes.append(t)
            returns[info["_episode"]] = 0.0
    assert episodes == [4, 10]  # steps 5 and 11; step 6 is the autoreset step


@pytest.mark.parametrize("wrapper", [NormalizeObservation, lambda env: DtypeObservation(env, np.float32)])
def test_observation_wrappers_need_next_step(wrapper):
    """Gymnasium's observation wrappers refuse SAME_STEP: NEXT_STEP is what they need, per instance."""
    with pytest.raises(ValueError, match="Expected autoreset_mode to be NEXT_STEP or DISABLED, got AutoresetMode.SAME_STEP"):
        wrapper(bm.make_vec("HalfCheetahDir", 2))
    wrapper(bm.make_vec("HalfCheetahDir", 2, autoreset_mode=NEXT))
    wrapper(gym.make_vec(env_id("HalfCheetahDir"), num_envs=2))


# --- 2. rendering -----------------------------------------------------------------------------


def check_env_quietly(env: gym.Env) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
    others = [str(w.message) for w in caught if "infinity" not in str(w.message)]
    assert others == [], others  # only the unbounded observation box (as Gymnasium's MuJoCo envs)


def test_check_env_navigation_rgb_array():
    env = gym.make(env_id("Navigation2D"), render_mode="rgb_array", width=64, height=48)
    check_env_quietly(env.unwrapped)
    assert env.metadata["render_fps"] == 10 and env.metadata["render_modes"][-1] == "rgb_array"


@pytest.mark.parametrize("family", ["HalfCheetahDir", "AntGoal", "SwimmerVel"])
def test_check_env_mujoco(family):
    check_env_quietly(gym.make(env_id(family)).unwrapped)  # no render mode: runs anywhere
    if no_gl():
        pytest.skip(f"no headless OpenGL here: {no_gl()}")
    check_env_quietly(gym.make(env_id(family), render_mode="rgb_array", width=64, height=48).unwrapped)


@pytest.mark.parametrize("family, fps", [("HalfCheetahDir", 20), ("AntDir", 20), ("SwimmerDir", 25), ("Navigation2D", 10)])
def test_render_fps_is_real_time(family, fps):
    assert gym.make(env_id(family), render_mode="rgb_array").metadata["render_fps"] == fps


def test_navigation_frames_are_drawn_without_opengl():
    env = gym.make(env_id("Navigation2D"), task={"goal": [0.3, -0.2]}, render_mode="rgb_array", width=96, height=80)
    obs, _ = env.reset(seed=0)
    first = env.render()
    assert first.shape == (80, 96, 3) and first.dtype == np.uint8
    red = (first[..., 0] > 180) & (first[..., 1] < 90) & (first[..., 2] < 90)
    rows, cols = np.nonzero(red)
    assert red.any() and cols.mean() > 48 and rows.mean() > 40  # the goal: right of and below the centre
    frames = [first]
    terminated = False
    while not terminated:
        obs, _, terminated, truncated, _ = env.step(np.clip(np.array([0.3, -0.2]) - obs, -0.1, 0.1).astype(np.float32))
        frames.append(env.render())
    assert not np.array_equal(frames[0], frames[-1])
    # The last frame shows the robot at the goal (blue disc over it), not back at the start.
    blue = (frames[-1][..., 2] > 150) & (frames[-1][..., 0] < 80)
    rows, cols = np.nonzero(blue)
    assert cols.max() > 48 + 10 and rows.max() > 40 + 5


def test_mujoco_frames():
    if no_gl():
        pytest.skip(f"no headless OpenGL here: {no_gl()}")
    env = gym.make(env_id("AntDir"), render_mode="rgb_array", width=64, height=48, max_episode_steps=3)
    env.reset(seed=0)
    first = env.render()
    assert first.shape == (48, 64, 3) and first.dtype == np.uint8 and first.std() > 5
    for _ in range(3):
        *_, truncated, _ = env.step(np.ones(8, np.float32))
    assert truncated and not np.array_equal(env.render(), first)
    env.close()
    env.close()


def test_render_without_opengl_names_what_to_install(monkeypatch):
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(rendering, "probe_gl_backend", lambda backend: f"lib{backend}.so: cannot open shared object")
    rendering.gl_backend.cache_clear()
    try:
        env = gym.make(env_id("HalfCheetahDir"), render_mode="rgb_array")
        env.reset(seed=0)
        with pytest.raises(GLUnavailableError, match=r"apt-get install libegl1 .*apt-get install libosmesa6"):
            env.render()
        env.close()
    finally:
        rendering.gl_backend.cache_clear()


def test_render_mode_errors(monkeypatch):
    with pytest.raises(ValueError, match=r"render_mode: expected None or one of \['human', 'rgb_array'\], got 'rgb'"):
        gym.make(env_id("Navigation2D"), render_mode="rgb")
    with pytest.raises(ValueError, match=r"width: expected an integer in \[1, 4096\] \(pixels\), got 0"):
        gym.make(env_id("Navigation2D"), render_mode="rgb_array", width=0)
    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(RuntimeError, match=r"render_mode: 'human' needs a display.*use render_mode='rgb_array'"):
        gym.make(env_id("Navigation2D"), render_mode="human")
    assert gym.make(env_id("Navigation2D")).metadata["render_modes"] == ["rgb_array"]  # no display: no "human"


def test_record_video_or_its_frames(tmp_path):
    env = gym.make(env_id("Navigation2D"), task={"goal": [0.3, 0.2]}, render_mode="rgb_array", width=64, height=64)
    try:
        import moviepy  # noqa: F401
    except ImportError:  # RecordVideo needs moviepy: the frames it would record are checked instead
        env.reset(seed=0)
        frames = [env.render()] + [env.step(np.array([0.1, 0.1], np.float32)) and env.render() for _ in range(3)]
        assert all(frame.shape == (64, 64, 3) and frame.dtype == np.uint8 for frame in frames)
        assert len({frame.tobytes() for frame in frames}) == 4
        return
    env = gym.wrappers.RecordVideo(env, str(tmp_path), episode_trigger=lambda episode: True, disable_logger=True)
    env.reset(seed=0)
    terminated = False
    while not terminated:
        *_, terminated, _, _ = env.step(np.array([0.1, 0.1], np.float32))
    env.close()
    assert list(tmp_path.glob("*.mp4"))


def test_frame_of_an_episode_end_shows_its_last_state():
    """The core resets a robot in the step that ends its episode; the frame still shows the end."""
    if no_gl():
        pytest.skip(f"no headless OpenGL here: {no_gl()}")
    creator = gym.envs.registration.load_env_creator(gym.spec(env_id("HalfCheetahDir")).entry_point)
    ending = creator("HalfCheetahDir", max_episode_steps=4, render_mode="rgb_array", width=64, height=48)
    going_on = gym.make(env_id("HalfCheetahDir"), render_mode="rgb_array", width=64, height=48)
    ending.reset(seed=3)
    going_on.reset(seed=3)
    for action in np.random.default_rng(0).uniform(-1, 1, (4, 6)).astype(np.float32):
        obs, _, _, truncated, _ = ending.step(action)
        expected, *_ = going_on.step(action)
    assert truncated
    np.testing.assert_array_equal(obs, expected)
    assert np.abs(ending.render().astype(int) - going_on.render().astype(int)).mean() < 0.5
    ending.reset()
    assert np.abs(ending.render().astype(int) - going_on.render().astype(int)).mean() > 0.5  # the new episode
