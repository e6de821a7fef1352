"""One MAML-TRPO meta-iteration on HalfCheetahDir, split into physics and everything else.

The issue's size: 40 tasks x 20 episodes x 100 steps (160,000 env-steps per iteration: train and
validation episodes), MLP policy, second-order MAML, 2 threads; about 5 minutes for the four tests on a
shared 2-core machine. ``BMAML_BENCH_META_SIZE=20x10`` runs a reduced size (every figure below is
a ratio, so the split hardly depends on the size), ``BMAML_BENCH_META_ROUNDS`` sets the number of
timed rounds (default 3), ``BMAML_BENCH_META_THREADS`` the thread count (default 2).

What is timed, per round (one meta-iteration, ``bmaml_robot.train.meta_iteration``):

* ``iteration``: the whole meta-iteration (sampling, advantages, adaptation, TRPO step).
* ``env.step``: time inside ``sampler.env.step`` (a timing wrapper): our C++ physics, observations,
  rewards, terminations and resets, with the GIL released.
* ``reference physics``: ``mujoco.rollout`` open loop (persistent pool of the same number of
  threads) of the same number of env-steps, ``frame_skip = 5`` substeps each, on the same
  HalfCheetah model: what the physics alone costs.

Reported (``benchmark.extra_info`` and a printed table):

* ``non-physics / reference physics`` = (iteration - env.step) / reference. Target <= 0.5.
* ``env.step / reference physics``: our env's own overhead over pure physics (info).
* ``policy sampling / reference physics``: sampling minus env.step (policy forwards, noise, copies).
* ``learner / reference physics``: advantages, adaptation, TRPO (info).
* RNN, GRU and LSTM (hidden 100): the same split, and ``<kind> iteration / mlp iteration``. Aim <= 2.
* MLP with ``hvp_subsample=0.2`` (opt-in): the same split.

Targets are reported, not asserted, unless ``BMAML_ENFORCE_TARGETS=1``.

Run with::

    PYTHONPATH=. python -m pytest tests/benchmarks/test_bench_meta.py --benchmark-only -q -s
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from bmaml_robot.config import TrainConfig
from bmaml_robot.factory import build_learner, build_policy
from bmaml_robot.meta.sampler import MetaSampler
from bmaml_robot.train import meta_iteration


def _size() -> tuple[int, int]:
    text = os.environ.get("BMAML_BENCH_META_SIZE", "40x20")
    try:
        tasks, episodes = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"BMAML_BENCH_META_SIZE: expected TASKSxEPISODES such as 40x20, got {text!r}") from None
    return tasks, episodes


NUM_TASKS, EPISODES_PER_TASK = _size()
HORIZON = 100
THREADS = int(os.environ.get("BMAML_BENCH_META_THREADS", "2"))
ROUNDS = int(os.environ.get("BMAML_BENCH_META_ROUNDS", "3"))
NONPHYSICS_TARGET = 0.5  # non-physics time <= 0.5 x reference physics time
RECURRENT_TARGET = 2.0  # recurrent iteration <= 2 x MLP iteration (an aim)
SUBSAMPLE = 0.2  # hvp_subsample of the third case

#: Results shared between the tests of this module (recurrent vs MLP).
_RESULTS: dict[str, dict[str, float]] = {}


def enforce_targets() -> bool:
    return os.environ.get("BMAML_ENFORCE_TARGETS", "").strip().lower() in ("1", "true", "yes")


def _config(policy: str, hvp_subsample: float = 1.0) -> TrainConfig:
    return TrainConfig(family="HalfCheetahDir", policy=policy, recurrence="frozen", num_tasks=NUM_TASKS,
                       episodes_per_task=EPISODES_PER_TASK, horizon=HORIZON, num_threads=THREADS, first_order=False,
                       hvp_subsample=hvp_subsample)


def env_steps_per_iteration(config: TrainConfig) -> int:
    # HalfCheetah never terminates: every train and validation episode runs the full horizon.
    return (config.adapt_steps + 1) * config.num_tasks * config.episodes_per_task * config.horizon


@pytest.fixture(scope="module")
def reference_physics_s(rollout_physics: Callable[..., float]) -> float:
    """Best-of-3 time of ``mujoco.rollout`` for one iteration's env-steps (open loop, same threads)."""
    config = _config("mlp")
    return rollout_physics(config.num_tasks * config.episodes_per_task, config.horizon,
                                 repeats=config.adapt_steps + 1, threads=THREADS)


def _run(benchmark: Any, policy: str, reference_s: float, capsys: pytest.CaptureFixture[str],
         timed_step: type, hvp_subsample: float = 1.0) -> dict[str, float]:
    config = _config(policy, hvp_subsample)
    label = policy if hvp_subsample == 1.0 else f"{policy} hvp_subsample={hvp_subsample}"
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as train() does (robots on config.num_threads, torch on one)
    sampler = MetaSampler(config.family, config.num_tasks, config.episodes_per_task, config.horizon,
                          num_threads=config.num_threads)
    timer = timed_step(sampler.env)
    policy_module = build_policy(config, sampler.env.obs_dim, sampler.env.act_dim)
    learner = build_learner(config, policy_module)
    rounds: list[dict[str, float]] = []
    counter = iter(range(10**6))

    def one_iteration() -> None:
        timer.seconds = 0.0
        start = time.perf_counter()
        metrics = meta_iteration(config, next(counter), sampler, learner)
        rounds.append({"iteration_s": time.perf_counter() - start, "env_step_s": timer.seconds,
                       "sample_s": metrics["sample_time_s"], "env_steps": metrics["env_steps"],
                       "finite": float(np.isfinite(metrics["loss_after"]))})

    try:
        benchmark.pedantic(one_iteration, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    finally:
        sampler.close()
        torch.set_num_threads(torch_threads)
    timed = rounds[1:] or rounds  # the first was the warm-up (none with --benchmark-disable)
    steps = env_steps_per_iteration(config)
    assert all(r["env_steps"] == steps for r in rounds)
    assert all(r["finite"] for r in rounds)

    best = min(timed, key=lambda r: r["iteration_s"])
    mean = {k: float(np.mean([r[k] for r in timed])) for k in best}
    result = {
        "iteration_s": best["iteration_s"],
        "iteration_mean_s": mean["iteration_s"],
        "env_step_s": best["env_step_s"],
        "policy_sampling_s": best["sample_s"] - best["env_step_s"],
        "learner_s": best["iteration_s"] - best["sample_s"],
        "non_physics_s": best["iteration_s"] - best["env_step_s"],
        "reference_physics_s": reference_s,
    }
    ratios = {
        "non-physics / reference physics": result["non_physics_s"] / reference_s,
        "non-physics / reference physics (mean)": (mean["iteration_s"] - mean["env_step_s"]) / reference_s,
        "env.step / reference physics": result["env_step_s"] / reference_s,
        "policy sampling / reference physics": result["policy_sampling_s"] / reference_s,
        "learner / reference physics": result["learner_s"] / reference_s,
    }
    info = benchmark.extra_info
    info.update({"size": f"{config.num_tasks}x{config.episodes_per_task}x{config.horizon}", "threads": THREADS,
                 "policy": policy, "second_order": not config.first_order, "hvp_subsample": hvp_subsample,
                 "env_steps_per_iteration": steps})
    info.update({k: round(v, 4) for k, v in result.items()})
    info.update({f"ratio {k}": round(v, 4) for k, v in ratios.items()})
    info["target non-physics / reference physics"] = f"<= {NONPHYSICS_TARGET}"
    _RESULTS[label] = {**result, **ratios}

    with capsys.disabled():
        print(f"\n[bench meta] {label}, {info['size']}, {THREADS} threads, second order, best of {len(timed)}: "
              f"iteration {result['iteration_s']:.2f} s (mean {result['iteration_mean_s']:.2f} s) = "
              f"env.step {result['env_step_s']:.2f} s + policy sampling {result['policy_sampling_s']:.2f} s + "
              f"learner {result['learner_s']:.2f} s; mujoco.rollout physics {reference_s:.2f} s")
        for name, value in ratios.items():
            print(f"[bench meta]   {name}: {value:.2f}")
    return result


def test_meta_iteration_mlp(benchmark: Any, reference_physics_s: float, capsys: pytest.CaptureFixture[str],
                            timed_step: type) -> None:
    benchmark.group = "meta-iteration"
    _run(benchmark, "mlp", reference_physics_s, capsys, timed_step)
    ratio = _RESULTS["mlp"]["non-physics / reference physics"]
    if enforce_targets():
        assert ratio <= NONPHYSICS_TARGET, f"non-physics work is {ratio:.2f} x the physics time (target <= 0.5)"


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_meta_iteration_recurrent(benchmark: Any, reference_physics_s: float, capsys: pytest.CaptureFixture[str],
                                  timed_step: type, kind: str) -> None:
    """Recurrent policies (hidden 100, frozen recurrence): the same split, and the iteration time
    against the MLP's (aim <= 2). The GRU's recurrent matrix is 3x the RNN's (300 x 100), the LSTM's 4x."""
    benchmark.group = "meta-iteration"
    result = _run(benchmark, kind, reference_physics_s, capsys, timed_step)
    mlp = _RESULTS.get("mlp")
    versus_mlp = None if mlp is None else result["iteration_s"] / mlp["iteration_s"]
    benchmark.extra_info[f"ratio {kind} iteration / mlp iteration"] = None if versus_mlp is None else round(versus_mlp, 3)
    benchmark.extra_info[f"target {kind} iteration / mlp iteration"] = f"<= {RECURRENT_TARGET}"
    if versus_mlp is not None:
        with capsys.disabled():
            print(f"[bench meta]   {kind} iteration / mlp iteration: {versus_mlp:.2f}")
    if enforce_targets():
        ratio = _RESULTS[kind]["non-physics / reference physics"]
        assert ratio <= NONPHYSICS_TARGET, f"{kind} non-physics work is {ratio:.2f} x the physics time (target <= 0.5)"
        assert versus_mlp is not None, "run the MLP benchmark in the same session"
        assert versus_mlp <= RECURRENT_TARGET, f"{kind} iteration is {versus_mlp:.2f} x the MLP's (target <= 2)"


def test_meta_iteration_mlp_subsampled_curvature(benchmark: Any, reference_physics_s: float,
                                                 capsys: pytest.CaptureFixture[str], timed_step: type) -> None:
    """The same iteration with ``hvp_subsample=0.2`` (TRPO's subsampled Fisher): CG's products,
    ~60% of the learner at full batch, on 4 of the 20 episodes per task. Not the default: it
    changes the step direction (the gradient and the line search still use every episode)."""
    benchmark.group = "meta-iteration"
    _run(benchmark, "mlp", reference_physics_s, capsys, timed_step, hvp_subsample=SUBSAMPLE)
    ratio = _RESULTS[f"mlp hvp_subsample={SUBSAMPLE}"]["non-physics / reference physics"]
    if enforce_targets():
        assert ratio <= NONPHYSICS_TARGET, f"non-physics work is {ratio:.2f} x the physics time (target <= 0.5)"
