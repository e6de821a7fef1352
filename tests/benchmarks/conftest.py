"""Benchmark helpers: interleaved comparisons against same-run references, ratios, a summary.

Every speed target of bmaml_robot is a *ratio* against a reference measured in the same session
(MuJoCo's ``rollout`` and ``batch``, Gymnasium's ``SyncVectorEnv``, a numpy GAE), never an
absolute time. On a shared, noisy machine the load changes from one second to the next, so a
reference timed in one test and ours timed a minute later are not comparable. ``Bench.compare``
therefore *interleaves* them: every round runs each reference once (timed here, in
``benchmark.pedantic``'s untimed ``setup``) and then ours (timed by pytest-benchmark), so each
round's times were taken under the same load. A ratio is the median over rounds of the per-round
ratio ("paired"); the ratio of the best rounds is shown alongside.

Ratios and the references' rates are recorded in ``benchmark.extra_info`` (so they land in
``--benchmark-json``/``--benchmark-autosave`` output) and printed as a table at the end of the
session. Targets are reported, not asserted, so that noise never fails a run; set the environment
variable ``BMAML_ENFORCE_TARGETS=1`` to make each missed target fail its test.

Run with::

    PYTHONPATH=. python -m pytest tests/benchmarks --benchmark-only -q
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest


def enforce_targets() -> bool:
    """True when ``BMAML_ENFORCE_TARGETS`` is 1/true/yes: a missed target fails its test."""
    return os.environ.get("BMAML_ENFORCE_TARGETS", "").strip().lower() in ("1", "true", "yes")


@dataclasses.dataclass(frozen=True)
class Throughput:
    """The round times of one measured function; ``work`` units (env-steps...) per round."""

    key: str
    comparison: str  # the test that measured it; rounds of one comparison are paired
    work: int
    unit: str
    seconds: tuple[float, ...]  # per round, in round order

    @property
    def best_rate(self) -> float:
        return self.work / min(self.seconds)

    @property
    def mean_rate(self) -> float:
        return self.work / statistics.fmean(self.seconds)

    @property
    def cv(self) -> float:
        """Coefficient of variation of the round times."""
        if len(self.seconds) < 2:
            return 0.0
        return statistics.stdev(self.seconds) / statistics.fmean(self.seconds)


@dataclasses.dataclass(frozen=True)
class Ratio:
    """Rate of ``numerator`` / rate of ``denominator`` (> 1: the numerator is faster)."""

    name: str
    numerator: str
    denominator: str
    paired: float | None  # median of per-round ratios (interleaved rounds); None if not measured
    best: float | None  # best round / best round
    target: float | None  # minimum required of ``paired``; None: reported for information
    note: str = ""
    inconclusive: bool = False  # the machine could not show the target (e.g. no free 2nd core)

    @property
    def status(self) -> str:
        if self.target is None:
            return "info"
        if self.paired is None:
            return "n/a"
        if self.paired >= self.target:
            return "met"
        return "inconclusive" if self.inconclusive else "MISSED"


class Registry:
    """Everything measured in the session, for ratios and the final summary."""

    def __init__(self) -> None:
        self.throughputs: dict[str, Throughput] = {}
        self.ratios: list[Ratio] = []


_REGISTRY = Registry()


class Bench:
    """Throughput comparisons over pytest-benchmark's ``benchmark`` fixture (see module doc)."""

    def __init__(self, benchmark: Any, registry: Registry, comparison: str) -> None:
        self.benchmark = benchmark
        self.registry = registry
        self.comparison = comparison

    def compare(
        self,
        timed: tuple[str, Callable[[], Any]],
        references: Mapping[str, Callable[[], Any]],
        *,
        work: int | Mapping[str, int],
        unit: str = "env-steps",
        rounds: int,
        warmup_rounds: int = 1,
    ) -> dict[str, Throughput]:
        """Run ``rounds`` interleaved rounds (after ``warmup_rounds`` untimed ones): each round
        calls every function of ``references`` then the ``timed`` one, which pytest-benchmark
        times and reports. ``work`` is per round, one number for all or one per key.

        Returns the throughputs by key (empty when benchmarking is disabled).
        """
        timed_key, timed_fn = timed
        work_of = (lambda k: work[k]) if isinstance(work, Mapping) else (lambda k: work)
        ref_times: dict[str, list[float]] = {key: [] for key in references}

        def run_references() -> None:
            for key, fn in references.items():
                start = time.perf_counter()
                fn()
                ref_times[key].append(time.perf_counter() - start)

        self.benchmark.pedantic(timed_fn, setup=run_references, rounds=rounds, warmup_rounds=warmup_rounds)
        meta = self.benchmark.stats
        if not meta:  # --benchmark-disable: everything ran once, untimed
            return {}
        measured = {timed_key: tuple(meta.stats.data)}
        measured.update({key: tuple(times[warmup_rounds:]) for key, times in ref_times.items()})
        results = {
            key: Throughput(key, self.comparison, work_of(key), unit, seconds) for key, seconds in measured.items()
        }
        self.registry.throughputs.update(results)
        info = self.benchmark.extra_info
        info["unit"] = unit
        for key, t in results.items():
            info[f"{key}: {unit}/s mean"] = round(t.mean_rate, 1)
            info[f"{key}: {unit}/s best"] = round(t.best_rate, 1)
        return results

    def ratio(
        self,
        name: str,
        numerator: str,
        denominator: str,
        *,
        target: float | None = None,
        note: str = "",
        inconclusive: bool = False,
    ) -> Ratio:
        """Record ``rate(numerator) / rate(denominator)`` under ``name`` (extra_info, summary).
        With a ``target``, a paired ratio below it fails the test only when
        ``BMAML_ENFORCE_TARGETS=1``, and not when ``inconclusive`` (the machine could not show
        it; ``note`` says why)."""
        a = self.registry.throughputs.get(numerator)
        b = self.registry.throughputs.get(denominator)
        paired = best = None
        if a is not None and b is not None:
            best = a.best_rate / b.best_rate
            if a.comparison == b.comparison and len(a.seconds) == len(b.seconds):
                per_round = [(a.work / ta) / (b.work / tb) for ta, tb in zip(a.seconds, b.seconds)]
                paired = statistics.median(per_round)
            else:  # not interleaved: best rounds are the least disturbed estimate
                paired = best
        result = Ratio(name, numerator, denominator, paired, best, target, note, inconclusive)
        self.registry.ratios.append(result)
        info = self.benchmark.extra_info
        info[f"ratio {name}"] = None if paired is None else round(paired, 3)
        info[f"ratio {name} (best/best)"] = None if best is None else round(best, 3)
        if target is not None:
            info[f"target {name}"] = target
            info[f"status {name}"] = result.status
        if enforce_targets() and result.status == "MISSED":
            pytest.fail(
                f"target missed: {name} = {paired:.3f} < {target} ({numerator} vs {denominator}); "
                "unset BMAML_ENFORCE_TARGETS to report without failing"
            )
        return result


@pytest.fixture
def bench(benchmark: Any, request: pytest.FixtureRequest) -> Bench:
    """A :class:`Bench` over this test's ``benchmark`` fixture and the session's registry."""
    return Bench(benchmark, _REGISTRY, request.node.nodeid)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    registry = _REGISTRY
    if not registry.throughputs:  # nothing timed (benchmarks skipped or disabled)
        return
    tr = terminalreporter
    tr.section("bmaml_robot benchmark summary")
    width = max([len(t.key) for t in registry.throughputs.values()] + [9])
    tr.write_line(f"{'benchmark':<{width}} {'mean rate':>14} {'best rate':>14} {'cv':>6} {'rounds':>6}  unit")
    for t in registry.throughputs.values():
        tr.write_line(
            f"{t.key:<{width}} {t.mean_rate:>14,.0f} {t.best_rate:>14,.0f} {t.cv:>6.1%} {len(t.seconds):>6}  {t.unit}/s"
        )
    if registry.ratios:
        width = max(len(r.name) for r in registry.ratios)
        tr.write_line("")
        tr.write_line(f"{'ratio (> 1: first faster)':<{width}} {'paired':>7} {'best':>7} {'target':>7}  status")
        for r in registry.ratios:
            target = "" if r.target is None else f">={r.target:g}"
            line = f"{r.name:<{width}} {_fmt(r.paired):>7} {_fmt(r.best):>7} {target:>7}  {r.status}"
            tr.write_line(line + (f"  ({r.note})" if r.note else ""))
        missed = [r.name for r in registry.ratios if r.status == "MISSED"]
        unsure = [r.name for r in registry.ratios if r.status == "inconclusive"]
        mode = "enforced" if enforce_targets() else "reported only; BMAML_ENFORCE_TARGETS=1 enforces them"
        tr.write_line(f"targets missed: {len(missed)} ({mode})" + (": " + "; ".join(missed) if missed else ""))
        if unsure:
            tr.write_line(f"targets not shown on this machine (never enforced): {len(unsure)}: " + "; ".join(unsure))
        tr.write_line("paired: median over interleaved rounds of the per-round ratio; best: best round / best round")


FRAME_SKIP = 5  # HalfCheetah-v5's, and ours


def halfcheetah_rollout_s(nbatch: int, horizon: int, *, repeats: int = 1, threads: int = 1) -> float:
    """Best-of-3 time of ``mujoco.rollout`` (open loop, a persistent pool of ``threads``) stepping
    ``nbatch`` HalfCheetahs for ``horizon`` control steps of ``FRAME_SKIP`` substeps, ``repeats``
    times: what the physics of that many env-steps alone costs."""
    import mujoco
    import numpy as np
    from mujoco import rollout as mj_rollout

    from bmaml_robot.envs.assets import asset_path

    model = mujoco.MjModel.from_xml_path(asset_path("HalfCheetah"))
    nstep = FRAME_SKIP * horizon
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    rng = np.random.default_rng(0)
    data = mujoco.MjData(model)
    initial_state = np.empty((nbatch, mujoco.mj_stateSize(model, spec)))
    for i in range(nbatch):  # HalfCheetah-v5's reset distribution
        mujoco.mj_resetData(model, data)
        data.qpos[:] = model.qpos0 + rng.uniform(-0.1, 0.1, model.nq)
        data.qvel[:] = 0.1 * rng.standard_normal(model.nv)
        mujoco.mj_getState(model, data, initial_state[i], spec)
    actions = rng.uniform(-0.3, 0.3, (nbatch, horizon, model.nu))
    control = np.ascontiguousarray(np.repeat(actions, FRAME_SKIP, axis=1))
    state = np.empty((nbatch, nstep, initial_state.shape[1]))
    sensordata = np.empty((nbatch, nstep, model.nsensordata))
    pool_threads = 0 if threads == 1 else threads  # 0: the calling thread, as ours with 1 thread
    datas = [mujoco.MjData(model) for _ in range(max(1, pool_threads))]
    times = []
    with mj_rollout.Rollout(nthread=pool_threads) as pool:
        for round_ in range(4):  # the first is a warm-up
            start = time.perf_counter()
            for _ in range(repeats):
                pool.rollout(model, datas, initial_state, control, nstep=nstep, state=state, sensordata=sensordata)
            if round_ > 0:
                times.append(time.perf_counter() - start)
    assert np.isfinite(state[:, -1]).all()
    return min(times)


class TimedStep:
    """Wraps ``env.step`` and accumulates the time spent inside it."""

    def __init__(self, env: Any) -> None:
        self.inner = env.step
        self.seconds = 0.0
        env.step = self

    def __call__(self, actions: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.inner(actions)
        finally:
            self.seconds += time.perf_counter() - start


@pytest.fixture(scope="session")
def rollout_physics() -> Callable[..., float]:
    """``halfcheetah_rollout_s``: the physics reference of a meta-iteration's env-steps."""
    return halfcheetah_rollout_s


@pytest.fixture(scope="session")
def timed_step() -> type[TimedStep]:
    """``TimedStep``: wrap an env's ``step`` to time what happens inside it."""
    return TimedStep
