"""The Ray sampler: same episodes and same training as the local sampler, workers that die are
replaced without changing anything, and a clear error without Ray.

One local Ray instance (2 CPUs) serves every test of this module (starting Ray costs seconds);
the tests that do not need it never start it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bmaml_robot.checkpoint import load_checkpoint, read_jsonl
from bmaml_robot.cli import train_main
from bmaml_robot.envs.families import get_family
from bmaml_robot.envs.vector_env import BatchedRobotEnv
from bmaml_robot.meta.episodes import Episodes
from bmaml_robot.meta.sampler import MetaSampler
from bmaml_robot.policies import make_policy

FAMILY, K, B, T = "AntDir", 5, 3, 20


@pytest.fixture(scope="module")
def ray_instance() -> Any:
    """A local Ray with 2 CPUs, shared by the module's tests, shut down at the end."""
    ray = pytest.importorskip("ray")
    from bmaml_robot.meta.ray_sampler import start_ray

    start_ray(None, num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def assert_same_episodes(a: Episodes, b: Episodes) -> None:
    for name, x, y in zip(a._fields, a, b):
        if x is None or y is None:
            assert x is None and y is None, name
        else:
            assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y), name


def dims() -> tuple[int, int]:
    env = BatchedRobotEnv(FAMILY, 1)
    env.close()
    return env.obs_dim, env.act_dim


def setup_batch(seed: int = 0) -> tuple[list[dict], Any, dict[str, torch.Tensor]]:
    tasks = get_family(FAMILY).sample_tasks(K, np.random.default_rng(seed))
    policy = make_policy("gru", *dims(), hidden_size=13, init_log_std=2.0, seed=seed)
    g = torch.Generator().manual_seed(seed)
    params = {n: (p + 0.2 * torch.randn(p.shape, generator=g)).detach() for n, p in policy.batched_params(K).items()}
    return tasks, policy, params


def local_episodes(tasks: list[dict], policy: Any, params: dict | None, seed: int,
                   family: str = FAMILY) -> tuple[Episodes, int]:
    sampler = MetaSampler(family, K, B, T)
    try:
        sampler.set_tasks(tasks)
        episodes = sampler.sample(policy, params, seed)
        return episodes, sampler.env_steps
    finally:
        sampler.close()


def kill_worker_after_env_steps(ray: Any, actor: Any, steps: int) -> int:
    """Fault injection, done inside the worker's process: Ray runs ``install`` on the actor
    instance (``__ray_call__``), which wraps its env's ``step`` so that the worker SIGKILLs its own
    process after ``steps`` env steps of its next sample. Returns the worker's process id.

    ``install`` is defined here, inside a function, so that Ray's cloudpickle ships it by value
    (the worker processes cannot import this test module)."""

    def install(worker: Any, steps: int) -> int:
        import os
        import signal

        env = worker.sampler.env
        inner = env.step
        count = [0]

        def step(actions: Any) -> Any:
            count[0] += 1
            if count[0] > steps:
                os.kill(os.getpid(), signal.SIGKILL)
            return inner(actions)

        env.step = step
        return os.getpid()

    return ray.get(actor.__ray_call__.remote(install, steps))


def test_ray_sampler_gives_the_local_samplers_episodes(ray_instance: Any) -> None:
    from bmaml_robot.meta.ray_sampler import RaySampler, task_slices

    tasks, policy, params = setup_batch()
    with RaySampler(FAMILY, K, B, T, num_workers=2) as sampler:
        assert sampler.slices == task_slices(K, 2) == [(0, 3), (3, 5)]
        assert (sampler.obs_dim, sampler.act_dim) == dims()
        sampler.set_tasks(tasks)
        steps = 0
        for p, seed in ((None, 3), (params, 4)):
            ours = sampler.sample(policy, p, seed)
            expected, expected_steps = local_episodes(tasks, policy, p, seed)
            assert_same_episodes(ours, expected)
            steps += expected_steps
            assert sampler.env_steps == steps
        assert (expected.mask.sum(0) < T).any(), "some Ants fall: episodes of different lengths"
        # Bytes, from the arrays: parameters out (the state once, then state + per-task params),
        # episodes back (float32 except the bool mask and terminations).
        P = sum(p.numel() for p in policy.parameters())
        assert sampler.bytes_to_workers == 4 * P + 4 * P * (1 + K)
        obs, act = dims()
        per_sample = T * K * B * (4 * (obs + act + 2) + 2) + K * B * obs * 4
        assert sampler.bytes_from_workers == 2 * per_sample
        assert sampler.workers_restarted == 0
        ray_instance.get([w.ready.remote() for w in sampler._workers])  # still alive
    assert sampler._workers == [] and ray_instance.is_initialized()  # a shared Ray stays up


def test_physics_tasks_on_ray_are_the_local_episodes(ray_instance: Any) -> None:
    """A family that changes the body (nested task dicts through Ray; Hoppers fall early)."""
    from bmaml_robot.meta.ray_sampler import RaySampler

    family = "HopperParams"
    tasks = get_family(family).sample_tasks(K, np.random.default_rng(0))
    env = BatchedRobotEnv(family, 1)
    env.close()
    policy = make_policy("gru", env.obs_dim, env.act_dim, hidden_size=13, init_log_std=2.0, seed=0)
    with RaySampler(family, K, B, T, num_workers=2) as sampler:
        sampler.set_tasks(tasks)
        ours = sampler.sample(policy, None, 5)
    expected, _ = local_episodes(tasks, policy, None, 5, family)
    assert_same_episodes(ours, expected)
    assert (expected.mask.sum(0) < T).any(), "some Hoppers fall: episodes of different lengths"


def test_workers_killed_during_sampling_are_replaced_and_change_nothing(
    ray_instance: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from bmaml_robot.meta.ray_sampler import RaySampler

    tasks, policy, params = setup_batch(1)
    expected = [local_episodes(tasks, policy, p, seed)[0] for p, seed in ((None, 7), (params, 8), (params, 9))]
    with caplog.at_level(logging.WARNING, logger="bmaml_robot.meta.ray_sampler"), \
            RaySampler(FAMILY, K, B, T, num_workers=2) as sampler:
        sampler.set_tasks(tasks)
        first_pids = list(sampler.worker_pids)
        # Worker 1 kills itself (SIGKILL) after 3 env steps of its first sample.
        assert kill_worker_after_env_steps(ray_instance, sampler._workers[1], 3) == first_pids[1]
        assert_same_episodes(sampler.sample(policy, None, 7), expected[0])
        assert sampler.workers_restarted == 1
        assert "worker 1 (tasks 3..4) died" in caplog.text and "replacing it" in caplog.text

        # From outside: SIGKILL worker 0's process while the next sample runs (or, on a very fast
        # machine, just before the one after it): either way one more replacement, same batches.
        pid = first_pids[0]
        killer = threading.Timer(0.05, os.kill, (pid, signal.SIGKILL))
        killer.start()
        assert_same_episodes(sampler.sample(policy, params, 8), expected[1])
        killer.join()
        assert_same_episodes(sampler.sample(policy, params, 9), expected[2])
        assert sampler.workers_restarted == 2
        assert "worker 0 (tasks 0..2) died" in caplog.text
        pids = [r["pid"] for r in ray_instance.get([w.ready.remote() for w in sampler._workers])]
        assert pid not in pids and first_pids[1] not in pids


def test_workers_that_cannot_be_placed_fail_the_start_instead_of_waiting_forever(
    ray_instance: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from bmaml_robot.meta.ray_sampler import RaySampler

    with caplog.at_level(logging.WARNING, logger="bmaml_robot.meta.ray_sampler"), pytest.raises(
        RuntimeError, match=r"Ray worker 0 did not start within 1 s: the cluster needs 3 free CPUs \(1 workers x 3 "
                            r"threads\) and has 2"
    ):
        RaySampler(FAMILY, K, B, T, num_workers=1, threads_per_worker=3, start_timeout_s=1)
    assert "need 3 CPUs, the cluster has 2 now" in caplog.text


def test_training_with_ray_equals_training_locally(ray_instance: Any, tmp_path: Path) -> None:
    tiny = ["--config", "halfcheetah-dir", "--set", "num_tasks=3", "--set", "episodes_per_task=2",
            "--set", "horizon=15", "--set", "hidden_sizes=[16, 16]", "--num-iterations", "2", "--num-threads", "1",
            "--quiet"]
    assert train_main(tiny + ["--out", str(tmp_path / "local")]) == 0
    assert train_main(tiny + ["--out", str(tmp_path / "ray"), "--sampler", "ray", "--workers", "2"]) == 0
    local, remote = (read_jsonl(tmp_path / name / "metrics.jsonl") for name in ("local", "ray"))
    assert len(local) == len(remote) == 2
    assert all(m["workers_restarted"] == 0 for m in remote)

    def figures(metrics: list[dict]) -> list[dict]:
        return [{k: v for k, v in m.items() if not k.endswith("time_s") and k != "workers_restarted"} for m in metrics]

    assert figures(local) == figures(remote)
    assert local[1]["step_accepted"] and local[0]["loss_after"] != local[0]["loss_before"]  # training moved
    a, b = (load_checkpoint(tmp_path / name / "policy.pt") for name in ("local", "ray"))
    assert a["policy"].keys() == b["policy"].keys()
    for name in a["policy"]:
        assert torch.equal(a["policy"][name], b["policy"][name]), name
    assert b["config"]["sampler"] == "ray" and b["config"]["workers"] == 2


@pytest.mark.parametrize("family", ["HalfCheetahVel", "BanditCorrelated"])
def test_rl2_trials_on_ray_are_the_local_trials(ray_instance: Any, family: str) -> None:
    from bmaml_robot.envs.discrete import get_task_family
    from bmaml_robot.meta.ray_sampler import RayTrialSampler
    from bmaml_robot.rl2 import RL2Policy, TrialSampler

    tasks = get_task_family(family).sample_tasks(3, np.random.default_rng(0))
    local = TrialSampler(family, 3, 2, 10)
    remote = RayTrialSampler(family, 3, 2, 10, num_workers=2)
    try:
        policy = RL2Policy(local.obs_dim, local.act_dim, discrete=local.discrete, hidden_size=8, seed=0)
        local.set_tasks(tasks)
        remote.set_tasks(tasks)
        a, b = local.sample(policy, seed=7), remote.sample(policy, seed=7)
        for name, x, y in zip(a._fields, a, b):
            assert x.dtype == y.dtype and torch.equal(x, y), name
        assert remote.env_steps == local.env_steps == 3 * 2 * 10 and remote.workers_restarted == 0
    finally:
        local.close()
        remote.close()


def test_rl2_training_with_ray_equals_training_locally(ray_instance: Any, tmp_path: Path) -> None:
    tiny = ["--config", "rl2-halfcheetah-vel", "--set", "num_tasks=3", "--set", "episodes_per_trial=2",
            "--set", "horizon=10", "--set", "hidden_size=8", "--set", "ppo_epochs=2", "--num-iterations", "2",
            "--num-threads", "1", "--quiet"]
    assert train_main(tiny + ["--out", str(tmp_path / "local")]) == 0
    assert train_main(tiny + ["--out", str(tmp_path / "ray"), "--sampler", "ray", "--workers", "2"]) == 0
    local, remote = (read_jsonl(tmp_path / name / "metrics.jsonl") for name in ("local", "ray"))
    assert [{k: v for k, v in m.items() if not k.endswith("time_s") and k != "workers_restarted"} for m in remote] \
        == [{k: v for k, v in m.items() if not k.endswith("time_s")} for m in local]
    a, b = (load_checkpoint(tmp_path / name / "policy.pt") for name in ("local", "ray"))
    for name in a["policy"]:
        assert torch.equal(a["policy"][name], b["policy"][name]), name


def test_a_run_may_resume_on_another_sampler(tmp_path: Path) -> None:
    # Where episodes are sampled never changes what is computed, so resuming may change it.
    pytest.importorskip("ray")
    from bmaml_robot.config import TrainConfig
    from bmaml_robot.run import RESUME_MAY_CHANGE
    from bmaml_robot.train import check_run_dir, train

    config = TrainConfig(family="Navigation2D", num_tasks=2, episodes_per_task=2, horizon=5, num_iterations=1,
                         num_threads=1, hidden_sizes=(8,))
    train(config, tmp_path / "run")
    moved = config.replace(num_iterations=2, sampler="ray", ray_address="auto", workers=2, threads_per_worker=3)
    _, state = check_run_dir(moved, tmp_path / "run", resume=True)
    assert state is not None and state["next_iteration"] == 1
    assert {"sampler", "ray_address", "workers", "threads_per_worker"} <= RESUME_MAY_CHANGE
    with pytest.raises(ValueError, match=r"other values of \['num_tasks'\]"):
        check_run_dir(moved.replace(num_tasks=3), tmp_path / "run", resume=True)


def test_without_ray_the_ray_sampler_fails_before_any_work_with_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        train_main(["--config", "2d-navigation", "--sampler", "ray", "--out", str(out), "--quiet"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert 'sampler: the Ray sampler needs Ray, which is not installed; install it with: pip install "bmaml-robot[ray]"' in err
    assert not out.exists()
    from bmaml_robot.meta.ray_sampler import RaySampler

    with pytest.raises(ImportError, match=r'pip install "bmaml-robot\[ray\]"'):
        RaySampler(FAMILY, K, B, T)
    # Everything else works without Ray.
    assert train_main(["--config", "2d-navigation", "--set", "num_tasks=2", "--set", "episodes_per_task=2",
                       "--set", "horizon=5", "--num-iterations", "1", "--num-threads", "1", "--out", str(out),
                       "--quiet"]) == 0


def test_ray_sampler_checks_its_arguments() -> None:
    pytest.importorskip("ray")
    from bmaml_robot.meta.ray_sampler import RaySampler, task_slices

    with pytest.raises(ValueError, match=r"num_workers: expected at most num_tasks=5 workers, got 6"):
        RaySampler(FAMILY, 5, B, T, num_workers=6)
    with pytest.raises(ValueError, match=r"threads_per_worker: expected a positive integer, got 0"):
        RaySampler(FAMILY, 5, B, T, threads_per_worker=0)
    with pytest.raises(ValueError, match=r"start_timeout_s: expected a positive number of seconds, got 0"):
        RaySampler(FAMILY, 5, B, T, start_timeout_s=0)
    assert task_slices(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert task_slices(2, 2) == [(0, 1), (1, 2)]
