"""Regression tests of the core's hardening: array arguments numpy cannot cast (float128) or copy
(huge broadcast views) are converted or refused, never read unchecked; a thread pool the OS
refuses threads to joins the ones it started and says why; GAE sizes are 64-bit; close() and
calls in flight in other threads are safe against each other; a closed env says which call came
after close().

Calls that used to crash the interpreter run in subprocesses, so that a regression fails its test
instead of ending the test session."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import gymnasium
import numpy as np
import pytest

import bmaml_robot as bm
from bmaml_robot import _core
from bmaml_robot.envs.vector_env import MAX_THREADS

# Where this process found bmaml_robot (the source tree or an installed wheel): the subprocess too.
PACKAGE_ROOT = Path(bm.__file__).resolve().parents[1]


def run_python(script: str, tmp_path: Path, timeout: float, args: tuple[str, ...] = (),
               stack_kib: int | None = None) -> subprocess.CompletedProcess:
    """``python -c script *args`` in a subprocess (under ``ulimit -s stack_kib`` if given)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-c", script, *args]
    if stack_kib is not None:
        command = ["/bin/sh", "-c", f'ulimit -s {stack_kib} 2>/dev/null; exec "$@"', "sh", *command]
    # cwd elsewhere: `python -c` puts the cwd first on sys.path, and the source tree has no _core
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)


# --- arrays numpy cannot cast or copy: run in subprocesses -------------------------------------

# name: (code run with numpy as np, bmaml_robot as bm, `env` and `twin` (two HalfCheetahDir
# envs of 3, reset alike) and `same(a, b)` in scope; the expected outcome: "ok" or
# (exception type, regex of its message)).
HUGE = "np.broadcast_to(np.float32(0), (2**30, 2**30))"  # 2**60 elements: no copy can succeed
HUGE_FLAGS = "np.broadcast_to({}, (2**30, 2**30))"
CASES: dict[str, tuple[str, object]] = {
    "step_float128": (
        "a = np.linspace(-1, 1, 18).reshape(3, 6)\n"
        "got, want = env.step(a.astype(np.longdouble)), twin.step(a)\n"
        "assert all(same(x, y) for x, y in zip(got[:4], want[:4]))",
        "ok"),
    "step_float128_non_contiguous": (
        "env.step(np.zeros((6, 3), np.longdouble).T); env.step(np.zeros((3, 12), np.longdouble)[:, ::2])", "ok"),
    "step_float128_byteswapped": ("env.step(np.zeros((3, 6), np.dtype(np.longdouble).newbyteorder()))", "ok"),
    "step_float128_beyond_float64": (
        "a = np.zeros((3, 6), np.longdouble); a[2, 1] = np.longdouble(10) ** 400; env.step(a)",
        (ValueError, r"actions: expected values within float64's range, got 1e\+400 in row 2 \(column 1\)")),
    "step_float128_nan": (
        "a = np.zeros((3, 6), np.longdouble); a[1, 4] = np.nan; env.step(a)",
        (ValueError, r"actions: expected finite values, got nan in row 1 \(column 4\)")),
    "step_float128_wrong_shape": (
        "env.step(np.zeros((3, 5), np.longdouble))", (ValueError, r"actions: expected shape \(3, 6\), got \(3, 5\)")),
    "set_state_qpos_float128": (
        "qpos, qvel = env.get_state()\n"
        "assert same(env.set_state(qpos.astype(np.longdouble), qvel), twin.set_state(qpos, qvel))",
        "ok"),
    "set_state_qvel_float128": (
        "qpos, qvel = env.get_state()\n"
        "assert same(env.set_state(qpos, qvel.astype(np.longdouble)), twin.set_state(qpos, qvel))",
        "ok"),
    "set_state_qvel_float128_inf": (
        "qpos, qvel = env.get_state(); qvel = qvel.astype(np.longdouble); qvel[0, 2] = -np.inf\n"
        "env.set_state(qpos, qvel)",
        (ValueError, r"qvel: expected finite values, got -inf in row 0 \(column 2\)")),
    "core_set_tasks_float128": (
        "env._core.set_tasks(np.ones((3, 2), np.longdouble)); twin._core.set_tasks(np.ones((3, 2)))\n"
        "assert same(env.step(np.ones((3, 6)))[1], twin.step(np.ones((3, 6)))[1])",
        "ok"),
    "core_set_tasks_float128_beyond_float64": (
        "t = np.ones((3, 2), np.longdouble); t[0, 1] = -np.longdouble(10) ** 4000; env._core.set_tasks(t)",
        (ValueError, r"tasks: expected values within float64's range, got -1e\+4000 in row 0 \(column 1\)")),
    "single_env_step_float128": (
        "import gymnasium\n"
        "single = gymnasium.make('bmaml_robot/HalfCheetahDir-v0'); single.reset(seed=0)\n"
        "obs, reward, *_ = single.step(np.full(6, 0.5, np.longdouble))\n"
        "assert obs.shape == (17,) and np.isfinite(obs).all() and np.isfinite(reward)",
        "ok"),
    "gae_huge_broadcast_views": (
        f"bm.gae({HUGE}, {HUGE}, {HUGE_FLAGS.format('False')}, {HUGE_FLAGS.format('False')}, "
        "np.zeros(2**30, np.float32), 0.9, 0.9)",
        (MemoryError, r"terminated: cannot convert the bool array of shape \(1073741824, 1073741824\) to contiguous bool")),
    "gae_huge_broadcast_integer_flags": (
        f"bm.gae({HUGE}, {HUGE}, {HUGE_FLAGS.format('np.int8(0)')}, {HUGE_FLAGS.format('False')}, "
        "np.zeros(2**30, np.float32), 0.9, 0.9)",
        (MemoryError, r"terminated: cannot convert the int8 array of shape \(1073741824, 1073741824\) to contiguous bool")),
    "core_reset_streams_byteswapped": (
        "s = np.arange(3, dtype=np.dtype(np.uint64).newbyteorder()); env._core.reset_streams(s, s)",
        (TypeError, r"seeds: expected a uint64 array, got dtype >u8")),
}

RUNNER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import bmaml_robot as bm

    def fresh():
        e = bm.make_vec("HalfCheetahDir", 3, seed=0)
        e.reset(seed=0)
        return e

    def same(a, b):
        return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)

    for name, code in json.loads(sys.argv[1]):
        env, twin = fresh(), fresh()
        print("START", name, flush=True)
        try:
            exec(code)
            result = ["ok", ""]
        except BaseException as error:
            result = [type(error).__name__, str(error)]
        print("RESULT", json.dumps([name, result]), flush=True)
    """
)


@pytest.fixture(scope="module")
def case_results(tmp_path_factory) -> dict[str, tuple[str, str]]:
    """Runs every case in as few subprocesses as it takes: a case that crashes its process is
    recorded as such, and the cases after it go on in a fresh one."""
    tmp_path = tmp_path_factory.mktemp("cases")
    remaining = [(name, code) for name, (code, _) in CASES.items()]
    results: dict[str, tuple[str, str]] = {}
    while remaining:
        proc = run_python(RUNNER, tmp_path, timeout=120, args=[json.dumps(remaining)])
        started = None
        for line in proc.stdout.splitlines():
            if line.startswith("START "):
                started = line.split(" ", 1)[1]
            elif line.startswith("RESULT "):
                name, result = json.loads(line.split(" ", 1)[1])
                results[name] = tuple(result)
                started = None
        if started is None:  # every case ran (or the process died before the first)
            for name, _ in remaining:
                results.setdefault(name, ("died", f"exit status {proc.returncode}: {proc.stderr[-1500:]}"))
            break
        results[started] = ("crashed", f"exit status {proc.returncode}: {proc.stderr[-1500:]}")
        remaining = [(name, code) for name, code in remaining if name not in results]
    return results


@pytest.mark.parametrize("name", list(CASES))
def test_arrays_numpy_cannot_cast_or_copy_are_converted_or_refused(case_results, name):
    kind, message = case_results[name]
    expected = CASES[name][1]
    if expected == "ok":
        assert kind == "ok", f"{kind}: {message}"
    else:
        error, pattern = expected
        assert kind == error.__name__ and re.search(pattern, message), f"{kind}: {message}"


# --- num_threads: bounded, and a pool the OS refuses threads to is joined ----------------------


@pytest.mark.parametrize("num_threads", [257, 400, 2**20])
def test_num_threads_beyond_the_cap_is_refused_with_the_rule(num_threads):
    rule = r"\(at most 256 threads, and at most num_envs of them are started; results do not depend on num_threads\)"
    with pytest.raises(ValueError, match=rf"num_threads: expected an integer in \[1, 256\] {rule}, got {num_threads}"):
        bm.make_vec("Navigation2D", 400, num_threads=num_threads)
    with pytest.raises(ValueError, match=rf"num_threads: expected an integer in \[1, 256\] {rule}, got {num_threads}"):
        _core.VecEnvCore("Navigation2D", "navigation", "", 400, num_threads, 10, 0)


def test_num_threads_at_the_cap_starts_at_most_num_envs():
    assert MAX_THREADS == _core.MAX_THREADS == 256
    assert bm.make_vec("Navigation2D", 3, num_threads=256).num_threads == 3


REFUSED_THREADS = textwrap.dedent(
    """
    import os, resource
    import numpy as np
    import bmaml_robot as bm

    def threads():
        return len(os.listdir("/proc/self/task"))

    def vm_bytes():
        for line in open("/proc/self/status"):
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024

    before = threads()
    # Room for a few 8 MiB thread stacks, not for 255: the OS refuses a thread part way.
    resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + (96 << 20), resource.RLIM_INFINITY))
    try:
        bm.make_vec("Navigation2D", 256, num_threads=256)
    except RuntimeError as error:
        print("ERROR", error)
    else:
        print("NO ERROR")
    print("THREADS", before, threads())
    env = bm.make_vec("Navigation2D", 4, num_threads=2)  # what is left works
    env.reset(seed=0)
    print("STEP", np.isfinite(env.step(np.zeros((4, 2)))[0]).all())
    """
)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux's /proc")
def test_a_thread_the_os_refuses_joins_the_started_ones_and_raises(tmp_path):
    """Under a memory limit (RLIMIT_AS; RLIMIT_NPROC works alike but not for root) the pool gets
    some of its threads: the constructor used to throw without joining them, and the call never
    returned (GIL released, Ctrl-C ignored). The subprocess's timeout turns a hang into a failure."""
    try:  # glibc sizes thread stacks from RLIMIT_STACK at startup: 8 MiB each, whatever ours is
        result = run_python(REFUSED_THREADS, tmp_path, timeout=60, stack_kib=8192)
    except subprocess.TimeoutExpired:
        pytest.fail("make_vec hung when the OS refused a thread")
    out = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    error = next(line for line in out.splitlines() if line.startswith(("ERROR", "NO ERROR")))
    assert re.match(
        r"ERROR num_threads: could not start thread \d+ of 256: .*; the process's thread or memory limit "
        r"\(ulimit -u, ulimit -v\) is too low for 256 threads \(the \d+ workers started were stopped and joined\)\. "
        r"Use fewer threads \(at most 256 threads, and at most num_envs of them are started; results do not depend "
        r"on num_threads\)$", error), error
    before, after = re.search(r"THREADS (\d+) (\d+)", out).groups()
    assert before == after, "the started workers should have been joined"
    assert "STEP True" in out


# --- GAE sizes are 64-bit ------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 2**31), (2**31 + 5, 1), (3, 2**32 + 7), (2**20, 2**21)])
def test_gae_hands_the_core_sizes_beyond_int_unchanged(shape):
    """bm.gae used to cast T and N to int: N >= 2**31 became negative and the result was silently
    all zeros. A real batch that large needs > 16 GiB, so this checks, on a stride-0 view, the
    sizes the binding hands the core (whose signature takes std::ptrdiff_t: a static_assert in
    the bindings keeps the two in step)."""
    rewards = np.broadcast_to(np.float32(0), shape)
    assert _core._gae_sizes(rewards) == shape


def test_gae_over_many_envs_still_matches_per_column_results():
    """The 64-bit index arithmetic on a batch wider than a few rows: each column's result is that
    of the column computed alone."""
    rng = np.random.default_rng(0)
    T, N = 3, 70_000
    rewards, values = rng.normal(size=(T, N)), rng.normal(size=(T, N))
    terminated, truncated = rng.random((T, N)) < 0.2, np.zeros((T, N), bool)
    last = rng.normal(size=N)
    adv, ret = bm.gae(rewards, values, terminated, truncated, last, 0.9, 0.8)
    for n in (0, 1, 40_000, N - 1):
        one = bm.gae(rewards[:, n:n + 1], values[:, n:n + 1], terminated[:, n:n + 1], truncated[:, n:n + 1], last[n:n + 1],
                     0.9, 0.8)
        np.testing.assert_array_equal(adv[:, n], one[0][:, 0])
        np.testing.assert_array_equal(ret[:, n], one[1][:, 0])


# --- close() ---------------------------------------------------------------------------------------


def closed_env() -> bm.BatchedRobotEnv:
    env = bm.make_vec("HalfCheetahDir", 2, seed=0)
    env.reset(seed=0)
    env.close()
    return env


CALLS_AFTER_CLOSE = {
    "step": lambda env: env.step(np.zeros((2, 6))),
    "reset": lambda env: env.reset(seed=1),
    "reset_streams": lambda env: env.reset_streams([1, 2], [0, 1]),
    "set_state": lambda env: env.set_state(np.zeros((2, 9)), np.zeros((2, 9))),
    "get_state": lambda env: env.get_state(),
    "set_tasks": lambda env: env.set_tasks([{"direction": 1.0}] * 2),
    "sample_tasks": lambda env: env.sample_tasks(2, np.random.default_rng(0)),
    "action_map": lambda env: env.action_map(),
}


@pytest.mark.parametrize("method", list(CALLS_AFTER_CLOSE))
def test_every_method_after_close_raises_one_error_naming_it(method):
    env = closed_env()
    with pytest.raises(RuntimeError, match=rf"^env is closed: {method}\(\) after close\(\)$"):
        CALLS_AFTER_CLOSE[method](env)
    env.close()  # again: nothing
    assert env.closed and env.num_envs == 2 and env.observation_space.shape == (2, 17) and len(env.tasks) == 2


def test_single_env_close_frees_the_robot_and_calls_after_it_say_so():
    env = gymnasium.make("bmaml_robot/HalfCheetahDir-v0")
    env.reset(seed=0)
    env.close()
    env.close()
    with pytest.raises(RuntimeError, match=r"^env is closed: step\(\) after close\(\)$"):
        env.step(np.zeros(6))
    with pytest.raises(RuntimeError, match=r"^env is closed: reset\(\) after close\(\)$"):
        env.reset(seed=0)


def unstable_env() -> bm.BatchedRobotEnv:
    """Every env blows up (bad qvel) at its next step: the step then asks the core for warnings."""
    env = bm.make_vec("HalfCheetahDir", 4, num_threads=2, seed=0)
    env.reset(seed=0)
    qpos, qvel = env.get_state()
    env.set_state(qpos, np.full_like(qvel, 1e12))
    return env


def test_close_from_another_thread_while_a_step_packs_its_instabilities():
    """The step used self._core again after the physics, to read the instability warnings: a
    close() landing in between gave AttributeError: 'NoneType' object has no attribute 'warning'.
    Here the close comes from another thread exactly there; the step finishes with its result."""
    env = unstable_env()
    real = env._core

    class CloseDuringStep:
        def __getattr__(self, name):
            return getattr(real, name)

        def step(self, actions):
            out = real.step(actions)
            closer = threading.Thread(target=env.close)
            closer.start()
            closer.join()
            return out

    env._core = CloseDuringStep()
    obs, reward, terminated, truncated, info = env.step(np.zeros((4, 6)))
    assert env.closed and info["unstable"].all() and truncated.all()
    assert all(reason.startswith("bad qvel") for reason in info["unstable_reason"])
    assert np.isfinite(obs).all()
    with pytest.raises(RuntimeError, match=r"^env is closed: step\(\) after close\(\)$"):
        env.step(np.zeros((4, 6)))


def test_close_racing_steps_of_unstable_envs_gives_only_the_documented_error():
    errors: list[BaseException] = []
    steps = 0
    for _ in range(20):
        env = unstable_env()
        started = threading.Event()

        def work() -> None:
            nonlocal steps
            qpos, qvel = env.get_state()
            started.set()
            try:
                while True:
                    env.step(np.zeros((4, 6)))
                    steps += 1
                    env.set_state(qpos, np.full_like(qvel, 1e12))  # unstable again
            except BaseException as error:  # noqa: BLE001 - every error is looked at below
                errors.append(error)

        worker = threading.Thread(target=work)
        worker.start()
        started.wait()
        env.close()
        worker.join(timeout=60)
        assert not worker.is_alive()
    assert len(errors) == 20
    for error in errors:
        assert isinstance(error, RuntimeError) and re.match(r"env is closed: (step|set_state)\(\) after close\(\)$", str(error)), repr(error)


MUJOCO_OUT_OF_MEMORY = textwrap.dedent(
    """
    import resource
    from pathlib import Path
    from bmaml_robot import _core
    from bmaml_robot.envs.assets import asset_path

    # An Ant whose mjData arena is 300 MB (address space: MuJoCo does not touch it all): the model
    # loads and the first thread's mjData fits under the limit, the second's does not.
    xml = Path(asset_path("Ant")).read_text().replace('<mujoco model="ant">', '<mujoco model="ant"><size memory="300M"/>', 1)
    Path("ant_big_arena.xml").write_text(xml)
    vm = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + (500 << 20), resource.RLIM_INFINITY))
    try:
        _core.VecEnvCore("Ant", "direction", "ant_big_arena.xml", 2, 2, 10, 0)
    except RuntimeError as error:
        print("ERROR", error)
    print("MAXRSS_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    """
)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_mujoco_out_of_memory_making_a_workspace_is_an_error_not_an_exit(tmp_path):
    """MuJoCo's error handler used to exit() the process when mj_makeData ran out of memory."""
    result = run_python(MUJOCO_OUT_OF_MEMORY, tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ERROR mj_makeData failed: Could not allocate memory" in result.stdout, result.stdout + result.stderr[-2000:]
