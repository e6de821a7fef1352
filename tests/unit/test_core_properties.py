"""Property tests of the core API: arbitrary arrays (shapes, dtypes, layouts, NaN/inf, huge
values) into step, set_state, set_tasks, reset_streams and bm.gae never crash the interpreter:
each call works (finite outputs where the inputs were valid) or raises a ValueError/TypeError
that names the argument. The default profile runs 40 examples a test; the long campaign:
``pytest --hypothesis-profile=long tests/unit/test_core_properties.py``."""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import event, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import bmaml_robot as bm  # noqa: E402

NUM_ENVS = 3
FLOATS = [np.float16, np.float32, np.float64, np.longdouble, np.dtype(">f8"), np.dtype(">f4"),
          np.dtype(np.longdouble).newbyteorder()]
OTHERS = [np.int8, np.int64, np.uint64, np.dtype(">u8"), np.bool_, np.complex64, np.complex128, np.object_,
          np.dtype("U3"), np.dtype("M8[s]"), np.dtype([("a", "f8")])]


@st.composite
def arrays(draw, shape: tuple[int, ...], dtypes=FLOATS + OTHERS, moderate: float | None = None, other_shapes=True):
    """An array that is often of ``shape`` and of a float dtype, and otherwise anything: another
    shape (0-d included), dtype or layout (Fortran order, reversed, strided, a stride-0 view),
    with NaN, inf and values up to each dtype's limits (beyond float64's for longdouble).
    ``moderate``: float values are finite and within +-moderate, integers in [0, moderate];
    ``other_shapes=False``: always ``shape``."""
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    if not other_shapes or draw(st.booleans()):
        drawn_shape = shape
    else:
        drawn_shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7))
    if dtype.kind == "f":
        width = min(64, 8 * dtype.itemsize)  # longdouble: float64 values, scaled below
        native = np.dtype(np.float64) if dtype.itemsize > 8 else dtype.newbyteorder("=")
        limit = None if moderate is None else min(moderate, float(np.finfo(native).max))
        bounds = {} if limit is None else {"min_value": -limit, "max_value": limit}
        array = draw(hnp.arrays(native, drawn_shape, elements=st.floats(width=width, **bounds))).astype(dtype)
        if dtype.itemsize > 8 and moderate is None and array.size and draw(st.booleans()):
            array = array * np.longdouble(10) ** draw(st.sampled_from([300, 400, 4000]))  # beyond float64
    elif dtype.kind in "iu" and moderate is not None:  # non-negative integers up to moderate
        top = min(int(moderate), int(np.iinfo(dtype).max))
        array = draw(hnp.arrays(dtype, drawn_shape, elements=st.integers(0, top)))
    elif dtype.kind in "iub":
        array = draw(hnp.arrays(dtype, drawn_shape))
    elif dtype.kind == "O":
        array = np.empty(drawn_shape, object)
        array[...] = draw(st.sampled_from([0.5, None, "x", 1]))
    else:
        array = np.zeros(drawn_shape, dtype)
    layout = draw(st.sampled_from(["c", "f", "reversed", "strided", "broadcast"]))
    if layout == "f":
        array = np.asfortranarray(array)
    elif layout == "reversed" and array.ndim:
        array = array[::-1]
    elif layout == "strided" and array.ndim:
        array = np.repeat(array, 2, axis=-1)[..., ::2]
    elif layout == "broadcast" and array.size:
        array = np.broadcast_to(array.flat[0], array.shape)
    return array


def valid_floats(array: np.ndarray, shape: tuple[int, ...]) -> bool:
    """A float array of the shape with finite values (in float64's range): what must work."""
    return (array.dtype.kind == "f" and array.shape == shape
            and bool(np.all(np.isfinite(array.astype(np.longdouble))))
            and bool(np.all(np.abs(array.astype(np.longdouble)) <= np.finfo(np.float64).max)))


def assert_names(error: Exception, *names: str) -> None:
    event(f"refused: {type(error).__name__}")  # --hypothesis-show-statistics: how often each path ran
    assert isinstance(error, (TypeError, ValueError)), repr(error)
    assert str(error).startswith(tuple(f"{name}: " for name in names)) or str(error).startswith(
        tuple(f"{name}[" for name in names)), repr(error)


@pytest.fixture(scope="module")
def cheetah() -> bm.BatchedRobotEnv:
    env = bm.make_vec("HalfCheetahDir", NUM_ENVS, seed=0, max_episode_steps=5)
    env.reset(seed=0)
    return env


def mostly_valid(shape: tuple[int, ...]):
    """Half valid float arrays of the shape (finite, any magnitude), half anything."""
    return st.one_of(arrays(shape, dtypes=FLOATS, moderate=1e308, other_shapes=False), arrays(shape))


@given(actions=mostly_valid((NUM_ENVS, 6)))
def test_step_takes_any_array(cheetah, actions):
    try:
        obs, reward, terminated, truncated, info = cheetah.step(actions)
    except (TypeError, ValueError) as error:
        assert_names(error, "actions")
        assert not valid_floats(actions, (NUM_ENVS, 6)), f"valid actions refused: {error}"
        return
    event("works")
    assert valid_floats(actions, (NUM_ENVS, 6))
    assert obs.shape == (NUM_ENVS, 17) and np.isfinite(obs).all() and np.isfinite(reward).all()
    assert not info["unstable"].any()


@given(qpos=mostly_valid((NUM_ENVS, 9)), qvel=mostly_valid((NUM_ENVS, 9)))
def test_set_state_takes_any_arrays(cheetah, qpos, qvel):
    try:
        obs = cheetah.set_state(qpos, qvel)
    except (TypeError, ValueError) as error:
        assert_names(error, "qpos", "qvel")
        assert not (valid_floats(qpos, (NUM_ENVS, 9)) and valid_floats(qvel, (NUM_ENVS, 9))), f"refused: {error}"
        return
    event("works")
    assert valid_floats(qpos, (NUM_ENVS, 9)) and valid_floats(qvel, (NUM_ENVS, 9))
    assert obs.shape == (NUM_ENVS, 17)
    # Huge finite states are allowed; the step after them ends those envs as unstable, no more.
    obs, reward, *_ = cheetah.step(np.zeros((NUM_ENVS, 6)))
    assert np.isfinite(obs).all() and np.isfinite(reward).all()
    cheetah.reset()


@given(qpos=arrays((NUM_ENVS, 9), dtypes=FLOATS, moderate=3.0, other_shapes=False),
       qvel=arrays((NUM_ENVS, 9), dtypes=FLOATS, moderate=3.0, other_shapes=False))
def test_set_state_of_moderate_states_gives_finite_observations(cheetah, qpos, qvel):
    try:
        obs = cheetah.set_state(qpos, qvel)
    except (TypeError, ValueError) as error:
        assert_names(error, "qpos", "qvel")
        assert qpos.shape != (NUM_ENVS, 9) or qvel.shape != (NUM_ENVS, 9)
        return
    event("works")
    expected = np.concatenate([np.asarray(qpos, np.float64)[:, 1:], np.asarray(qvel, np.float64)], axis=1)
    np.testing.assert_array_equal(obs, expected)
    cheetah.reset()


@given(tasks=mostly_valid((NUM_ENVS, 2)))
def test_core_set_tasks_takes_any_array(cheetah, tasks):
    try:
        cheetah._core.set_tasks(tasks)
    except (TypeError, ValueError) as error:
        assert_names(error, "tasks")
        assert not valid_floats(tasks, (NUM_ENVS, 2)), f"valid tasks refused: {error}"
        return
    event("works")
    assert valid_floats(tasks, (NUM_ENVS, 2))
    obs, *_ = cheetah.step(np.zeros((NUM_ENVS, 6)))
    assert np.isfinite(obs).all()
    cheetah.set_tasks(cheetah.tasks)  # back to the family's tasks


@pytest.fixture(scope="module")
def hopper() -> bm.BatchedRobotEnv:
    """A physics family: task rows [N, 2 + 39] whose physics columns must be >= 0 (masses > 0)."""
    env = bm.make_vec("HopperParams", NUM_ENVS, seed=0, max_episode_steps=5)
    env.reset(seed=0)
    return env


@given(data=st.data())
def test_core_set_tasks_of_a_physics_family_takes_any_array(hopper, data):
    width = hopper._core.task_width
    defaults = np.concatenate([[1.0, 0.0], hopper._core.physics_defaults])
    positive = 2 + np.flatnonzero([label.startswith(("body_mass", "body_inertia")) for label in hopper._core.physics_columns])
    tasks = data.draw(st.one_of(
        arrays((NUM_ENVS, width), dtypes=FLOATS, moderate=1e308, other_shapes=False),
        arrays((NUM_ENVS, width)),
        st.builds(lambda scale: np.tile(defaults, (NUM_ENVS, 1)) * scale,  # plausible rows, some signs flipped
                  hnp.arrays(np.float64, (NUM_ENVS, width), elements=st.sampled_from([1.0, 0.5, 3.0, 0.0, -1.0]))),
    ))
    try:
        hopper._core.set_tasks(tasks)
    except (TypeError, ValueError) as error:
        assert_names(error, "tasks")
        signs_ok = valid_floats(tasks, (NUM_ENVS, width)) and bool(np.all(tasks[:, 2:] >= 0))
        assert not signs_ok or np.any(tasks[:, positive] == 0), f"valid tasks refused: {error}"  # a zero mass
        return
    event("works")
    assert valid_floats(tasks, (NUM_ENVS, width)) and np.all(tasks[:, 2:] >= 0) and np.all(tasks[:, positive] > 0)
    obs, *_ = hopper.step(np.zeros((NUM_ENVS, 3)))  # any physics: a finite step or an instability reset
    assert np.isfinite(obs).all()
    hopper.set_tasks(hopper.tasks)


JUNK_VALUES = st.one_of(st.floats(), st.integers(), st.none(), st.text(max_size=3), st.booleans(),
                        st.lists(st.floats(), max_size=3), st.just(10**400), st.just(np.longdouble(10) ** 400))


@given(tasks=st.one_of(
    st.lists(st.fixed_dictionaries({"direction": st.floats(-1, 1)}), min_size=NUM_ENVS, max_size=NUM_ENVS),
    st.lists(st.dictionaries(st.sampled_from(["direction", "velocity", "goal"]), JUNK_VALUES, max_size=2),
             min_size=0, max_size=4),
    arrays((NUM_ENVS, 1)), JUNK_VALUES))
def test_set_tasks_takes_anything(cheetah, tasks):
    before = [dict(t) for t in cheetah.tasks]
    try:
        cheetah.set_tasks(tasks)
    except (TypeError, ValueError) as error:
        assert_names(error, "tasks")
        assert cheetah.tasks == before
        return
    event("works")
    assert len(cheetah.tasks) == NUM_ENVS and all(-1.0 <= t["direction"] <= 1.0 for t in cheetah.tasks)
    assert np.isfinite(cheetah.step(np.zeros((NUM_ENVS, 6)))[1]).all()


INTEGERS = [np.int8, np.int64, np.uint8, np.uint64, np.dtype(">u8"), np.float64, np.bool_, np.object_]


VALID_SEEDS = st.one_of(st.lists(st.integers(0, 2**64 - 1), min_size=NUM_ENVS, max_size=NUM_ENVS),
                        arrays((NUM_ENVS,), dtypes=[np.uint64, np.int64, np.dtype(">u8"), np.uint8], moderate=2**62,
                               other_shapes=False))


@given(seeds=st.one_of(VALID_SEEDS, arrays((NUM_ENVS,), dtypes=FLOATS + OTHERS + INTEGERS),
                       st.lists(st.integers(-2**70, 2**70), min_size=0, max_size=4)),
       streams=st.one_of(VALID_SEEDS, arrays((NUM_ENVS,), dtypes=INTEGERS)))
def test_reset_streams_takes_anything(cheetah, seeds, streams):
    def valid(value) -> bool:
        array = np.asarray(value) if not isinstance(value, np.ndarray) else value
        return array.shape == (NUM_ENVS,) and array.dtype.kind in "iu" and bool(np.all(array >= 0))

    try:
        obs = cheetah.reset_streams(seeds, streams)
    except (TypeError, ValueError) as error:
        assert_names(error, "seeds", "streams")
        assert not (valid(seeds) and valid(streams)), f"valid seeds/streams refused: {error}"
        return
    event("works")
    assert valid(seeds) and valid(streams)
    assert obs.shape == (NUM_ENVS, 17) and np.isfinite(obs).all()


@given(seeds=arrays((NUM_ENVS,), dtypes=[np.uint64] * 4 + INTEGERS + FLOATS),
       streams=arrays((NUM_ENVS,), dtypes=[np.uint64] * 4 + INTEGERS))
def test_core_reset_streams_takes_only_uint64(cheetah, seeds, streams):
    try:
        obs = cheetah._core.reset_streams(seeds, streams)
    except (TypeError, ValueError) as error:
        assert_names(error, "seeds", "streams")
        return
    event("works")
    assert seeds.dtype == streams.dtype == np.uint64 and seeds.shape == streams.shape == (NUM_ENVS,)
    assert np.isfinite(obs).all()


GAE_FLOATS = [np.float32, np.float64, np.float16, np.longdouble, np.dtype(">f8"), np.int64, np.object_, np.complex128]
FLAGS = [np.bool_, np.int8, np.uint64, np.float64, np.object_]


@st.composite
def gae_calls(draw):
    """bm.gae's arguments: each, by a coin, right or anything."""
    T, N = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    dtype = draw(st.sampled_from([np.float32, np.float64]))

    def arg(shape, dtypes, valid_dtype):
        if draw(st.integers(0, 7)):  # mostly valid, so that many calls reach the core
            return draw(arrays(shape, dtypes=[valid_dtype], moderate=1e3, other_shapes=False))
        return draw(st.one_of(arrays(shape, dtypes=dtypes), JUNK_VALUES))

    kwargs = dict(
        rewards=arg((T, N), GAE_FLOATS, dtype), values=arg((T, N), GAE_FLOATS, dtype),
        terminated=arg((T, N), FLAGS, np.bool_), truncated=arg((T, N), FLAGS, np.bool_),
        last_values=arg((N,), GAE_FLOATS, dtype),
        gamma=draw(st.floats(0, 1) if draw(st.integers(0, 7)) else JUNK_VALUES),
        lam=draw(st.floats(0, 1) if draw(st.integers(0, 7)) else JUNK_VALUES),
    )
    if draw(st.booleans()):
        kwargs["final_values"] = arg((T, N), GAE_FLOATS, dtype)
    return kwargs


@given(kwargs=gae_calls())
def test_gae_takes_anything(kwargs):
    try:
        adv, ret = bm.gae(**kwargs)
    except (TypeError, ValueError) as error:
        assert_names(error, *kwargs, "final_values")
        return
    event("works")
    rewards = np.asarray(kwargs["rewards"])
    assert adv.shape == ret.shape == rewards.shape and adv.dtype == ret.dtype == rewards.dtype
    # Valid inputs of moderate size (no overflow in the arithmetic itself) give finite results.
    moderate = all(np.all(np.abs(np.asarray(kwargs[k], np.float64)) <= 1e6)
                   for k in ("rewards", "values", "last_values", "final_values") if k in kwargs)
    if moderate:
        assert np.isfinite(adv).all() and np.isfinite(ret).all()
