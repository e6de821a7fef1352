"""The statistics of a comparison: final performance per variant, pairwise tests, variance
tests and the held-out evaluation, as plain data (no text, no figures, no files).

Shapes: ``S`` seeds (runs) of a variant, ``T`` iterations, ``K`` evaluated adaptation steps.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bmaml_robot.compare.runs import Run, Variant
from bmaml_robot.stats import (
    BootstrapResult,
    MeanCI,
    VarianceTest,
    WelchResult,
    bootstrap_difference,
    brown_forsythe,
    detectable_effect,
    f_test_variance,
    holm,
    mean_ci,
    pooled_std,
    welch_test,
)

#: The final-performance metrics of a run (in this order everywhere) and their names.
METRIC_NAMES = {"return_after": "return after adaptation", "return_before": "return before adaptation",
                "gain": "adaptation gain (after - before)"}
#: The metrics the findings and the variance tests are about (not ``return_before``).
KEY_METRICS = ("return_after", "gain")
#: The held-out values of a run (bmaml-eval) and their names; ``after`` and ``gain`` are tested.
HELD_OUT_NAMES = {"after": "held-out return after adaptation", "gain": "held-out adaptation gain",
                  "before": "held-out return before adaptation"}
HELD_OUT_TESTED = ("after", "gain")
#: Evaluation settings that must be equal for held-out results to be compared.
EVAL_SETTINGS = ("steps", "num_tasks", "episodes_per_task", "seed", "horizon")
BOOTSTRAP_SEED = 0
BOOTSTRAP_RESAMPLES = 10_000


# ----------------------------------------------------------------------------- data
@dataclasses.dataclass
class VariantSummary:
    """Final performance of one variant over its seeds."""

    label: str
    seeds: list[int]
    final: dict[str, np.ndarray]
    """metric -> float64 [S]: each run's mean over the final window."""
    ci: dict[str, MeanCI]
    """metric -> MeanCI over seeds."""
    within_run_std: np.ndarray
    """float64 [S]: std of return_after over the final window, per run (iteration noise)."""


@dataclasses.dataclass
class PairTest:
    """Welch test and bootstrap of ``mean(a) - mean(b)`` over seeds, Holm-adjusted within ``metric``."""

    metric: str
    a: str
    b: str
    welch: WelchResult
    bootstrap: BootstrapResult
    p_holm: float
    detectable: float = math.nan
    """The smallest |mean(a) - mean(b)|, in the metric's units, these seeds detect with 80% power
    (``stats.detectable_effect`` x the pooled std): the power statement of a null result."""


@dataclasses.dataclass
class VariancePair:
    """Tests of equal variance across seeds of two variants."""

    metric: str
    a: str
    b: str
    std_a: float
    std_b: float
    f_ratio: float
    f_p: float
    brown_forsythe_p: float


@dataclasses.dataclass
class HeldOutVariant:
    """One variant's held-out evaluation over its evaluated seeds."""

    label: str
    runs: list[str]
    seeds: list[int]
    iterations: list[int]
    """Meta-iterations behind each evaluated policy."""
    values: dict[str, np.ndarray]
    """``before`` (step 0), ``after`` (after ``HeldOut.step`` steps), ``gain``: float64 [S],
    each run's mean over tasks."""
    ci: dict[str, MeanCI]
    per_step: list[MeanCI]
    """[K + 1]: MeanCI over seeds of the held-out return after 0, 1, ..., K steps."""


@dataclasses.dataclass
class HeldOut:
    """``bmaml-eval`` results of the compared runs, summarised per variant and tested pairwise."""

    settings: dict[str, Any]
    step: int
    """The adaptation step tested: the runs' inner steps per meta-iteration (training's objective),
    at most the evaluated steps."""
    variants: list[HeldOutVariant]
    tests: list[PairTest]
    missing: list[str]
    """Runs without an eval.json (left out of this section)."""


@dataclasses.dataclass
class Comparison:
    """Everything ``bmaml-compare`` computed (``to_dict`` is ``comparison.json``)."""

    variants: list[Variant]
    group_by: tuple[str, ...]
    length: int
    """L: iterations 0 .. L - 1 are compared (the shortest run's length)."""
    window: tuple[int, int]
    """[start, stop) iterations of the final window."""
    smooth_window: int
    summaries: list[VariantSummary]
    pair_tests: list[PairTest]
    variance_overall: dict[str, VarianceTest | None]
    variance_pairs: list[VariancePair]
    findings: list[str]
    """Plain-language statements (``report.findings``)."""
    command: str = ""
    left_out: list[Run] = dataclasses.field(default_factory=list)
    """Runs shorter than ``min_iterations``, not compared."""
    held_out: HeldOut | None = None
    """Held-out evaluation of the runs (when their eval.json files were found)."""
    x_axis: str = "iteration"
    """What the curves are aligned on: ``iteration`` or ``env_steps`` (``runs.X_AXES``)."""
    env_step_grid: np.ndarray | None = None
    """With ``env_steps``: float64 [length], the environment steps of each compared point."""
    out_dir: Path | None = None
    files: list[Path] = dataclasses.field(default_factory=list)

    @property
    def family(self) -> str:
        return self.variants[0].runs[0].config.family

    def to_dict(self) -> dict[str, Any]:
        """Every number, JSON-ready (non-finite floats as None)."""
        return _finite({
            "family": self.family,
            "group_by": list(self.group_by),
            "x_axis": self.x_axis,
            "env_step_grid": None if self.env_step_grid is None else [float(x) for x in self.env_step_grid],
            "aligned_iterations": self.length,
            "final_window": list(self.window),
            "smoothing_window": self.smooth_window,
            "command": self.command,
            "left_out": [{"path": str(r.path), "iterations": r.iterations} for r in self.left_out],
            "variants": [_variant_dict(v, s) for v, s in zip(self.variants, self.summaries)],
            "pairwise_tests": [_pair_dict(t) for t in self.pair_tests],
            "variance_tests": {
                "overall_brown_forsythe": {m: (v._asdict() if v is not None else None)
                                           for m, v in self.variance_overall.items()},
                "pairwise": [dataclasses.asdict(p) for p in self.variance_pairs],
            },
            "findings": self.findings,
            "held_out": None if self.held_out is None else _held_out_dict(self.held_out),
        })


def _variant_dict(v: Variant, s: VariantSummary) -> dict[str, Any]:
    return {
        "label": s.label,
        "runs": [{"path": str(r.path), "seed": r.config.seed, "iterations": r.iterations,
                  "planned": r.config.num_iterations, "finished": r.finished,
                  "cut_from": r.cut_from} for r in v.runs],
        "other_differences": v.other_differences,
        "final": {m: [float(x) for x in s.final[m]] for m in METRIC_NAMES},
        "mean_ci": {m: s.ci[m]._asdict() for m in METRIC_NAMES},
        "within_run_std": [float(x) for x in s.within_run_std],
    }


def _pair_dict(t: PairTest) -> dict[str, Any]:
    return {"metric": t.metric, "a": t.a, "b": t.b, "welch": t.welch._asdict(),
            "bootstrap": t.bootstrap._asdict(), "p_holm": t.p_holm, "detectable_80": t.detectable}


def _held_out_dict(h: HeldOut) -> dict[str, Any]:
    return {
        "settings": h.settings,
        "tested_step": h.step,
        "missing": h.missing,
        "variants": [{"label": v.label, "runs": v.runs, "seeds": v.seeds, "iterations": v.iterations,
                      "values": {k: [float(x) for x in a] for k, a in v.values.items()},
                      "mean_ci": {k: ci._asdict() for k, ci in v.ci.items()},
                      "per_step": [ci._asdict() for ci in v.per_step]}
                     for v in h.variants],
        "pairwise_tests": [_pair_dict(t) for t in h.tests],
    }


def _finite(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# ----------------------------------------------------------------------------- statistics
def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over up to ``window`` iterations along the last axis
    (iteration i averages i - window + 1 .. i; the first ones average what there is).
    ``values`` [..., T] -> float64 [..., T]."""
    if window <= 1:
        return values.astype(np.float64)
    cumulative = np.cumsum(values, axis=-1, dtype=np.float64)
    out = cumulative.copy()
    out[..., window:] = cumulative[..., window:] - cumulative[..., :-window]
    counts = np.minimum(np.arange(1, values.shape[-1] + 1), window)
    return out / counts


def _final_values(run: Run, window: tuple[int, int]) -> dict[str, float]:
    """The run's mean of each metric over the iterations ``[start, stop)``."""
    start, stop = window
    before = float(run.return_before[start:stop].mean())
    after = float(run.return_after[start:stop].mean())
    return {"return_after": after, "return_before": before, "gain": after - before}


def summarise(variant: Variant, window: tuple[int, int]) -> VariantSummary:
    """The variant's final values per seed [S] and their mean with its t-interval."""
    finals = [_final_values(run, window) for run in variant.runs]
    final = {m: np.array([f[m] for f in finals]) for m in METRIC_NAMES}
    start, stop = window
    within = np.array([run.return_after[start:stop].std(ddof=1) if stop - start > 1 else math.nan
                       for run in variant.runs])
    return VariantSummary(variant.label, variant.seeds, final, {m: mean_ci(final[m]) for m in METRIC_NAMES}, within)


def pair_tests(metric: str, groups: Sequence[tuple[str, np.ndarray]]) -> list[PairTest]:
    """Welch test and seeded bootstrap of every pair of ``(label, values [S])`` with at least 2
    values each, Holm-adjusted over these pairs."""
    tests = [PairTest(metric, label_a, label_b, welch_test(a, b),
                      bootstrap_difference(a, b, num_resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED), math.nan,
                      detectable_effect(a.size, b.size) * pooled_std(a, b))
             for (label_a, a), (label_b, b) in itertools.combinations(groups, 2) if a.size >= 2 and b.size >= 2]
    for test, adjusted in zip(tests, holm([t.welch.p_value for t in tests])):
        test.p_holm = float(adjusted)
    return tests


def variance_pairs(metric: str, summaries: Sequence[VariantSummary]) -> list[VariancePair]:
    """F-test and Brown-Forsythe of every pair of variants with at least 2 seeds each."""
    pairs = []
    for sa, sb in itertools.combinations(summaries, 2):
        if len(sa.seeds) < 2 or len(sb.seeds) < 2:
            continue
        a, b = sa.final[metric], sb.final[metric]
        f = f_test_variance(a, b)
        pairs.append(VariancePair(metric, sa.label, sb.label, float(a.std(ddof=1)), float(b.std(ddof=1)),
                                  f.ratio, f.p_value, brown_forsythe(a, b).p_value))
    return pairs


def _overall_spread(metric: str, summaries: Sequence[VariantSummary]) -> VarianceTest | None:
    """Brown-Forsythe over all variants with at least 2 seeds (None with fewer than 2 of them)."""
    groups = [s.final[metric] for s in summaries if len(s.seeds) >= 2]
    return brown_forsythe(*groups) if len(groups) >= 2 else None


def analyse(variants: list[Variant], group_by: tuple[str, ...], last: int, smooth_window: int) -> Comparison:
    """All statistics of a comparison (no files; ``findings`` is left empty: ``report.findings``)."""
    length = min(v.common_length for v in variants)
    window = (max(0, length - last), length)
    summaries = [summarise(variant, window) for variant in variants]
    tests = [t for metric in METRIC_NAMES for t in pair_tests(metric, [(s.label, s.final[metric]) for s in summaries])]
    spreads = [p for metric in KEY_METRICS for p in variance_pairs(metric, summaries)]
    overall = {metric: _overall_spread(metric, summaries) for metric in KEY_METRICS}
    return Comparison(variants, group_by, length, window, smooth_window, summaries, tests, overall, spreads, [])


# ----------------------------------------------------------------------------- held-out evaluation
def eval_path(run: Run, eval_dir: Path | None) -> Path:
    """Where a run's eval.json is: ``eval_dir/<run name>/eval.json``, else ``<run>/eval.json``."""
    return (eval_dir / run.name if eval_dir is not None else run.path) / "eval.json"


@dataclasses.dataclass
class _Evaluation:
    """What the comparison uses of one run's eval.json."""

    run: Run
    settings: dict[str, Any]
    per_task: np.ndarray
    """float64 [tasks, K + 1]: mean return per task after 0 .. K adaptation steps."""
    iterations: int


def _read_evaluation(run: Run, path: Path) -> _Evaluation:
    """ValueError when ``path`` is not a bmaml-eval result or evaluates another family."""
    try:
        data = json.loads(path.read_text())
        per_task = np.array([t["mean_return"] for t in data["per_task"]], dtype=float)
        settings = {k: data["evaluation"][k] for k in EVAL_SETTINGS}
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"eval {path}: not an eval.json written by bmaml-eval ({error})") from error
    if data.get("run_config", {}).get("family") != run.config.family:
        raise ValueError(f"eval {path}: evaluates family {data.get('run_config', {}).get('family')!r}, "
                         f"but run {run.name} is {run.config.family}")
    return _Evaluation(run, settings, per_task, int(data.get("iterations_trained", -1)))


def _check_same_settings(found: dict[str, _Evaluation]) -> None:
    """ValueError listing the runs per setting when the evaluations' settings differ."""
    distinct: dict[str, list[str]] = {}
    for name, evaluation in found.items():
        distinct.setdefault(json.dumps(evaluation.settings, sort_keys=True), []).append(name)
    if len(distinct) > 1:
        listed = "; ".join(f"{settings}: {', '.join(names)}" for settings, names in distinct.items())
        raise ValueError(f"eval: the runs were evaluated with different settings ({listed}); evaluate them with "
                         f"the same --adapt-steps, --tasks, --episodes and --seed")


def _held_out_variant(label: str, items: Sequence[_Evaluation], step: int) -> HeldOutVariant:
    """Per-seed means over tasks and their t-intervals, for the evaluated runs of one variant."""
    per_step = np.stack([item.per_task.mean(axis=0) for item in items])  # [S, K + 1]
    values = {"before": per_step[:, 0], "after": per_step[:, step], "gain": per_step[:, step] - per_step[:, 0]}
    return HeldOutVariant(label, [i.run.name for i in items], [i.run.config.seed for i in items],
                          [i.iterations for i in items], values, {k: mean_ci(v) for k, v in values.items()},
                          [mean_ci(per_step[:, k]) for k in range(per_step.shape[1])])


def held_out_evaluation(variants: list[Variant], eval_dir: Path | None) -> HeldOut | None:
    """Per-variant summary and pairwise tests of the runs' ``bmaml-eval`` results (None if no run
    has one). ValueError when the evaluations were made with different settings."""
    found: dict[str, _Evaluation] = {}
    missing = []
    for run in (run for variant in variants for run in variant.runs):
        path = eval_path(run, eval_dir)
        if path.is_file():
            found[run.name] = _read_evaluation(run, path)
        else:
            missing.append(run.name)
    if not found:
        return None
    _check_same_settings(found)
    settings = next(iter(found.values())).settings
    step = min(int(settings["steps"]), variants[0].runs[0].config.adapt_steps)
    summaries = [_held_out_variant(v.label, items, step) for v in variants
                 if (items := [found[r.name] for r in v.runs if r.name in found])]
    tests = [t for metric in HELD_OUT_TESTED
             for t in pair_tests(metric, [(s.label, s.values[metric]) for s in summaries])]
    return HeldOut(settings, step, summaries, tests, missing)
