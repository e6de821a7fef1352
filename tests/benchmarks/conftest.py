"""Benchmark helpers: throughput records, ratios against same-run references, a summary table.

Every speed target of bmaml_robot is a *ratio* against a reference measured in the same session
(MuJoCo's ``rollout`` and ``batch``, Gymnasium's ``SyncVectorEnv``, a numpy GAE), never an
absolute time. Ratios are computed from each benchmark's *best* round (least disturbed by other
processes on a shared machine) and, for information, from its mean round. They are recorded in
``benchmark.extra_info`` (so they land in ``--benchmark-json``/``--benchmark-autosave`` output) and
printed as a table at the end of the session.

Targets are reported, not asserted, so that noise never fails a run. Set the environment variable
``BMAML_ENFORCE_TARGETS=1`` to turn each missed target into a test failure.

Run with::

    PYTHONPATH=. python -m pytest tests/benchmarks --benchmark-only -q
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import pytest


def enforce_targets() -> bool:
    """True when ``BMAML_ENFORCE_TARGETS`` is set to 1/true/yes: missed targets fail their test."""
    return os.environ.get("BMAML_ENFORCE_TARGETS", "").strip().lower() in ("1", "true", "yes")


@dataclasses.dataclass(frozen=True)
class Throughput:
    """One benchmark's result: ``work`` units (env-steps, elements...) done per round."""

    key: str
    work: int
    unit: str
    best_s: float
    mean_s: float
    stddev_s: float
    rounds: int

    @property
    def best_rate(self) -> float:
        return self.work / self.best_s

    @property
    def mean_rate(self) -> float:
        return self.work / self.mean_s


@dataclasses.dataclass(frozen=True)
class Ratio:
    """``numerator`` rate / ``denominator`` rate (> 1: the numerator is faster)."""

    name: str
    numerator: str
    denominator: str
    best: float | None  # from the best rounds; None if either side was not measured
    mean: float | None
    target: float | None  # required minimum of ``best``; None: reported for information
    note: str = ""

    @property
    def status(self) -> str:
        if self.target is None:
            return "info"
        if self.best is None:
            return "n/a"
        return "met" if self.best >= self.target else "MISSED"


class Registry:
    """Results of the whole session, for ratios across tests and the final summary."""

    def __init__(self) -> None:
        self.throughputs: dict[str, Throughput] = {}
        self.ratios: list[Ratio] = []


_REGISTRY = Registry()


class Bench:
    """Wraps pytest-benchmark's ``benchmark`` fixture for throughput measurements.

    ``run`` times ``target`` with ``benchmark.pedantic`` and records ``work / time``;
    ``ratio`` compares two recorded throughputs and checks an optional target.
    """

    def __init__(self, benchmark: Any, registry: Registry) -> None:
        self.benchmark = benchmark
        self.registry = registry

    def run(
        self,
        key: str,
        target: Callable[[], Any],
        *,
        work: int,
        unit: str = "env-steps",
        rounds: int,
        warmup_rounds: int = 1,
        setup: Callable[[], Any] | None = None,
    ) -> Throughput | None:
        """Time ``rounds`` calls of ``target`` (after ``warmup_rounds`` untimed ones) and record
        the throughput under ``key``. Returns None when benchmarking is disabled."""
        self.benchmark.extra_info.update({"key": key, "work_per_round": work, "unit": unit})
        self.benchmark.pedantic(target, setup=setup, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)
        meta = self.benchmark.stats
        if not meta:  # --benchmark-disable: ran once, untimed
            return None
        stats = meta.stats
        result = Throughput(key, work, unit, stats.min, stats.mean, stats.stddev, stats.rounds)
        self.registry.throughputs[key] = result
        self.benchmark.extra_info[f"{unit}/s (mean)"] = round(result.mean_rate, 1)
        self.benchmark.extra_info[f"{unit}/s (best)"] = round(result.best_rate, 1)
        return result

    def ratio(
        self,
        name: str,
        numerator: str,
        denominator: str,
        *,
        target: float | None = None,
        note: str = "",
    ) -> Ratio:
        """Record ``rate(numerator) / rate(denominator)`` under ``name`` in ``extra_info`` and the
        summary. With a ``target``, a best-round ratio below it fails the test only when
        ``BMAML_ENFORCE_TARGETS=1``."""
        a = self.registry.throughputs.get(numerator)
        b = self.registry.throughputs.get(denominator)
        best = mean = None
        if a is not None and b is not None:
            best = a.best_rate / b.best_rate
            mean = a.mean_rate / b.mean_rate
        result = Ratio(name, numerator, denominator, best, mean, target, note)
        self.registry.ratios.append(result)
        self.benchmark.extra_info[f"ratio {name}"] = None if best is None else round(best, 3)
        self.benchmark.extra_info[f"ratio {name} (mean)"] = None if mean is None else round(mean, 3)
        if target is not None:
            self.benchmark.extra_info[f"target {name}"] = target
        if enforce_targets() and result.status == "MISSED":
            pytest.fail(
                f"target missed: {name} = {best:.3f} < {target} ({numerator} vs {denominator}); "
                "unset BMAML_ENFORCE_TARGETS to report without failing"
            )
        return result


@pytest.fixture
def bench(benchmark: Any) -> Bench:
    """A :class:`Bench` over this test's ``benchmark`` fixture and the session's registry."""
    return Bench(benchmark, _REGISTRY)


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    registry = _REGISTRY
    if not registry.throughputs and not registry.ratios:
        return
    tr = terminalreporter
    tr.section("bmaml_robot benchmark summary")
    if registry.throughputs:
        tr.write_line(f"{'benchmark':<44} {'mean rate':>14} {'best rate':>14} {'cv':>6} {'rounds':>6}  unit")
        for t in registry.throughputs.values():
            cv = t.stddev_s / t.mean_s if t.mean_s else 0.0
            tr.write_line(
                f"{t.key:<44} {t.mean_rate:>14,.0f} {t.best_rate:>14,.0f} {cv:>6.1%} {t.rounds:>6}  {t.unit}/s"
            )
    if registry.ratios:
        tr.write_line("")
        tr.write_line(f"{'ratio (ours / reference, >1: ours faster)':<52} {'best':>7} {'mean':>7} {'target':>7}  status")
        for r in registry.ratios:
            target = "" if r.target is None else f">={r.target:g}"
            line = f"{r.name:<52} {_fmt(r.best, '.2f'):>7} {_fmt(r.mean, '.2f'):>7} {target:>7}  {r.status}"
            tr.write_line(line + (f"  ({r.note})" if r.note else ""))
        missed = [r.name for r in registry.ratios if r.status == "MISSED"]
        mode = "enforced" if enforce_targets() else "reported only; BMAML_ENFORCE_TARGETS=1 enforces them"
        tr.write_line(f"targets missed: {len(missed)} ({mode})" + (": " + ", ".join(missed) if missed else ""))
