"""Threads: stepping releases the GIL; the pool's threads live and die with the env; one env shared
by several Python threads is serialised instead of corrupted."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import bmaml_robot as bm

# Where this process found bmaml_robot (the source tree or an installed wheel): the subprocess too.
PACKAGE_ROOT = Path(bm.__file__).resolve().parents[1]


def test_step_releases_the_gil():
    """A Python thread keeps ticking while one long step runs in C++. If the GIL were held, the
    ticker could only run in the first and last few milliseconds of the call (switch interval)."""
    env = bm.make_vec("AntDir", 300, num_threads=1, seed=0)
    env.reset(seed=0)
    actions = np.zeros((300, 8))
    start = time.perf_counter()
    env.step(actions)
    if time.perf_counter() - start < 0.02:
        pytest.skip("a step is too quick here to tell a released GIL from a held one")

    ticks: list[float] = []
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.0005)  # gives the GIL back; waking up needs it again

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        time.sleep(0.01)
        begin = time.perf_counter()
        env.step(actions)
        end = time.perf_counter()
    finally:
        stop.set()
        ticker.join()
    quarter = (end - begin) / 4
    inside = [t for t in ticks if begin + quarter < t < end - quarter]
    assert len(inside) >= 3, f"{len(inside)} ticks in the middle of a {end - begin:.3f} s step"


def _thread_ids() -> set[str]:
    return set(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux's /proc")
def test_pool_starts_num_threads_minus_one_workers_and_joins_them_on_delete():
    gc.collect()  # envs of earlier tests, if any are left, must not go away during the count
    before = _thread_ids()
    env = bm.make_vec("SwimmerDir", 8, num_threads=3)
    assert env.num_threads == 3
    workers = _thread_ids() - before
    assert len(workers) == 2  # the calling thread is the third
    env.step(np.zeros((8, 2)))
    del env
    assert not workers & _thread_ids(), "the workers should have been joined"
    before = _thread_ids()
    few = bm.make_vec("SwimmerDir", 2, num_threads=16)  # never more threads than envs
    assert few.num_threads == 2 and len(_thread_ids() - before) == 1


def test_envs_stepped_from_several_python_threads_match_sequential_runs(rollout, same_rollouts):
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (20, 6, 6))

    def make() -> bm.BatchedRobotEnv:
        env = bm.make_vec("HalfCheetahDir", 6, num_threads=2, seed=1, max_episode_steps=7)
        env.set_tasks(env.sample_tasks(6, np.random.default_rng(2)))
        env.reset(seed=1)
        return env

    expected = rollout(make(), actions)
    envs = [make() for _ in range(3)]
    results: list = [None] * 3

    def work(k: int) -> None:
        results[k] = rollout(envs[k], actions)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for result in results:
        same_rollouts(expected, result)


def test_one_env_shared_by_python_threads_does_not_crash(tmp_path):
    """Concurrent calls on one env are serialised (MuJoCo's data is not reentrant: before they
    were, MuJoCo aborted the process). Runs in a subprocess so that a regression is a failure
    here, not the end of the test session."""
    script = textwrap.dedent(
        """
        import threading
        import numpy as np
        import bmaml_robot as bm

        env = bm.make_vec("HalfCheetahDir", 32, num_threads=2, seed=0, max_episode_steps=9)
        env.reset(seed=0)
        def work(k):
            rng = np.random.default_rng(k)
            for _ in range(150):
                env.step(rng.uniform(-1, 1, (32, 6)))
                env.get_state()
                if k == 0:
                    env.set_tasks([{"direction": float(rng.choice([-1, 1]))} for _ in range(32)])
        threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        qpos, qvel = env.get_state()
        assert np.all(np.isfinite(qpos)) and np.all(np.isfinite(qvel))
        print("ok")
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")]))
    # cwd elsewhere: `python -c` puts the cwd first on sys.path, and the source tree has no _core
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env,
                            cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
