"""Ray sampling overhead: ``RaySampler`` (2 workers x 1 thread) against ``MetaSampler`` (2 threads).

The issue's size: HalfCheetahDir, 40 tasks x 20 episodes x 100 steps, MLP 64x64 policy. One round
is one meta-iteration's sampling: the train episodes with the meta-parameters, then the validation
episodes with per-task parameters (160,000 env-steps). Both samplers produce the same episodes
(checked before timing), so the ratio compares equal work. Rounds are interleaved (the local
sampler, then Ray's, under the same load; see ``conftest.py``).

Reported:

* ``ray 2x1 / local 2 threads``: rate ratio, target >= 0.8 (Ray's time at most 1.25 x the local
  time). On one machine Ray's cost is the object store round trip of the episodes and the actor
  calls; the workers' policy forwards run in parallel (the local sampler's run on one thread).
* bytes per iteration, from the arrays: parameters out (the meta-policy's state for the first
  phase; state + per-task parameters for the second), episodes back. Asserted equal to the
  formula of ``docs/ray.md``.

``BMAML_BENCH_RAY_SIZE=20x10`` runs a smaller batch, ``BMAML_BENCH_RAY_ROUNDS`` sets the rounds
(default 5). Targets are reported, not asserted, unless ``BMAML_ENFORCE_TARGETS=1``.

Run with::

    PYTHONPATH=. python -m pytest tests/benchmarks/test_bench_ray.py --benchmark-only -q -s
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import pytest
import torch

from bmaml_robot.envs.families import get_family
from bmaml_robot.meta.sampler import MetaSampler
from bmaml_robot.policies import make_policy

FAMILY, HORIZON, WORKERS, THREADS = "HalfCheetahDir", 100, 2, 2
TARGET = 0.8  # rate ratio: Ray's time <= 1.25 x the local time


def _size() -> tuple[int, int]:
    text = os.environ.get("BMAML_BENCH_RAY_SIZE", "40x20")
    try:
        tasks, episodes = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"BMAML_BENCH_RAY_SIZE: expected TASKSxEPISODES such as 40x20, got {text!r}") from None
    return tasks, episodes


NUM_TASKS, EPISODES = _size()
ROUNDS = int(os.environ.get("BMAML_BENCH_RAY_ROUNDS", "5"))


def bytes_per_iteration(num_tasks: int, episodes: int, horizon: int, obs_dim: int, act_dim: int,
                        num_params: int) -> tuple[int, int]:
    """``(out, back)`` bytes of one iteration with one inner step (docs/ray.md): parameters out =
    the state (P float32) for the first phase, the state + K x P for the second; episodes back =
    per phase T K B (4 (obs + act + 2) + 2) + K B obs 4."""
    out = 4 * num_params + 4 * num_params * (1 + num_tasks)
    steps = horizon * num_tasks * episodes
    back = 2 * (steps * (4 * (obs_dim + act_dim + 2) + 2) + num_tasks * episodes * obs_dim * 4)
    return out, back


@pytest.fixture(scope="module")
def ray_instance() -> Any:
    ray = pytest.importorskip("ray")
    from bmaml_robot.meta.ray_sampler import _local_runtime_env

    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
             **_local_runtime_env())
    yield ray
    ray.shutdown()


def test_ray_sampling_overhead(bench: Any, ray_instance: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from bmaml_robot.meta.ray_sampler import RaySampler

    bench.benchmark.group = "ray-sampling"
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as train() does
    tasks = get_family(FAMILY).sample_tasks(NUM_TASKS, np.random.default_rng(0))
    local = MetaSampler(FAMILY, NUM_TASKS, EPISODES, HORIZON, num_threads=THREADS)
    remote = RaySampler(FAMILY, NUM_TASKS, EPISODES, HORIZON, num_workers=WORKERS, threads_per_worker=1)
    try:
        local.set_tasks(tasks)
        remote.set_tasks(tasks)
        policy = make_policy("mlp", local.obs_dim, local.act_dim, hidden_sizes=(64, 64), seed=0)
        g = torch.Generator().manual_seed(0)
        params = {n: (p + 0.01 * torch.randn(p.shape, generator=g)).detach()
                  for n, p in policy.batched_params(NUM_TASKS).items()}

        def iteration(sampler: Any) -> Any:
            return [sampler.sample(policy, None, 1), sampler.sample(policy, params, 2)]

        # Same episodes (bit for bit), and the bytes of one iteration.
        for ours, theirs in zip(iteration(remote), iteration(local)):
            for name, x, y in zip(ours._fields, ours, theirs):
                assert (x is None and y is None) or torch.equal(x, y), name
        num_params = sum(p.numel() for p in policy.parameters())
        expected = bytes_per_iteration(NUM_TASKS, EPISODES, HORIZON, local.obs_dim, local.act_dim, num_params)
        assert (remote.bytes_to_workers, remote.bytes_from_workers) == expected

        ray_key, local_key = f"ray {WORKERS}x1 sampling", f"local {THREADS}-thread sampling"
        steps = 2 * NUM_TASKS * EPISODES * HORIZON
        bench.compare((ray_key, lambda: iteration(remote)), {local_key: lambda: iteration(local)},
                      work=steps, rounds=ROUNDS, warmup_rounds=1)
        ratio = bench.ratio(f"ray {WORKERS}x1 / local {THREADS} threads", ray_key, local_key, target=TARGET,
                            note="Ray's time <= 1.25 x local")
        info = bench.benchmark.extra_info
        info["bytes out per iteration"], info["bytes back per iteration"] = expected
        info["size"] = f"{NUM_TASKS}x{EPISODES}x{HORIZON}"
        with capsys.disabled():
            paired = "-" if ratio.paired is None else f"{ratio.paired:.3f}"
            best = "-" if ratio.best is None else f"{ratio.best:.3f}"
            print(f"\n[bench ray] {FAMILY} {info['size']} MLP 64x64, one iteration's sampling: rate ratio Ray/local "
                  f"paired {paired}, best {best} (target >= {TARGET}); bytes per iteration: "
                  f"{expected[0]:,} out (parameters), {expected[1]:,} back (episodes); "
                  f"{num_params:,} parameters")
    finally:
        remote.close()
        local.close()
        torch.set_num_threads(torch_threads)
