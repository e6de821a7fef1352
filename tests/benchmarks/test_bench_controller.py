"""Latency of the deploy runtime's ``Controller.act`` against the same policy in torch eager.

One call is one control step of one robot: a float64 observation ``[17]`` (what the simulator
gives) in, the clipped action ``[6]`` out, the hidden state carried. Policies: the project's
MLP [64, 64] and GRU-100 (``bmaml_robot.policies.make_policy``, HalfCheetah sizes), exported
with ``bmaml_robot.export.export_onnx`` (the file ``bmaml-export`` writes), and both are checked
to agree before timing. The torch reference is ``policy.step`` under ``torch.no_grad()`` plus the
clamp to the bounds, one thread.

Timing. A control loop calls ``act`` back to back from warm caches, so the two are timed in
alternating *blocks* of ``CALLS_PER_ROUND`` calls (``Bench.compare``: each round runs a torch
block, then a controller block) rather than call by call, which would let each evict the other's
weights from the cache. Every call is timed on its own; p50 and p99 (microseconds) are over all
calls after the warm-up rounds, and go to ``extra_info`` and the summary line's note.

Targets: ``Controller.act`` p99 under 50 us (the issue's target; enforced with
``BMAML_ENFORCE_TARGETS=1``), and faster than torch eager (ratio > 1).

RL^2. ``test_controller_act_latency_rl2`` times an RL^2 GRU-100 file (``act(obs, reward=r,
episode_start=False)``: the previous action, previous reward and start flag fed besides ``obs``)
against a MAML GRU-100 file of the same sizes, both toy files of
``bmaml_robot_deploy.testing.toy_policy`` (the same ONNX ``GRU`` operator, so that the ratio is
what RL^2's inputs cost), each checked against its numpy reference first, timed in alternating
blocks as above. It reports the act time RL^2 / MAML (paired ratio of the blocks' rates, and of
the per-call p50), not a target; the p99 target applies to the RL^2 file too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bmaml_robot.export import export_onnx
from bmaml_robot.policies import make_policy
from bmaml_robot_deploy import Controller
from bmaml_robot_deploy.testing import ReferencePolicy, save_model, toy_metadata, toy_policy

OBS_DIM, ACT_DIM = 17, 6
CASES = {"mlp-64x64": ("mlp", {"hidden_sizes": (64, 64)}), "gru-100": ("gru", {"hidden_size": 100})}
CALLS_PER_ROUND = 500
ROUNDS = 20
WARMUP_ROUNDS = 2
P99_TARGET_US = 50.0


def enforce_targets() -> bool:
    """As conftest.enforce_targets: BMAML_ENFORCE_TARGETS=1 makes a missed target fail."""
    return os.environ.get("BMAML_ENFORCE_TARGETS", "").strip().lower() in ("1", "true", "yes")


class TimedCalls:
    """``block()`` calls ``fn`` ``CALLS_PER_ROUND`` times, timing each call (seconds in ``times``)."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.fn = fn
        self.times: list[float] = []

    def block(self) -> None:
        fn, times, clock = self.fn, self.times, time.perf_counter
        for _ in range(CALLS_PER_ROUND):
            start = clock()
            fn()
            times.append(clock() - start)

    def percentiles_us(self, skip: int) -> dict[str, float]:
        us = np.asarray(self.times[skip:]) * 1e6
        p50, p99, p999 = np.percentile(us, [50, 99, 99.9])
        return {"p50": float(p50), "p99": float(p99), "p99.9": float(p999), "max": float(us.max())}


def _build(case: str, tmp_path: Path) -> tuple[Controller, Callable[[], np.ndarray], Callable[[], np.ndarray], np.ndarray]:
    kind, sizes = CASES[case]
    policy = make_policy(kind, OBS_DIM, ACT_DIM, seed=0, **sizes)
    # action_scale 1 onto the toy bounds [-1, 1]: the graph's action map is the torch reference's clamp.
    metadata = toy_metadata(kind, OBS_DIM, ACT_DIM, sizes.get("hidden_size", 100), recurrence=policy.recurrence or "none",
                            package_version="benchmark", source_run="make_policy(seed=0)", action_scale=1.0)
    controller = Controller(export_onnx(policy, None, tmp_path / f"{case}.onnx", metadata))
    low, high = torch.from_numpy(controller.action_low), torch.from_numpy(controller.action_high)
    obs = np.random.default_rng(0).normal(size=OBS_DIM)  # float64, as the simulator gives
    state = [policy.initial_state((1,))]

    def torch_act() -> np.ndarray:
        with torch.no_grad():
            mean, _, state[0] = policy.step(torch.from_numpy(obs.astype(np.float32))[None], state[0])
            return torch.clamp(mean, low, high)[0].numpy()

    def controller_act() -> np.ndarray:
        return controller.act(obs)

    return controller, controller_act, torch_act, obs


@pytest.mark.parametrize("case", list(CASES))
def test_controller_act_latency(bench, case: str, tmp_path: Path) -> None:
    bench.benchmark.group = f"controller-act-{case}"
    controller, controller_act, torch_act, _ = _build(case, tmp_path)
    for _ in range(50):  # same actions, state fed back, before anything is timed
        np.testing.assert_allclose(controller_act(), torch_act(), atol=1e-5, rtol=0)
    ours, reference = f"act {case}/controller", f"act {case}/torch eager"
    latencies = _interleaved_latencies(bench, (ours, "controller", controller_act),
                                       (reference, "torch eager", torch_act))
    if latencies is None:  # --benchmark-disable: nothing timed
        return
    ours_us, torch_us = latencies
    info = bench.benchmark.extra_info
    met = ours_us["p99"] < P99_TARGET_US
    info["target controller act p99 us"] = P99_TARGET_US
    info["status controller act p99"] = "met" if met else "MISSED"
    note = (
        f"controller p50 {ours_us['p50']:.1f} us, p99 {ours_us['p99']:.1f} us "
        f"(target < {P99_TARGET_US:g}: {'met' if met else 'MISSED'}); "
        f"torch eager p50 {torch_us['p50']:.1f} us, p99 {torch_us['p99']:.1f} us"
    )
    bench.ratio(f"act {case}: controller / torch eager", ours, reference, target=1.0, note=note)
    assert controller.nonfinite_count == controller.nonfinite_action_count == 0
    if enforce_targets() and not met:
        pytest.fail(
            f"target missed: Controller.act p99 {ours_us['p99']:.1f} us >= {P99_TARGET_US:g} us ({case}); "
            "unset BMAML_ENFORCE_TARGETS to report without failing"
        )


def _interleaved_latencies(bench: Any, ours: tuple[str, str, Any], reference: tuple[str, str, Any]) -> Any:
    """Time ``ours`` and ``reference`` (each ``(benchmark key, label, act function)``) in
    interleaved blocks; record their latency percentiles (us) under their labels. Returns
    ``(ours_us, reference_us)``, or None under ``--benchmark-disable``."""
    ours_calls, reference_calls = TimedCalls(ours[2]), TimedCalls(reference[2])
    results = bench.compare(
        (ours[0], ours_calls.block),
        {reference[0]: reference_calls.block},
        work=CALLS_PER_ROUND,
        unit="calls",
        rounds=ROUNDS,
        warmup_rounds=WARMUP_ROUNDS,
    )
    if not results:
        return None
    skip = WARMUP_ROUNDS * CALLS_PER_ROUND
    measured = (ours_calls.percentiles_us(skip), reference_calls.percentiles_us(skip))
    for (_, label, _), latencies in zip((ours, reference), measured):
        for key, value in latencies.items():
            bench.benchmark.extra_info[f"{label} act {key} us"] = round(value, 2)
    return measured


def _toy_gru(tmp_path: Path, name: str, rl2: bool) -> tuple[Controller, ReferencePolicy]:
    model, reference = toy_policy("gru", OBS_DIM, ACT_DIM, hidden_size=100, seed=0, rl2=rl2)
    return Controller(save_model(model, tmp_path / f"{name}.onnx")), reference


def test_controller_act_latency_rl2(bench, tmp_path: Path) -> None:
    bench.benchmark.group = "controller-act-rl2-gru-100"
    rl2, rl2_reference = _toy_gru(tmp_path, "rl2-gru-100", rl2=True)
    maml, maml_reference = _toy_gru(tmp_path, "maml-gru-100", rl2=False)
    assert rl2.rl2 and not maml.rl2
    obs = np.random.default_rng(0).normal(size=OBS_DIM)  # float64, as the simulator gives
    reward = 0.5  # a Python float, as run_control_loop passes it

    # Same actions as the numpy references over 50 steps of a trial (state, previous action and
    # reward fed back), before anything is timed.
    rl2_state, maml_state = rl2_reference.initial_state(1), maml_reference.initial_state(1)
    prev_action, first = np.zeros((1, ACT_DIM)), True
    for _ in range(50):
        x = rl2_reference.rl2_input(obs[None], prev_action, [0.0 if first else reward], [1.0 if first else 0.0])
        expected, rl2_state = rl2_reference.step(x, rl2_state)
        np.testing.assert_allclose(rl2.act(obs, reward=reward, episode_start=False), expected[0], atol=1e-5, rtol=0)
        prev_action, first = rl2_reference.normalise(expected), False
        expected, maml_state = maml_reference.step(obs[None], maml_state)
        np.testing.assert_allclose(maml.act(obs), expected[0], atol=1e-5, rtol=0)

    def rl2_act() -> np.ndarray:
        return rl2.act(obs, reward=reward, episode_start=False)

    def maml_act() -> np.ndarray:
        return maml.act(obs)

    ours, reference = "act gru-100/controller RL^2", "act gru-100/controller MAML"
    latencies = _interleaved_latencies(bench, (ours, "RL^2", rl2_act), (reference, "MAML", maml_act))
    if latencies is None:  # --benchmark-disable: nothing timed
        return
    rl2_us, maml_us = latencies
    info = bench.benchmark.extra_info
    p50_ratio = rl2_us["p50"] / maml_us["p50"]
    info["act p50 RL^2 / MAML"] = round(p50_ratio, 3)
    met = rl2_us["p99"] < P99_TARGET_US
    info["target controller act p99 us"] = P99_TARGET_US
    info["status controller act p99"] = "met" if met else "MISSED"
    note = (
        f"RL^2 p50 {rl2_us['p50']:.1f} us, p99 {rl2_us['p99']:.1f} us (target < {P99_TARGET_US:g}: "
        f"{'met' if met else 'MISSED'}); MAML p50 {maml_us['p50']:.1f} us, p99 {maml_us['p99']:.1f} us; "
        f"p50 RL^2 / MAML {p50_ratio:.2f}"
    )
    # rate(MAML) / rate(RL^2) = act time RL^2 / MAML (> 1: RL^2 slower); reported, no target.
    bench.ratio("act gru-100: MAML / RL^2 = act time RL^2 / MAML", reference, ours, note=note)
    assert rl2.nonfinite_count == rl2.nonfinite_action_count == 0
    assert maml.nonfinite_count == maml.nonfinite_action_count == 0
    if enforce_targets() and not met:
        pytest.fail(
            f"target missed: Controller.act p99 {rl2_us['p99']:.1f} us >= {P99_TARGET_US:g} us (RL^2 gru-100); "
            "unset BMAML_ENFORCE_TARGETS to report without failing"
        )
