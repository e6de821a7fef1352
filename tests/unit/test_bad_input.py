"""Bad input never reaches C++ unchecked: a ValueError or TypeError that names the argument, what
was expected and what came; never a crash."""

from __future__ import annotations

import re

import numpy as np
import pytest

import bmaml_robot as bm
from bmaml_robot import _core


@pytest.fixture(scope="module")
def cheetah() -> bm.BatchedRobotEnv:
    env = bm.make_vec("HalfCheetahDir", 3, seed=0)
    env.reset(seed=0)
    return env


# --- actions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "got"), [((3, 5), r"\(3, 5\)"), ((2, 6), r"\(2, 6\)"), ((6,), r"\(6,\)"), ((3, 6, 1), r"\(3, 6, 1\)"), ((), r"\(\)")]
)
def test_actions_of_the_wrong_shape(cheetah, shape, got):
    with pytest.raises(ValueError, match=rf"actions: expected shape \(3, 6\), got {got}"):
        cheetah.step(np.zeros(shape))


@pytest.mark.parametrize(
    ("actions", "dtype"),
    [
        (np.zeros((3, 6), np.int64), "int64"),
        (np.zeros((3, 6), np.int32), "int32"),
        (np.zeros((3, 6), bool), "bool"),
        (np.zeros((3, 6), np.complex128), "complex128"),
        (np.zeros((3, 6), object), "object"),
        (np.full((3, 6), "0.5"), "<U3"),
        ([[0] * 6] * 3, "int64"),
        (None, "object"),
        ("left", "<U4"),
    ],
)
def test_actions_of_the_wrong_dtype(cheetah, actions, dtype):
    with pytest.raises(TypeError, match=rf"actions: expected a floating-point array, got dtype {re.escape(dtype)}"):
        cheetah.step(actions)


def test_actions_that_are_not_arrays(cheetah):
    with pytest.raises(TypeError, match=r"actions: expected an array, got <class 'list'>"):
        cheetah.step([[0.0] * 6, [0.0] * 5, [0.0]])  # ragged


@pytest.mark.parametrize(("bad", "shown"), [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_non_finite_actions(cheetah, bad, shown):
    actions = np.zeros((3, 6), np.float32)
    actions[1, 4] = bad
    with pytest.raises(ValueError, match=rf"actions: expected finite values, got {shown} in row 1 \(column 4\)"):
        cheetah.step(actions)


def test_valid_actions_of_other_float_dtypes_and_layouts_are_accepted(cheetah):
    for actions in (np.zeros((3, 6), np.float16), np.zeros((6, 3), np.float32).T, [[0.5] * 6] * 3, np.zeros((3, 12))[:, ::2]):
        obs, *_ = cheetah.step(actions)
        assert obs.shape == (3, 17)


# --- families and tasks ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["HalfCheetah", "halfcheetahdir", "", "Ant-v5"])
def test_unknown_family_lists_the_valid_ones(name):
    with pytest.raises(ValueError, match=rf"family: expected one of .*, got {re.escape(repr(name))}") as error:
        bm.make_vec(name, 2)
    for valid in bm.FAMILIES:
        assert repr(valid) in str(error.value)


@pytest.mark.parametrize("name", [None, 3, ["AntDir"], b"AntDir"])
def test_family_that_is_not_a_name(name):
    with pytest.raises(TypeError, match=r"family: expected a family name, one of \[.*'AntDir'.*\], got "):
        bm.make_vec(name, 2)


@pytest.mark.parametrize(
    ("family", "tasks", "error", "message"),
    [
        ("HalfCheetahDir", [{"direction": 1.0}, {}, {"direction": 1.0}], ValueError,
         r"tasks\[1\]: HalfCheetahDir tasks have exactly the keys \['direction'\]; missing \['direction'\], unknown \[\]"),
        ("HalfCheetahDir", [{"direction": 1.0, "speed": 2.0}] * 3, ValueError,
         r"tasks\[0\]: .*missing \[\], unknown \['speed'\]"),
        ("HalfCheetahVel", [{"goal_velocity": 1.0}] * 3, ValueError,
         r"tasks\[0\]: HalfCheetahVel tasks have exactly the keys \['velocity'\]; missing \['velocity'\], unknown \['goal_velocity'\]"),
        ("HalfCheetahDir", [{"direction": "left"}] * 3, TypeError, r"tasks\[0\]\['direction'\]: expected a number, got 'left'"),
        ("HalfCheetahDir", [{"direction": True}] * 3, TypeError, r"tasks\[0\]\['direction'\]: expected a number, got True"),
        ("HalfCheetahDir", [{"direction": [1.0]}] * 3, TypeError, r"tasks\[0\]\['direction'\]: expected a number, got \[1.0\]"),
        ("HalfCheetahVel", [{"velocity": float("nan")}] * 3, ValueError, r"tasks\[0\]\['velocity'\]: expected a finite number, got nan"),
        ("AntGoal", [{"goal": [1.0, 2.0, 3.0]}] * 3, ValueError, r"tasks\[0\]\['goal'\]: expected two finite numbers \[x, y\], got \[1.0, 2.0, 3.0\]"),
        ("AntGoal", [{"goal": [1.0, np.inf]}] * 3, ValueError, r"tasks\[0\]\['goal'\]: expected two finite numbers \[x, y\], got \[1.0, inf\]"),
        ("AntGoal", [{"goal": ["1", "2"]}] * 3, TypeError, r"tasks\[0\]\['goal'\]: expected two finite numbers \[x, y\], got \['1', '2'\]"),
        ("AntGoal", [{"goal": "12"}] * 3, TypeError, r"tasks\[0\]\['goal'\]: expected two finite numbers \[x, y\], got '12'"),
        ("Navigation2D", [{"goal": None}] * 3, TypeError, r"tasks\[0\]\['goal'\]: expected two finite numbers \[x, y\], got None"),
        ("Navigation2D", [{"goal": [[0.1], [0.2, 0.3]]}] * 3, TypeError, r"tasks\[0\]\['goal'\]: expected two finite numbers"),
        ("AntDir", [{"direction": 1.0}] * 2, ValueError, r"tasks: expected one task per env \(3\), got 2"),
        ("AntDir", [{"direction": 1.0}] * 4, ValueError, r"tasks: expected one task per env \(3\), got 4"),
        ("AntDir", {"direction": 1.0}, TypeError, r"tasks: expected a list of 3 task dicts, got dict"),
        ("AntDir", np.ones((3, 2)), TypeError, r"tasks: expected a list of 3 task dicts, got ndarray"),
        ("AntDir", [1.0, 1.0, 1.0], TypeError, r"tasks\[0\]: expected a dict with keys \['direction'\], got float"),
        ("AntDir", "abc", TypeError, r"tasks\[0\]: expected a dict with keys \['direction'\], got str"),
    ],
)
def test_bad_tasks(family, tasks, error, message):
    env = bm.make_vec(family, 3)
    before = [dict(t) for t in env.tasks]
    with pytest.raises(error, match=message):
        env.set_tasks(tasks)
    assert env.tasks == before  # nothing was half-applied


@pytest.mark.parametrize(
    ("family", "task", "error", "message"),
    [
        ("HopperParams", {"body_mass": {"torsoo": 1.0}}, ValueError,
         r"tasks\[1\]\['body_mass'\]: unknown name 'torsoo' \(Hopper's: torso, thigh, leg, foot\)"),
        ("HopperParams", {"body_mass": {"thigh": -1.0}}, ValueError,
         r"tasks\[1\]\['body_mass'\]\['thigh'\]: expected a scale > 0 and <= 1000, got -1.0"),
        ("HopperParams", {"body_mass": {"thigh": 0}}, ValueError, r"\['thigh'\]: expected a scale > 0 and <= 1000, got 0"),
        ("HopperParams", {"dof_damping": {"thigh_joint": -0.5}}, ValueError,
         r"\['dof_damping'\]\['thigh_joint'\]: expected a scale >= 0 and <= 1000, got -0.5"),
        ("HopperParams", {"body_mass": {"thigh": float("nan")}}, ValueError, r"\['thigh'\]: expected a finite number, got nan"),
        ("HopperParams", {"body_mass": {"thigh": 1e4}}, ValueError, r"\['thigh'\]: expected a scale > 0 and <= 1000, got 10000.0"),
        ("HopperParams", {"body_mass": {"thigh": True}}, TypeError, r"\['thigh'\]: expected a number, got bool True"),
        ("HopperParams", {"body_mass": {"thigh": "2"}}, TypeError, r"\['thigh'\]: expected a number, got str '2'"),
        ("HopperParams", {"body_mass": {"thigh": [1.0, 2.0, 3.0]}}, TypeError, r"\['thigh'\]: expected a number, got list"),
        ("HopperParams", {"body_inertia": {"thigh": [1.0, 2.0]}}, ValueError,
         r"\['body_inertia'\]\['thigh'\]: expected one scale or 3 \(one per axis\), got 2"),
        ("HopperParams", {"body_inertia": {"thigh": [1.0, -2.0, 1.0]}}, ValueError, r"\['thigh'\]\[1\]: expected a scale > 0"),
        ("HopperParams", {"body_mass": 2.0}, TypeError,
         r"tasks\[1\]\['body_mass'\]: expected a dict of Hopper element names to scales, got float"),
        ("HopperParams", {"actuator_gear": {"thigh_joint": 0.0}}, ValueError,
         r"tasks\[1\]: HopperParams tasks have keys among \['body_mass', 'body_inertia', 'dof_damping', 'geom_friction'\]; "
         r"unknown \['actuator_gear'\]"),
        ("SwimmerFluid", {"density": -1.0}, ValueError, r"tasks\[1\]\['density'\]: expected a value in \[0, 1e\+06\] kg/m\^3, got -1.0"),
        ("SwimmerFluid", {"viscosity": np.inf}, ValueError, r"tasks\[1\]\['viscosity'\]: expected a finite number, got inf"),
        ("SwimmerFluid", {"viscosity": {"a": 1}}, TypeError, r"tasks\[1\]\['viscosity'\]: expected a number, got dict"),
        ("HalfCheetahCrippled", {"actuator_gear": {"knee": 0.0}}, ValueError,
         r"unknown name 'knee' \(HalfCheetah's: bthigh, bshin, bfoot, fthigh, fshin, ffoot\)"),
        ("AntCrippled", {"actuator_gear": {"leg 1": 0.0}}, ValueError, r"unknown name 'leg 1' \(Ant's: hip_4, ankle_4, hip_1"),
    ],
)
def test_bad_physics_tasks(family, task, error, message):
    """Errors name the task, the field and the element; nothing is half-applied."""
    env = bm.make_vec(family, 3)
    before = [dict(t) for t in env.tasks]
    with pytest.raises(error, match=message):
        env.set_tasks([{}, task, {}])
    assert env.tasks == before


def test_core_checks_physics_columns_and_layouts():
    """The core's own checks (defence in depth): the width, each column's bound by its label,
    unknown or repeated fields, and physics on a robot without any."""
    path = bm.envs.assets.asset_path("Hopper")
    core = _core.VecEnvCore("Hopper", "direction", path, 2, 1, 10, 0, physics=["body_mass", "dof_damping"])
    assert core.task_width == 2 + 4 + 6
    with pytest.raises(ValueError, match=r"tasks: expected shape \(2, 12\), got \(2, 2\)"):
        core.set_tasks(np.zeros((2, 2)))
    row = np.concatenate([[1.0, 0.0], core.physics_defaults])
    tasks = np.stack([row, row])
    tasks[1, 3] = 0.0
    with pytest.raises(ValueError, match=r"tasks: column 3 \(body_mass\[thigh\]\) expected > 0, got 0 in row 1"):
        core.set_tasks(tasks)
    tasks[1, 3], tasks[0, 8] = 1.0, -0.5
    with pytest.raises(ValueError, match=r"tasks: column 8 \(dof_damping\[rooty\]\) expected >= 0, got -0.5 in row 0"):
        core.set_tasks(tasks)
    with pytest.raises(ValueError, match=r"physics: expected field names among body_mass, .*viscosity; got 'mass'"):
        _core.VecEnvCore("Hopper", "direction", path, 1, 1, 10, 0, physics=["mass"])
    with pytest.raises(ValueError, match=r"physics: field 'density' is named twice"):
        _core.VecEnvCore("Hopper", "direction", path, 1, 1, 10, 0, physics=["density", "density"])
    with pytest.raises(ValueError, match=r"physics: Navigation2D has no physics fields"):
        _core.VecEnvCore("Navigation2D", "navigation", "", 1, 1, 10, 0, physics=["density"])




def test_sample_tasks_arguments():
    env = bm.make_vec("AntVel", 1)
    for num_tasks in (0, -3, 2.0, True, "4"):
        with pytest.raises(ValueError, match=rf"num_tasks: expected an integer >= 1, got {re.escape(repr(num_tasks))}"):
            env.sample_tasks(num_tasks, np.random.default_rng(0))
    for rng in (0, None, np.random.RandomState(0)):
        with pytest.raises(TypeError, match=r"rng: expected a numpy.random.Generator, got "):
            env.sample_tasks(2, rng)


# --- construction and reset ------------------------------------------------------------------


@pytest.mark.parametrize("argument", ["num_envs", "num_threads", "max_episode_steps"])
@pytest.mark.parametrize("value", [0, -1, 2.0, "4", True, None, 2**31, 2**70])
def test_counts_must_be_positive_integers(argument, value):
    kwargs = {"num_envs": 2, "num_threads": 1, "max_episode_steps": 10, argument: value}
    num_envs = kwargs.pop("num_envs")
    bound = r"\[1, 256\] \(at most 256 threads, .*\)" if argument == "num_threads" else r"\[1, 2\*\*30\]"
    with pytest.raises(ValueError, match=rf"{argument}: expected an integer in {bound}, got {re.escape(repr(value))}"):
        bm.make_vec("SwimmerDir", num_envs, **kwargs)


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, "0", True, None, np.float64(3.0)])
def test_bad_seeds(cheetah, seed):
    pattern = rf"seed: expected an integer in \[0, 2\*\*64\), got {re.escape(repr(seed))}"
    with pytest.raises(ValueError, match=pattern):
        bm.make_vec("SwimmerDir", 1, seed=seed)
    if seed is not None:  # None is the unseeded reset; reset also takes a list of seeds, one per env
        reset_pattern = (r"seed: expected (None, )?an integer in \[0, 2\*\*64\)( or a list of \d+ such integers "
                         rf"\(one per env\))?, got {re.escape(repr(seed))}")
        with pytest.raises(ValueError, match=reset_pattern):
            cheetah.reset(seed=seed)


def test_seeds_of_numpy_integer_types_are_accepted():
    a, _ = bm.make_vec("SwimmerDir", 2).reset(seed=np.uint64(2**64 - 1))
    b, _ = bm.make_vec("SwimmerDir", 2).reset(seed=2**64 - 1)
    np.testing.assert_array_equal(a, b)


def test_reset_options_are_refused(cheetah):
    with pytest.raises(ValueError, match=r"options: this env takes no reset options, got \['noise'\]"):
        cheetah.reset(options={"noise": 0.0})


def test_reset_streams_arguments(cheetah):
    with pytest.raises(ValueError, match=r"seeds: expected 3 integers \(shape \[3\]\), got shape \[2\]"):
        cheetah.reset_streams([1, 2], [0, 1, 2])
    with pytest.raises(ValueError, match=r"streams: expected 3 integers \(shape \[3\]\), got shape \[3, 1\]"):
        cheetah.reset_streams([1, 2, 3], np.zeros((3, 1), np.int64))
    with pytest.raises(ValueError, match=r"seeds: expected integers in \[0, 2\*\*64\), got dtype float64"):
        cheetah.reset_streams(np.array([1.0, 2.0, 3.0]), [0, 1, 2])
    with pytest.raises(ValueError, match=r"streams: expected integers in \[0, 2\*\*64\), got dtype int64 with negative"):
        cheetah.reset_streams([1, 2, 3], np.array([0, -1, 2]))
    obs = cheetah.reset_streams(np.array([2**64 - 1] * 3, np.uint64), [0, 1, 2])
    assert obs.shape == (3, cheetah.obs_dim) and np.isfinite(obs).all()


# --- set_state -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("qpos_shape", "qvel_shape", "message"),
    [
        ((3, 8), (3, 9), r"qpos: expected shape \(3, 9\), got \(3, 8\)"),
        ((9,), (3, 9), r"qpos: expected shape \(3, 9\), got \(9,\)"),
        ((3, 9), (3, 10), r"qvel: expected shape \(3, 9\), got \(3, 10\)"),
        ((3, 9), (2, 9), r"qvel: expected shape \(3, 9\), got \(2, 9\)"),
    ],
)
def test_set_state_shapes(cheetah, qpos_shape, qvel_shape, message):
    with pytest.raises(ValueError, match=message):
        cheetah.set_state(np.zeros(qpos_shape), np.zeros(qvel_shape))


def test_set_state_dtypes_and_values(cheetah):
    with pytest.raises(TypeError, match=r"qpos: expected a floating-point array, got dtype int64"):
        cheetah.set_state(np.zeros((3, 9), np.int64), np.zeros((3, 9)))
    with pytest.raises(TypeError, match=r"qvel: expected a floating-point array, got dtype complex128"):
        cheetah.set_state(np.zeros((3, 9)), np.zeros((3, 9), complex))
    qpos = np.zeros((3, 9))
    qpos[2, 0] = np.inf
    with pytest.raises(ValueError, match=r"qpos: expected finite values, got inf in row 2 \(column 0\)"):
        cheetah.set_state(qpos, np.zeros((3, 9)))


def test_navigation_set_state_takes_an_empty_qvel():
    env = bm.make_vec("Navigation2D", 2)
    with pytest.raises(ValueError, match=r"qvel: expected shape \(2, 0\), got \(2, 2\)"):
        env.set_state(np.zeros((2, 2)), np.zeros((2, 2)))
    np.testing.assert_array_equal(env.set_state(np.ones((2, 2)), np.zeros((2, 0))), np.ones((2, 2)))


# --- the private core checks for itself ------------------------------------------------------


def test_core_refuses_bad_robots_objectives_and_counts():
    with pytest.raises(ValueError, match=r"robot: expected one of HalfCheetah, Ant, Swimmer, Hopper, Walker2d, Navigation2D; got 'Humanoid'"):
        _core.VecEnvCore("Humanoid", "direction", "", 1, 1, 10, 0)
    with pytest.raises(ValueError, match=r"objective: expected one of direction, velocity, goal, navigation; got 'speed'"):
        _core.VecEnvCore("Navigation2D", "speed", "", 1, 1, 10, 0)
    with pytest.raises(ValueError, match=r"xml_path: could not load MuJoCo model '/nonexistent.xml'"):
        _core.VecEnvCore("Ant", "direction", "/nonexistent.xml", 1, 1, 10, 0)
    with pytest.raises(ValueError, match=r"num_envs: expected an integer in \[1, 2\*\*30\], got 0"):
        _core.VecEnvCore("Navigation2D", "navigation", "", 0, 1, 10, 0)
    with pytest.raises(ValueError, match=r"num_threads: expected an integer in \[1, 256\] \(.*\), got -2"):
        _core.VecEnvCore("Navigation2D", "navigation", "", 1, -2, 10, 0)


def test_core_refuses_an_asset_of_another_robot():
    from bmaml_robot.envs.assets import asset_path

    with pytest.raises(ValueError, match=r"xml_path: '.*swimmer.xml' is not a Ant model: expected nq=15, nv=14, nu=8, got nq=5, nv=5, nu=2"):
        _core.VecEnvCore("Ant", "direction", asset_path("Swimmer"), 1, 1, 10, 0)


def test_core_refuses_non_finite_and_misshapen_task_arrays():
    core = _core.VecEnvCore("Navigation2D", "navigation", "", 2, 1, 10, 0)
    with pytest.raises(ValueError, match=r"tasks: expected shape \(2, 2\), got \(2, 3\)"):
        core.set_tasks(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"tasks: expected finite values, got nan in row 1 \(column 0\)"):
        core.set_tasks(np.array([[0.0, 0.0], [np.nan, 0.0]]))
    with pytest.raises(IndexError, match=r"env: expected an index in \[0, 2\), got 2"):
        core.warning(2)


# --- GAE -------------------------------------------------------------------------------------


def gae_args(T=4, N=3, dtype=np.float64):
    return dict(
        rewards=np.zeros((T, N), dtype),
        values=np.zeros((T, N), dtype),
        terminated=np.zeros((T, N), bool),
        truncated=np.zeros((T, N), bool),
        last_values=np.zeros(N, dtype),
        gamma=0.99,
        lam=0.95,
    )


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"rewards": np.zeros(4)}, ValueError, r"rewards: expected a 2-d array \[T, N\], got shape \(4,\)"),
        ({"rewards": np.zeros((4, 3, 1))}, ValueError, r"rewards: expected a 2-d array \[T, N\], got shape \(4, 3, 1\)"),
        ({"rewards": np.zeros((0, 3))}, ValueError, r"rewards: expected T >= 1 and N >= 1, got shape \(0, 3\)"),
        ({"rewards": np.zeros((4, 3), np.int64)}, TypeError, r"rewards: expected dtype float32 or float64, got int64"),
        ({"rewards": np.zeros((4, 3), np.float16)}, TypeError, r"rewards: expected dtype float32 or float64, got float16"),
        ({"rewards": np.zeros((4, 3), complex)}, TypeError, r"rewards: expected dtype float32 or float64, got complex128"),
        ({"rewards": np.zeros((4, 3), object)}, TypeError, r"rewards: expected dtype float32 or float64, got object"),
        ({"rewards": np.full((4, 3), "a")}, TypeError, r"rewards: expected dtype float32 or float64, got <U1"),
        ({"values": np.zeros((3, 4))}, ValueError, r"values: expected shape \(4, 3\), got \(3, 4\)"),
        ({"values": np.zeros((4, 3), np.float32)}, TypeError, r"values: expected dtype float64 \(that of rewards\), got float32"),
        ({"last_values": np.zeros(4)}, ValueError, r"last_values: expected shape \(3,\), got \(4,\)"),
        ({"last_values": np.zeros((1, 3))}, ValueError, r"last_values: expected shape \(3,\), got \(1, 3\)"),
        ({"last_values": np.zeros(3, np.float32)}, TypeError, r"last_values: expected dtype float64 \(that of rewards\), got float32"),
        ({"terminated": np.zeros((4, 3))}, TypeError, r"terminated: expected a bool array, got dtype float64"),
        ({"terminated": np.zeros((4, 2), bool)}, ValueError, r"terminated: expected shape \(4, 3\), got \(4, 2\)"),
        ({"truncated": np.zeros((4, 3), object)}, TypeError, r"truncated: expected a bool array, got dtype object"),
        ({"truncated": np.zeros((5, 3), bool)}, ValueError, r"truncated: expected shape \(4, 3\), got \(5, 3\)"),
        ({"final_values": np.zeros((4, 3), np.float32)}, TypeError, r"final_values: expected dtype float64 \(that of rewards\), got float32"),
        ({"final_values": np.zeros(3)}, ValueError, r"final_values: expected shape \(4, 3\), got \(3,\)"),
        ({"gamma": 1.5}, ValueError, r"gamma: expected a value in \[0, 1\], got 1.5"),
        ({"gamma": -0.1}, ValueError, r"gamma: expected a value in \[0, 1\], got -0.1"),
        ({"gamma": float("nan")}, ValueError, r"gamma: expected a value in \[0, 1\], got nan"),
        ({"gamma": "0.99"}, TypeError, r"gamma: expected a real number in \[0, 1\], got str '0.99'"),
        ({"gamma": None}, TypeError, r"gamma: expected a real number in \[0, 1\], got NoneType None"),
        ({"lam": 1.01}, ValueError, r"lam: expected a value in \[0, 1\], got 1.01"),
        ({"lam": [0.9]}, TypeError, r"lam: expected a real number in \[0, 1\], got list \[0.9\]"),
        ({"rewards": None}, ValueError, r"rewards: expected a 2-d array \[T, N\], got shape \(\)"),
    ],
)
def test_gae_bad_arguments(change, error, message):
    kwargs = gae_args() | change
    with pytest.raises(error, match=message):
        bm.gae(**kwargs)


def test_gae_truncation_inside_the_batch_needs_final_values():
    kwargs = gae_args()
    kwargs["truncated"][1, 2] = True
    with pytest.raises(ValueError, match=r"final_values: required when an episode is truncated before the last step \(t=1, env 2\)"):
        bm.gae(**kwargs)
    kwargs["truncated"][1, 2] = False
    kwargs["truncated"][3, 2] = True  # at the last step last_values serve
    bm.gae(**kwargs)


def test_gae_float32_end_to_end_and_dtype_mismatch_in_final_values():
    kwargs = gae_args(dtype=np.float32)
    adv, ret = bm.gae(**kwargs, final_values=np.zeros((4, 3), np.float32))
    assert adv.dtype == ret.dtype == np.float32
    with pytest.raises(TypeError, match=r"final_values: expected dtype float32 \(that of rewards\), got float64"):
        bm.gae(**kwargs, final_values=np.zeros((4, 3)))


# --- nothing crashes -------------------------------------------------------------------------

JUNK = [None, 0, -1, 1e300, "x", b"x", [], [[]], {}, object(), np.zeros(0), np.zeros((0, 0)), np.full((3, 6), np.nan),
        np.zeros((3, 6), np.float64)[::-1], np.zeros((10**6,), np.float32), np.zeros((3, 6), ">f8"), np.int64(3)]


def test_junk_arguments_raise_and_never_crash(cheetah):
    for junk in JUNK:
        for call in (
            lambda: cheetah.step(junk),
            lambda: cheetah.set_state(junk, np.zeros((3, 9))),
            lambda: cheetah.set_state(np.zeros((3, 9)), junk),
            lambda: cheetah.set_tasks(junk),
            lambda: bm.gae(junk, junk, junk, junk, junk, 0.9, 0.9),
            lambda: bm.gae(**(gae_args() | {"values": junk})),
        ):
            try:
                call()
            except (TypeError, ValueError):
                pass
    assert np.all(np.isfinite(cheetah.step(np.zeros((3, 6)))[0]))


def test_numbers_beyond_float_range():
    env = bm.make_vec("HalfCheetahVel", 1)
    with pytest.raises(ValueError, match=r"tasks\[0\]\['velocity'\]: expected a finite number, got 1000"):
        env.set_tasks([{"velocity": 10**400}])
    with pytest.raises(TypeError, match=r"tasks\[0\]\['goal'\]: expected two finite numbers"):
        bm.make_vec("AntGoal", 1).set_tasks([{"goal": [10**400, 0]}])
    with pytest.raises(ValueError, match=r"gamma: expected a value in \[0, 1\], got 1000"):
        bm.gae(**(gae_args() | {"gamma": 10**400}))


def test_single_env_task_errors_name_the_task():
    gymnasium = pytest.importorskip("gymnasium")
    with pytest.raises(ValueError, match=r"task: HalfCheetahDir tasks have exactly the keys \['direction'\]; missing \['direction'\], unknown \['velocity'\]"):
        gymnasium.make("bmaml_robot/HalfCheetahDir-v0", task={"velocity": 1.0})
    with pytest.raises(TypeError, match=r"task\['goal'\]: expected two finite numbers \[x, y\], got 'north'"):
        gymnasium.make("bmaml_robot/Navigation2D-v0", task={"goal": "north"})
    with pytest.raises(TypeError, match=r"task: expected a dict with keys \['direction'\], got int"):
        gymnasium.make("bmaml_robot/AntDir-v0", task=1)
