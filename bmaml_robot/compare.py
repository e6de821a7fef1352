"""Compare variants of meta-training across seeds: learning curves, final performance, tests.

    bmaml-compare runs/nav-* --group-by policy,recurrence --out reports/nav
    from bmaml_robot.compare import compare
    comparison = compare(["runs/a", "runs/b", ...], group_by=("policy", "recurrence"))

Runs are grouped into variants by the config keys of ``group_by`` (each variant has one run per
seed). From every run's ``metrics.jsonl`` it reads ``return_before`` and ``return_after`` (mean
return per episode of the meta-batch before and after adaptation) per meta-iteration, and writes
to ``out``:

- ``report.md``: the runs, how they were aligned, the final-performance table (per run the mean
  of the last ``last`` iterations, then per variant the mean over seeds with a 95% t-CI), the
  adaptation gain (after - before), pairwise Welch tests with Hedges' g, a seeded bootstrap CI and
  Holm-adjusted p-values, tests of a difference in variance across seeds (Brown-Forsythe and F),
  and plain-language findings;
- ``curves.png`` (before / after adaptation per meta-iteration, mean over seeds with a 95% band),
  ``gain.png`` (after - before), ``final.png`` (every seed's final value and the variant means);
- ``comparison.json``: every number of the report.

With ``bmaml-eval`` results of the runs (``EVAL_DIR/<run name>/eval.json`` with ``--eval-dir``,
else ``RUN_DIR/eval.json`` where present, all made with the same settings), the report adds a
held-out section: per variant the mean over seeds of each run's held-out return before and after
adaptation and the gain, with pairwise Welch tests, Holm, Hedges' g and a bootstrap CI.

Runs in progress and runs of different lengths are fine: every comparison uses the iterations all
its runs have (``0 .. L - 1``, ``L`` the length of the shortest run), and the report says so and
lists each run's length. Runs given to one comparison must share the family, the horizon and the
meta-batch size (otherwise their returns are not comparable), and the number of inner steps
unless it is a grouping key; a ValueError names the runs and the differing keys.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bmaml_robot.checkpoint import read_jsonl, write_text_atomic
from bmaml_robot.config import FIELDS, TrainConfig, read_yaml, run_config
from bmaml_robot.policies import POLICY_KINDS, RECURRENCE_MODES
from bmaml_robot.stats import (
    BootstrapResult,
    VarianceTest,
    WelchResult,
    bootstrap_difference,
    brown_forsythe,
    f_test_variance,
    holm,
    mean_ci,
    welch_test,
)
from bmaml_robot.train import CONFIG, FINAL_POLICY, METRICS

DEFAULT_GROUP_BY = ("policy", "recurrence")
#: Keys every run of one comparison must share (returns are not comparable otherwise).
SAME_KEYS = ("family", "horizon", "num_tasks", "episodes_per_task")
#: Keys that must be shared unless they are grouping keys.
SAME_UNLESS_GROUPED = ("num_steps", "action_scale")
#: Keys expected to differ between runs of one variant (not reported as differences).
RUN_KEYS = ("seed", "num_batches", "num_threads", "checkpoint_every")
METRIC_NAMES = {"return_after": "return after adaptation", "return_before": "return before adaptation",
                "gain": "adaptation gain (after - before)"}
BOOTSTRAP_SEED = 0
BOOTSTRAP_RESAMPLES = 10_000


# ----------------------------------------------------------------------------- runs
@dataclasses.dataclass
class Run:
    """One training run's config and learning curves."""

    path: Path
    config: TrainConfig
    return_before: np.ndarray
    """float64 [iterations]: mean return of the meta-batch before adaptation, per meta-iteration."""
    return_after: np.ndarray
    """float64 [iterations]: after adaptation (the validation episodes)."""
    finished: bool
    """``policy.pt`` is there and every planned iteration is in the metrics."""

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def iterations(self) -> int:
        return int(self.return_after.size)


def load_run_metrics(run_dir: str | Path) -> Run:
    """Read ``config.yaml`` and ``metrics.jsonl`` of ``run_dir``; ValueError naming the run and
    what is wrong (not a directory, no config, no or empty metrics, missing keys, gaps)."""
    path = Path(run_dir)
    if not path.is_dir():
        raise ValueError(f"run {str(path)!r}: expected a run directory (from bmaml-train), got "
                         f"{'a file' if path.exists() else 'no such directory'}")
    if not (path / CONFIG).is_file():
        raise ValueError(f"run {path}: no {CONFIG}; is it a bmaml-train run directory?")
    try:
        config = run_config(read_yaml(path / CONFIG), source=str(path / CONFIG))  # old runs keep their convention
    except ValueError as error:
        raise ValueError(f"run {path}: {CONFIG} is not a valid config ({error})") from error
    if not (path / METRICS).is_file():
        raise ValueError(f"run {path}: no {METRICS} (the run has not started)")
    records = read_jsonl(path / METRICS)
    if not records:
        raise ValueError(f"run {path}: {METRICS} is empty (no meta-iteration finished yet)")
    for index, record in enumerate(records):
        missing = [k for k in ("iteration", "return_before", "return_after") if k not in record]
        if missing:
            raise ValueError(f"run {path}: {METRICS} line {index + 1} lacks {missing}")
        if record["iteration"] != index:
            raise ValueError(f"run {path}: {METRICS} line {index + 1} is iteration {record['iteration']}, "
                             f"expected {index} (iterations must start at 0 without gaps)")
    before = np.array([float(r["return_before"]) for r in records])
    after = np.array([float(r["return_after"]) for r in records])
    if not (np.all(np.isfinite(before)) and np.all(np.isfinite(after))):
        raise ValueError(f"run {path}: {METRICS} has non-finite returns")
    finished = (path / FINAL_POLICY).is_file() and len(records) >= config.num_batches
    return Run(path, config, before, after, finished)


def check_group_by(group_by: Sequence[str]) -> tuple[str, ...]:
    keys = tuple(k.strip() for k in group_by if k.strip())
    if not keys:
        raise ValueError("group_by: expected at least one config key, got none")
    unknown = [k for k in keys if k not in FIELDS]
    if unknown:
        raise ValueError(f"group_by: unknown config keys {unknown}; valid keys are {sorted(FIELDS)}")
    if "seed" in keys:
        raise ValueError("group_by: 'seed' cannot be a grouping key (seeds are the replicates of a variant)")
    return keys


def check_comparable(runs: Sequence[Run], group_by: Sequence[str]) -> None:
    """ValueError naming the runs and the differing keys when ``runs`` cannot be compared."""
    keys = list(SAME_KEYS) + [k for k in SAME_UNLESS_GROUPED if k not in group_by]
    problems = []
    for key in keys:
        values: dict[str, list[str]] = {}
        for run in runs:
            values.setdefault(repr(getattr(run.config, key)), []).append(run.name)
        if len(values) > 1:
            listed = "; ".join(f"{key}={value}: {', '.join(names)}" for value, names in values.items())
            problems.append(listed)
    if problems:
        raise ValueError("runs: cannot compare runs that differ in " + " | ".join(problems)
                         + f" (every run of one comparison must share {', '.join(keys)})")


# ----------------------------------------------------------------------------- variants
def variant_label(config: TrainConfig, group_by: Sequence[str]) -> str:
    """``"gru-outer"``, ``"mlp"`` (recurrence means nothing to an MLP), ``"fast_lr=0.05"``..."""
    parts = []
    for key in group_by:
        value = getattr(config, key)
        if key == "recurrence" and config.policy == "mlp" and "policy" in group_by:
            continue
        if key in ("policy", "recurrence", "family"):
            parts.append(str(value))
        else:
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
            parts.append(f"{key}={shown}")
    return "-".join(parts)


def _sort_key(config: TrainConfig, group_by: Sequence[str]) -> tuple:
    key: list[Any] = []
    for name in group_by:
        value = getattr(config, name)
        if name == "policy":
            key.append((0, POLICY_KINDS.index(value), ""))
        elif name == "recurrence":
            key.append((0, -1 if config.policy == "mlp" else RECURRENCE_MODES.index(value), ""))
        elif isinstance(value, (int, float)):
            key.append((1, float(value), ""))
        else:
            key.append((2, 0, str(value)))
    return tuple(key)


@dataclasses.dataclass
class Variant:
    label: str
    runs: list[Run]
    other_differences: list[str]
    """Config keys (beyond the grouping keys and seed/length/threads) that differ between its runs."""

    @property
    def seeds(self) -> list[int]:
        return [r.config.seed for r in self.runs]

    @property
    def common_length(self) -> int:
        return min(r.iterations for r in self.runs)


def group_runs(runs: Sequence[Run], group_by: Sequence[str]) -> list[Variant]:
    groups: dict[str, list[Run]] = {}
    for run in sorted(runs, key=lambda r: (_sort_key(r.config, group_by), r.config.seed, r.name)):
        groups.setdefault(variant_label(run.config, group_by), []).append(run)
    variants = []
    for label, members in groups.items():
        seen: dict[int, Run] = {}
        for run in members:
            twin = seen.get(run.config.seed)
            if twin is not None:
                differing = [k for k in FIELDS if k not in RUN_KEYS
                             and getattr(twin.config, k) != getattr(run.config, k)]
                if differing:
                    raise ValueError(f"runs: {twin.name} and {run.name} fall into one variant ({label}) with the same "
                                     f"seed {run.config.seed} but differ in {differing}: add them to group_by "
                                     f"(--group-by)")
                raise ValueError(f"runs: {twin.name} and {run.name} are the same variant ({label}) "
                                 f"with the same seed {run.config.seed}: they are one replicate, not two")
            seen[run.config.seed] = run
        ignored = set(group_by) | set(RUN_KEYS)
        differing = sorted(k for k in FIELDS if k not in ignored
                           and len({repr(getattr(r.config, k)) for r in members}) > 1)
        variants.append(Variant(label, members, differing))
    return variants


# ----------------------------------------------------------------------------- statistics
def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over up to ``window`` iterations along the last axis
    (iteration i averages i - window + 1 .. i; the first ones average what there is)."""
    if window <= 1:
        return values.astype(np.float64)
    cumulative = np.cumsum(values, axis=-1, dtype=np.float64)
    out = cumulative.copy()
    out[..., window:] = cumulative[..., window:] - cumulative[..., :-window]
    counts = np.minimum(np.arange(1, values.shape[-1] + 1), window)
    return out / counts


@dataclasses.dataclass
class VariantSummary:
    label: str
    seeds: list[int]
    final: dict[str, np.ndarray]
    """metric -> float64 [seeds]: each run's mean over the final window."""
    ci: dict[str, Any]
    """metric -> MeanCI over seeds."""
    within_run_std: np.ndarray
    """float64 [seeds]: std of return_after over the final window, per run (iteration noise)."""


@dataclasses.dataclass
class PairTest:
    metric: str
    a: str
    b: str
    welch: WelchResult
    bootstrap: BootstrapResult
    p_holm: float


@dataclasses.dataclass
class VariancePair:
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
    label: str
    runs: list[str]
    seeds: list[int]
    iterations: list[int]
    """Meta-iterations behind each evaluated policy."""
    values: dict[str, np.ndarray]
    """``before`` (step 0), ``after`` (after ``HeldOut.step`` steps), ``gain``: float64 [seeds],
    each run's mean over tasks."""
    ci: dict[str, Any]
    per_step: list[Any]
    """MeanCI over seeds of the held-out return after 0, 1, ..., K steps."""


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


HELD_OUT_NAMES = {"after": "held-out return after adaptation", "gain": "held-out adaptation gain",
                  "before": "held-out return before adaptation"}
#: Evaluation settings that must be equal for held-out results to be compared.
EVAL_SETTINGS = ("steps", "num_tasks", "episodes_per_task", "seed", "horizon")


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
    command: str = ""
    left_out: list[Run] = dataclasses.field(default_factory=list)
    """Runs shorter than ``min_iterations``, not compared."""
    held_out: HeldOut | None = None
    """Held-out evaluation of the runs (when their eval.json files were found)."""
    out_dir: Path | None = None
    files: list[Path] = dataclasses.field(default_factory=list)

    @property
    def family(self) -> str:
        return self.variants[0].runs[0].config.family

    def to_dict(self) -> dict[str, Any]:
        return _finite({
            "family": self.family,
            "group_by": list(self.group_by),
            "aligned_iterations": self.length,
            "final_window": list(self.window),
            "smoothing_window": self.smooth_window,
            "command": self.command,
            "left_out": [{"path": str(r.path), "iterations": r.iterations} for r in self.left_out],
            "variants": [
                {
                    "label": s.label,
                    "runs": [{"path": str(r.path), "seed": r.config.seed, "iterations": r.iterations,
                              "planned": r.config.num_batches, "finished": r.finished} for r in v.runs],
                    "other_differences": v.other_differences,
                    "final": {m: [float(x) for x in s.final[m]] for m in METRIC_NAMES},
                    "mean_ci": {m: s.ci[m]._asdict() for m in METRIC_NAMES},
                    "within_run_std": [float(x) for x in s.within_run_std],
                }
                for v, s in zip(self.variants, self.summaries)
            ],
            "pairwise_tests": [
                {"metric": t.metric, "a": t.a, "b": t.b, "welch": t.welch._asdict(),
                 "bootstrap": t.bootstrap._asdict(), "p_holm": t.p_holm}
                for t in self.pair_tests
            ],
            "variance_tests": {
                "overall_brown_forsythe": {m: (v._asdict() if v is not None else None)
                                           for m, v in self.variance_overall.items()},
                "pairwise": [dataclasses.asdict(p) for p in self.variance_pairs],
            },
            "findings": self.findings,
            "held_out": None if self.held_out is None else {
                "settings": self.held_out.settings,
                "tested_step": self.held_out.step,
                "missing": self.held_out.missing,
                "variants": [{"label": v.label, "runs": v.runs, "seeds": v.seeds, "iterations": v.iterations,
                              "values": {k: [float(x) for x in a] for k, a in v.values.items()},
                              "mean_ci": {k: ci._asdict() for k, ci in v.ci.items()},
                              "per_step": [ci._asdict() for ci in v.per_step]}
                             for v in self.held_out.variants],
                "pairwise_tests": [{"metric": t.metric, "a": t.a, "b": t.b, "welch": t.welch._asdict(),
                                    "bootstrap": t.bootstrap._asdict(), "p_holm": t.p_holm}
                                   for t in self.held_out.tests],
            },
        })


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


def _final_values(run: Run, window: tuple[int, int]) -> dict[str, float]:
    start, stop = window
    before = float(run.return_before[start:stop].mean())
    after = float(run.return_after[start:stop].mean())
    return {"return_after": after, "return_before": before, "gain": after - before}


def analyse(variants: list[Variant], group_by: tuple[str, ...], last: int, smooth_window: int) -> Comparison:
    """All statistics of a comparison (no files)."""
    length = min(v.common_length for v in variants)
    window = (max(0, length - last), length)
    summaries = []
    for variant in variants:
        finals = [_final_values(run, window) for run in variant.runs]
        final = {m: np.array([f[m] for f in finals]) for m in METRIC_NAMES}
        within = np.array([run.return_after[window[0]:window[1]].std(ddof=1) if window[1] - window[0] > 1
                           else math.nan for run in variant.runs])
        summaries.append(VariantSummary(variant.label, variant.seeds, final,
                                        {m: mean_ci(final[m]) for m in METRIC_NAMES}, within))

    pair_tests: list[PairTest] = []
    variance_pairs: list[VariancePair] = []
    for metric in METRIC_NAMES:
        tests = []
        for sa, sb in itertools.combinations(summaries, 2):
            if len(sa.seeds) < 2 or len(sb.seeds) < 2:
                continue
            a, b = sa.final[metric], sb.final[metric]
            welch = welch_test(a, b)
            boot = bootstrap_difference(a, b, num_resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED)
            tests.append(PairTest(metric, sa.label, sb.label, welch, boot, math.nan))
            if metric != "return_before":
                f = f_test_variance(a, b)
                bf = brown_forsythe(a, b)
                variance_pairs.append(VariancePair(metric, sa.label, sb.label, float(a.std(ddof=1)),
                                                   float(b.std(ddof=1)), f.ratio, f.p_value, bf.p_value))
        for test, adjusted in zip(tests, holm([t.welch.p_value for t in tests])):
            test.p_holm = float(adjusted)
        pair_tests.extend(tests)

    overall: dict[str, VarianceTest | None] = {}
    for metric in ("return_after", "gain"):
        groups = [s.final[metric] for s in summaries if len(s.seeds) >= 2]
        overall[metric] = brown_forsythe(*groups) if len(groups) >= 2 else None

    comparison = Comparison(variants, group_by, length, window, smooth_window, summaries, pair_tests,
                            overall, variance_pairs, [])
    comparison.findings = findings(comparison)
    return comparison


def eval_path(run: Run, eval_dir: Path | None) -> Path:
    """Where a run's eval.json is: ``eval_dir/<run name>/eval.json``, else ``<run>/eval.json``."""
    return (eval_dir / run.name if eval_dir is not None else run.path) / "eval.json"


def held_out_evaluation(variants: list[Variant], eval_dir: Path | None) -> HeldOut | None:
    """Per-variant summary and pairwise tests of the runs' ``bmaml-eval`` results (None if no run
    has one). ValueError when the evaluations were made with different settings."""
    found: dict[str, tuple[Run, dict[str, Any]]] = {}
    missing = []
    for variant in variants:
        for run in variant.runs:
            path = eval_path(run, eval_dir)
            if not path.is_file():
                missing.append(run.name)
                continue
            try:
                data = json.loads(path.read_text())
                per_task = np.array([t["mean_return"] for t in data["per_task"]], dtype=float)  # [tasks, K + 1]
                settings = {k: data["evaluation"][k] for k in EVAL_SETTINGS}
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"eval {path}: not an eval.json written by bmaml-eval ({error})") from error
            if data.get("run_config", {}).get("family") != run.config.family:
                raise ValueError(f"eval {path}: evaluates family {data.get('run_config', {}).get('family')!r}, "
                                 f"but run {run.name} is {run.config.family}")
            found[run.name] = (run, {"settings": settings, "per_task": per_task,
                                     "iterations": int(data.get("iterations_trained", -1))})
    if not found:
        return None
    distinct: dict[str, list[str]] = {}
    for name, (_, item) in found.items():
        distinct.setdefault(json.dumps(item["settings"], sort_keys=True), []).append(name)
    if len(distinct) > 1:
        listed = "; ".join(f"{settings}: {', '.join(names)}" for settings, names in distinct.items())
        raise ValueError(f"eval: the runs were evaluated with different settings ({listed}); evaluate them with "
                         f"the same --steps, --tasks, --episodes and --seed")
    settings = next(iter(found.values()))[1]["settings"]
    step = min(int(settings["steps"]), variants[0].runs[0].config.num_steps)
    summaries = []
    for variant in variants:
        items = [found[r.name] for r in variant.runs if r.name in found]
        if not items:
            continue
        per_step = np.stack([item["per_task"].mean(axis=0) for _, item in items])  # [seeds, K + 1]
        values = {"before": per_step[:, 0], "after": per_step[:, step], "gain": per_step[:, step] - per_step[:, 0]}
        summaries.append(HeldOutVariant(variant.label, [r.name for r, _ in items], [r.config.seed for r, _ in items],
                                        [item["iterations"] for _, item in items], values,
                                        {k: mean_ci(v) for k, v in values.items()},
                                        [mean_ci(per_step[:, k]) for k in range(per_step.shape[1])]))
    tests: list[PairTest] = []
    for metric in ("after", "gain"):
        family = []
        for a, b in itertools.combinations(summaries, 2):
            if len(a.seeds) >= 2 and len(b.seeds) >= 2:
                family.append(PairTest(metric, a.label, b.label, welch_test(a.values[metric], b.values[metric]),
                                       bootstrap_difference(a.values[metric], b.values[metric],
                                                            num_resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED),
                                       math.nan))
        for test, adjusted in zip(family, holm([t.welch.p_value for t in family])):
            test.p_holm = float(adjusted)
        tests.extend(family)
    return HeldOut(settings, step, summaries, tests, missing)


def findings(c: Comparison, alpha: float = 0.05) -> list[str]:
    """Plain-language statements of what the tests say (Holm-adjusted over each metric's pairs)."""
    lines = []
    seeds = sorted({len(s.seeds) for s in c.summaries})
    seeds_text = " or ".join(map(str, seeds))
    for metric in ("return_after", "gain"):
        tests = [t for t in c.pair_tests if t.metric == metric]
        if not tests:
            lines.append(f"{METRIC_NAMES[metric]}: no test possible (a variant needs at least 2 seeds).")
            continue
        significant = [t for t in tests if t.p_holm < alpha]
        for t in significant:
            w = t.welch
            better, worse, low, high = ((t.a, t.b, w.ci_low, w.ci_high) if w.difference > 0
                                        else (t.b, t.a, -w.ci_high, -w.ci_low))
            lines.append(
                f"{METRIC_NAMES[metric]}: {better} > {worse} by {abs(w.difference):.2f} (95% CI [{low:.2f}, "
                f"{high:.2f}], Welch p = {_p(w.p_value)}, Holm p = {_p(t.p_holm)}, Hedges' g = {abs(w.hedges_g):.2f})."
            )
        rest = [t for t in tests if t not in significant]
        if rest:
            nominal = [t for t in rest if t.welch.p_value < alpha]
            text = (f"{METRIC_NAMES[metric]}: no significant difference (Holm-adjusted, alpha {alpha}) for "
                    + ", ".join(f"{t.a} vs {t.b} (p = {_p(t.welch.p_value)}, g = {t.welch.hedges_g:+.2f})" for t in rest)
                    + f"; with {seeds_text} seeds per variant only large effects are detectable.")
            if nominal:
                text += (" Nominally (unadjusted p < 0.05): "
                         + ", ".join(f"{t.a} vs {t.b}" for t in nominal) + ".")
            lines.append(text)
    for metric in ("return_after", "gain"):
        pairs = [p for p in c.variance_pairs if p.metric == metric]
        if not pairs:
            lines.append(f"spread across seeds of the {METRIC_NAMES[metric]}: no variance test possible "
                         "(a variant needs at least 2 seeds).")
            continue
        flagged = [p for p in pairs if (math.isfinite(p.brown_forsythe_p) and p.brown_forsythe_p < alpha)
                   or (math.isfinite(p.f_p) and p.f_p < alpha)]
        overall = c.variance_overall.get(metric)
        stds = ", ".join(f"{s.label} {s.ci[metric].std:.2f}" for s in c.summaries)
        text = f"spread across seeds of the {METRIC_NAMES[metric]} (sd: {stds}): "
        if overall is not None:
            text += f"Brown-Forsythe over all variants p = {_p(overall.p_value)}; "
        if flagged:
            text += "unequal by at least one test (unadjusted) for " + ", ".join(
                f"{p.a} vs {p.b} (F p = {_p(p.f_p)}, Brown-Forsythe p = {_p(p.brown_forsythe_p)})" for p in flagged) + "."
        else:
            text += "no pair differs significantly in variance (F-test and Brown-Forsythe, unadjusted)."
        lines.append(text)
    if c.held_out is not None:
        steps = c.held_out.step
        for metric in ("after", "gain"):
            tests = [t for t in c.held_out.tests if t.metric == metric]
            name = f"{HELD_OUT_NAMES[metric]} ({steps} step{'s' if steps != 1 else ''})"
            significant = [t for t in tests if t.p_holm < alpha]
            for t in significant:
                better, worse = (t.a, t.b) if t.welch.difference > 0 else (t.b, t.a)
                lines.append(f"{name}: {better} > {worse} by {abs(t.welch.difference):.2f} (Welch p = "
                             f"{_p(t.welch.p_value)}, Holm p = {_p(t.p_holm)}, Hedges' g = {abs(t.welch.hedges_g):.2f}).")
            rest = [t for t in tests if t not in significant]
            if rest:
                lines.append(f"{name}: no significant difference (Holm-adjusted) for "
                             + ", ".join(f"{t.a} vs {t.b} (p = {_p(t.welch.p_value)}, g = {t.welch.hedges_g:+.2f})"
                                         for t in rest) + ".")
    return lines


def _seeds(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")


def _p(p: float) -> str:
    if not math.isfinite(p):
        return "n/a"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def _f(x: float, digits: int = 2, sign: bool = False) -> str:
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return ("+inf" if sign else "inf") if x > 0 else "-inf"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _ci(ci: Any, sign: bool = False) -> str:
    if ci.n < 2:
        return f"{_f(ci.mean, sign=sign)} (1 seed)"
    return f"{_f(ci.mean, sign=sign)} [{_f(ci.low, sign=sign)}, {_f(ci.high, sign=sign)}]"


# ----------------------------------------------------------------------------- figures
def plot_curves(c: Comparison, path: Path) -> Path:
    """Return before and after adaptation per meta-iteration: mean over seeds, 95% t band."""
    from bmaml_robot.plots import color, new_figure, save_png

    figure = new_figure(12.0, 4.5)
    axes_before, axes_after = figure.subplots(1, 2, sharey=True)
    ranges = []
    for index, variant in enumerate(c.variants):
        n = variant.common_length
        for axes, metric in ((axes_before, "return_before"), (axes_after, "return_after")):
            curves = smooth(np.stack([getattr(r, metric)[:n] for r in variant.runs]), c.smooth_window)
            ranges.append(_band(axes, curves, color(index), f"{variant.label} ({_seeds(len(variant.runs))})"))
    _set_y_range(axes_before, ranges)
    for axes, title in ((axes_before, "before adaptation"), (axes_after, "after adaptation")):
        _decorate(axes, c, title)
    axes_before.set_ylabel("mean return per episode (meta-batch)")
    axes_after.legend(fontsize=8, loc="best")
    figure.suptitle(_figure_title(c), fontsize=10)
    return save_png(figure, path)


def plot_gain(c: Comparison, path: Path) -> Path:
    """Adaptation gain (after - before) per meta-iteration."""
    from bmaml_robot.plots import color, new_figure, save_png

    figure = new_figure(7.0, 4.5)
    axes = figure.add_subplot()
    ranges: list[tuple[float, float]] = []
    for index, variant in enumerate(c.variants):
        n = variant.common_length
        gains = np.stack([r.return_after[:n] - r.return_before[:n] for r in variant.runs])
        ranges.append(_band(axes, smooth(gains, c.smooth_window), color(index),
                            f"{variant.label} ({_seeds(len(variant.runs))})"))
    _set_y_range(axes, ranges + [(0.0, 0.0)])
    axes.axhline(0.0, color="k", linewidth=0.8)
    _decorate(axes, c, "adaptation gain (after - before)")
    axes.set_ylabel("return after - return before")
    axes.legend(fontsize=8, loc="best")
    figure.suptitle(_figure_title(c), fontsize=10)
    return save_png(figure, path)


def plot_final(c: Comparison, path: Path) -> Path:
    """Final window: every seed (dots) and the variant mean with its 95% CI, per metric."""
    from bmaml_robot.plots import color, new_figure, save_png

    figure = new_figure(12.0, 4.2)
    panels = figure.subplots(1, 3)
    for axes, metric in zip(panels, ("return_before", "return_after", "gain")):
        for index, summary in enumerate(c.summaries):
            values = summary.final[metric]
            jitter = np.linspace(-0.12, 0.12, values.size) if values.size > 1 else np.zeros(1)
            axes.scatter(index + jitter, values, color=color(index), s=18, alpha=0.7, zorder=3)
            ci = summary.ci[metric]
            if ci.n >= 2:
                axes.errorbar(index + 0.3, ci.mean, yerr=[[ci.mean - ci.low], [ci.high - ci.mean]], fmt="s",
                              color=color(index), capsize=4, markersize=6)
            else:
                axes.plot(index + 0.3, ci.mean, "s", color=color(index))
        axes.set_xticks(range(len(c.summaries)))
        axes.set_xticklabels([s.label for s in c.summaries], rotation=20, fontsize=8)
        axes.set_title(METRIC_NAMES[metric], fontsize=9)
        axes.grid(alpha=0.3, axis="y")
        if metric == "gain":
            axes.axhline(0.0, color="k", linewidth=0.8)
    panels[0].set_ylabel(f"mean over iterations {c.window[0]}-{c.window[1] - 1}")
    figure.suptitle(f"{c.family}: final performance per seed (dots) and mean with 95% CI over seeds (squares)",
                    fontsize=10)
    return save_png(figure, path)


def _band(axes: Any, curves: np.ndarray, colour: str, label: str) -> tuple[float, float]:
    """Mean of ``curves`` [seeds, iterations] with its 95% t band over seeds, and every seed as a
    thin line. The y-range follows the seeds' curves, not the band: with 2 seeds the band uses
    t(1) = 12.7 and would flatten everything else (it is clipped at the frame instead). Returns
    the (low, high) of the curves for ``_set_y_range``."""
    x = np.arange(curves.shape[1])
    mean = curves.mean(axis=0)
    if curves.shape[0] >= 2:
        axes.plot(x, curves.T, color=colour, linewidth=0.6, alpha=0.35)
    axes.plot(x, mean, color=colour, linewidth=1.6, label=label)
    if curves.shape[0] >= 2:
        from scipy import stats as scipy_stats

        half = scipy_stats.t.ppf(0.975, curves.shape[0] - 1) * curves.std(axis=0, ddof=1) / math.sqrt(curves.shape[0])
        axes.fill_between(x, mean - half, mean + half, color=colour, alpha=0.2, linewidth=0)
    return float(curves.min()), float(curves.max())


def _set_y_range(axes: Any, ranges: list[tuple[float, float]]) -> None:
    low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    margin = 0.05 * (high - low) if high > low else 1.0
    axes.set_ylim(low - margin, high + margin)


def _decorate(axes: Any, c: Comparison, title: str) -> None:
    axes.axvspan(c.window[0] - 0.5, c.window[1] - 0.5, color="0.85", alpha=0.6, linewidth=0, zorder=0)
    axes.axvline(c.length - 0.5, color="0.4", linestyle="--", linewidth=0.8)
    axes.set_xlabel("meta-iteration")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)


def _figure_title(c: Comparison) -> str:
    smoothing = (f"trailing mean over {c.smooth_window} iterations" if c.smooth_window > 1 else "not smoothed")
    return (f"{c.family}: mean over seeds (thick), seeds (thin), 95% t band ({smoothing})\ngrey: final window "
            f"{c.window[0]}-{c.window[1] - 1}, dashed: common length {c.length}")


# ----------------------------------------------------------------------------- report
def report_markdown(c: Comparison) -> str:
    """The report (figures referenced by file name, next to it)."""
    start, stop = c.window
    counts = sorted({len(v.runs) for v in c.variants})
    lines = [
        f"# {c.family}: {' vs '.join(v.label for v in c.variants)}",
        "",
        f"Generated by `{c.command}`." if c.command else "Generated by `bmaml_robot.compare`.",
        "",
        "## Runs",
        "",
        f"Variants grouped by {', '.join(f'`{k}`' for k in c.group_by)}; each run is one seed. "
        "A run is *in progress* while it has fewer meta-iterations than planned.",
        "",
        "| variant | run | seed | meta-iterations | status |",
        "|---|---|---|---|---|",
    ]
    for variant in c.variants:
        for run in variant.runs:
            status = "finished" if run.finished else f"in progress ({run.iterations}/{run.config.num_batches})"
            lines.append(f"| {variant.label} | `{run.name}` | {run.config.seed} | {run.iterations} | {status} |")
    if c.left_out:
        lines += ["", "Left out (fewer meta-iterations than `--min-iterations`): "
                  + ", ".join(f"`{r.name}` ({r.iterations})" for r in c.left_out) + "."]
    config = c.variants[0].runs[0].config
    lines += [
        "",
        f"Shared setting: {config.family}, {config.num_tasks} tasks x {config.episodes_per_task} episodes x "
        f"{config.horizon} steps per meta-batch, {config.num_steps} inner step(s).",
    ]
    for variant in c.variants:
        if variant.other_differences:
            lines.append(f"Note: the runs of {variant.label} also differ in {', '.join(variant.other_differences)}.")
    lengths = sorted({r.iterations for v in c.variants for r in v.runs})
    lines += [
        "",
        "**Alignment.** "
        + (f"The runs have different lengths ({', '.join(map(str, lengths))} meta-iterations). "
           if len(lengths) > 1 else f"All runs have {c.length} meta-iterations. ")
        + f"Every run is compared on iterations 0-{c.length - 1} (the shortest run's length, L = {c.length}); "
        f"the final performance of a run is its mean over iterations {start}-{stop - 1} (the last "
        f"{stop - start}). The learning curves show each variant up to its own shortest run, smoothed by a "
        + (f"trailing mean over {c.smooth_window} iterations" if c.smooth_window > 1 else "(no smoothing)")
        + "; the band is the 95% t-interval over seeds.",
        "",
        "Returns are the training-time figures of each meta-iteration (`metrics.jsonl`): the mean return per "
        "episode of the meta-batch's tasks before adaptation and after adaptation (the validation "
        "episodes), on the tasks of that iteration. Held-out evaluation: `bmaml-eval`.",
        "",
        "![learning curves](curves.png)",
        "",
        "![adaptation gain](gain.png)",
        "",
        "## Final performance",
        "",
        "Mean over seeds with its 95% Student-t confidence interval over seeds"
        + (f" (with {' or '.join(map(str, [n for n in counts if n > 1]))} seeds it uses "
           f"t({' or '.join(str(n - 1) for n in counts if n > 1)}) and is wide)" if any(n > 1 for n in counts) else "")
        + "; a variant with 1 seed has no interval. "
        "Between-seed sd: standard deviation of the runs' final values. Within-run sd: standard deviation of "
        "return after adaptation over the final window, averaged over the runs (iteration-to-iteration noise).",
        "",
        "| variant | seeds | return before | return after | gain (after - before) | between-seed sd (after) | within-run sd (after) |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in c.summaries:
        within = float(np.nanmean(s.within_run_std)) if np.any(np.isfinite(s.within_run_std)) else math.nan
        lines.append(f"| {s.label} | {len(s.seeds)} | {_ci(s.ci['return_before'])} | {_ci(s.ci['return_after'])} | "
                     f"{_ci(s.ci['gain'], sign=True)} | {_f(s.ci['return_after'].std)} | {_f(within)} |")
    lines += ["", "![final performance](final.png)", ""]

    lines += [
        "## Differences between variants",
        "",
        "Pairwise, on the runs' final values (one value per seed): difference of the means (a - b) with the "
        "Welch 95% CI, Welch's t-test (two-sided, unequal variances), Holm-adjusted p over the pairs of the same "
        f"metric, Hedges' g (bias-corrected Cohen's d), and a percentile bootstrap 95% CI ({BOOTSTRAP_RESAMPLES} "
        f"resamples, seed {BOOTSTRAP_SEED}).",
        "",
    ]
    if not c.pair_tests:
        lines += ["No test: every variant needs at least 2 seeds.", ""]
    for metric in METRIC_NAMES:
        tests = [t for t in c.pair_tests if t.metric == metric]
        if not tests:
            continue
        lines += [f"### {METRIC_NAMES[metric].capitalize()}", "",
                  "| a | b | a - b | 95% CI (Welch) | t (df) | p | p (Holm) | Hedges' g | bootstrap 95% CI |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for t in tests:
            w = t.welch
            lines.append(f"| {t.a} ({w.n_a}) | {t.b} ({w.n_b}) | {_f(w.difference, sign=True)} | "
                         f"[{_f(w.ci_low, sign=True)}, {_f(w.ci_high, sign=True)}] | {_f(w.t)} ({_f(w.df, 1)}) | "
                         f"{_p(w.p_value)} | {_p(t.p_holm)} | {_f(w.hedges_g, sign=True)} | "
                         f"[{_f(t.bootstrap.low, sign=True)}, {_f(t.bootstrap.high, sign=True)}] |")
        lines.append("")

    if c.held_out is not None:
        lines += held_out_markdown(c.held_out)
    lines += [
        "## Variance across seeds",
        "",
        "Is one variant less predictable from seed to seed? Brown-Forsythe (Levene's test on deviations from "
        "the median; robust) and the F-test of the variance ratio (exact under normality only), two-sided, "
        "unadjusted.",
        "",
        "| metric | a | b | sd a | sd b | variance ratio a/b | F-test p | Brown-Forsythe p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in c.variance_pairs:
        lines.append(f"| {METRIC_NAMES[p.metric]} | {p.a} | {p.b} | {_f(p.std_a)} | {_f(p.std_b)} | "
                     f"{_f(p.f_ratio)} | {_p(p.f_p)} | {_p(p.brown_forsythe_p)} |")
    for metric, test in c.variance_overall.items():
        if test is not None:
            lines.append(f"\nBrown-Forsythe over all variants, {METRIC_NAMES[metric]}: W = {_f(test.statistic)}, "
                         f"p = {_p(test.p_value)}.")
    lines += [
        "",
        "## What the statistics say",
        "",
        *[f"- {line}" for line in c.findings],
        "",
        "Caveats: "
        + (f"with {' or '.join(map(str, counts))} seeds per variant, " if counts else "")
        + "Welch's test has few degrees of freedom and detects only large effects; \"no significant difference\" "
        "means not detectable with these seeds, not equal. The bootstrap of a handful of values is coarse and "
        "too narrow (cross-check only). Variance tests with so few seeds have very little power. Final values are "
        "training-time returns on each iteration's own tasks; runs still in progress are compared at the "
        "common length.",
        "",
    ]
    return "\n".join(lines)


def held_out_markdown(h: HeldOut) -> list[str]:
    s = h.settings
    steps = int(s["steps"])
    lines = [
        "## Held-out evaluation (`bmaml-eval`)",
        "",
        f"Each run's meta-policy on {s['num_tasks']} held-out tasks x {s['episodes_per_task']} episodes (evaluation "
        f"seed {s['seed']}: the same tasks and noise for every run), after 0 to {steps} adaptation steps. Per run: "
        "the mean over tasks; per variant: the mean over seeds with its 95% t-interval. The tests use the return "
        f"after {h.step} step{'s' if h.step != 1 else ''} (the inner steps of training, its objective). "
        "Meta-iterations behind each evaluated policy are listed (a run in progress is evaluated at its latest "
        "checkpoint).",
        "",
        "| variant | seeds | meta-iterations | " + " | ".join(
            "before adaptation" if k == 0 else f"after {k} step{'s' if k != 1 else ''}" for k in range(steps + 1))
        + f" | gain at step {h.step} |",
        "|---|---|---|" + "---|" * (steps + 2),
    ]
    for v in h.variants:
        lines.append(f"| {v.label} | {len(v.seeds)} | {', '.join(map(str, v.iterations))} | "
                     + " | ".join(_ci(ci) for ci in v.per_step) + f" | {_ci(v.ci['gain'], sign=True)} |")
    trained = sorted({i for v in h.variants for i in v.iterations})
    if len(trained) > 1:
        lines += ["", f"Note: the evaluated policies were trained for different numbers of meta-iterations "
                      f"({', '.join(map(str, trained))}); unlike the learning curves, this section is not aligned "
                      "by iteration (a checkpoint holds only the latest policy)."]
    if h.missing:
        lines += ["", "Not evaluated (no eval.json): " + ", ".join(f"`{m}`" for m in h.missing) + "."]
    for metric in ("after", "gain"):
        tests = [t for t in h.tests if t.metric == metric]
        if not tests:
            continue
        lines += ["", f"{HELD_OUT_NAMES[metric].capitalize()} (step {h.step}), pairwise:", "",
                  "| a | b | a - b | 95% CI (Welch) | p | p (Holm) | Hedges' g | bootstrap 95% CI |",
                  "|---|---|---|---|---|---|---|---|"]
        for t in tests:
            w = t.welch
            lines.append(f"| {t.a} ({w.n_a}) | {t.b} ({w.n_b}) | {_f(w.difference, sign=True)} | "
                         f"[{_f(w.ci_low, sign=True)}, {_f(w.ci_high, sign=True)}] | {_p(w.p_value)} | {_p(t.p_holm)} | "
                         f"{_f(w.hedges_g, sign=True)} | [{_f(t.bootstrap.low, sign=True)}, {_f(t.bootstrap.high, sign=True)}] |")
    lines.append("")
    return lines


# ----------------------------------------------------------------------------- compare
def compare(
    run_dirs: Sequence[str | Path],
    *,
    group_by: Sequence[str] = DEFAULT_GROUP_BY,
    last: int = 10,
    smooth_window: int = 5,
    min_iterations: int = 1,
    eval_dir: str | Path | None = None,
    out: str | Path | None = None,
    command: str = "",
) -> Comparison:
    """Compare the runs in ``run_dirs`` grouped by ``group_by`` (module docstring).

    last: final window, in meta-iterations (the last ``last`` of the common length). smooth_window:
    trailing moving average of the plotted curves (1: none; statistics never use it).
    min_iterations: runs with fewer meta-iterations are left out (listed in the report), so that
    a run that has barely started does not shorten the common length of all. eval_dir: where
    the runs' ``bmaml-eval`` results are (``eval_dir/<run name>/eval.json``; default: each run's
    own ``eval.json`` if there is one); they add a held-out section. out: where
    report.md, the PNGs and comparison.json go (nothing is written when None).
    """
    keys = check_group_by(group_by)
    for name, value in (("last", last), ("smooth_window", smooth_window), ("min_iterations", min_iterations)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    if isinstance(run_dirs, (str, Path)) or len(run_dirs) == 0:
        raise ValueError(f"run_dirs: expected a list of run directories, got {run_dirs!r}")
    paths = [Path(p) for p in run_dirs]
    duplicates = sorted({str(p) for p in paths if sum(q.resolve() == p.resolve() for q in paths) > 1})
    if duplicates:
        raise ValueError(f"run_dirs: given more than once: {duplicates}")
    loaded = [load_run_metrics(p) for p in paths]
    check_comparable(loaded, keys)
    runs = [r for r in loaded if r.iterations >= min_iterations]
    left_out = [r for r in loaded if r.iterations < min_iterations]
    if not runs:
        raise ValueError(f"min_iterations: every run has fewer than {min_iterations} meta-iterations "
                         f"({', '.join(f'{r.name}: {r.iterations}' for r in loaded)})")
    variants = group_runs(runs, keys)
    if eval_dir is not None and not Path(eval_dir).is_dir():
        raise ValueError(f"eval_dir: expected a directory of bmaml-eval results, got {str(eval_dir)!r}")
    comparison = analyse(variants, keys, int(last), int(smooth_window))
    comparison.command = command
    comparison.left_out = left_out
    comparison.held_out = held_out_evaluation(variants, None if eval_dir is None else Path(eval_dir))
    comparison.findings = findings(comparison)
    if out is not None:
        write_outputs(comparison, out)
    return comparison


def write_outputs(comparison: Comparison, out: str | Path) -> list[Path]:
    """Write the figures, comparison.json and report.md (each atomically) into ``out``."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    comparison.out_dir = out_dir
    comparison.files = [plot_curves(comparison, out_dir / "curves.png"),
                        plot_gain(comparison, out_dir / "gain.png"),
                        plot_final(comparison, out_dir / "final.png")]
    json_path = out_dir / "comparison.json"
    write_text_atomic(json_path, json.dumps(comparison.to_dict(), indent=1) + "\n")
    report = out_dir / "report.md"
    write_text_atomic(report, report_markdown(comparison))
    comparison.files += [json_path, report]
    return comparison.files


def format_summary(c: Comparison) -> str:
    """The table ``bmaml-compare`` prints."""
    lines = [f"{c.family}: {len(c.variants)} variants, iterations 0-{c.length - 1} compared, "
             f"final window {c.window[0]}-{c.window[1] - 1}",
             f"{'variant':<16} {'seeds':>5}  {'return after [95% CI]':>26}  {'gain [95% CI]':>26}"]
    for s in c.summaries:
        lines.append(f"{s.label:<16} {len(s.seeds):>5}  {_ci(s.ci['return_after']):>26}  {_ci(s.ci['gain'], True):>26}")
    lines += [f"- {line}" for line in c.findings]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``bmaml-compare`` (``bmaml_robot.cli.compare_main``: arguments are checked before the heavy imports)."""
    from bmaml_robot.cli import compare_main

    return compare_main(argv)


if __name__ == "__main__":
    sys.exit(main())
