"""The text of a comparison: plain-language findings and the markdown report (``report.md``),
built from ``analysis.Comparison``. Every table row has one formatter here."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from bmaml_robot.compare.analysis import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    HELD_OUT_NAMES,
    HELD_OUT_TESTED,
    KEY_METRICS,
    METRIC_NAMES,
    Comparison,
    HeldOut,
    HeldOutVariant,
    PairTest,
    VariancePair,
    VariantSummary,
)
from bmaml_robot.compare.runs import Run, Variant

#: Columns of a pairwise Welch table; ``t (df)`` is left out of the held-out tables.
WELCH_COLUMNS = ("a", "b", "a - b", "95% CI (Welch)", "t (df)", "p", "p (Holm)", "Hedges' g", "bootstrap 95% CI")


# ----------------------------------------------------------------------------- numbers
def fmt_p(p: float) -> str:
    """A p-value: ``0.123``, ``1.2e-04``, ``n/a``."""
    if not math.isfinite(p):
        return "n/a"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def fmt_num(x: float, digits: int = 2, sign: bool = False) -> str:
    """A number with ``digits`` decimals (``+`` with ``sign``); ``n/a``, ``inf``."""
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return ("+inf" if sign else "inf") if x > 0 else "-inf"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def fmt_ci(ci: Any, sign: bool = False) -> str:
    """A ``MeanCI``: ``mean [low, high]``, or ``mean (1 seed)``."""
    if ci.n < 2:
        return f"{fmt_num(ci.mean, sign=sign)} (1 seed)"
    return f"{fmt_num(ci.mean, sign=sign)} [{fmt_num(ci.low, sign=sign)}, {fmt_num(ci.high, sign=sign)}]"


def _interval(low: float, high: float) -> str:
    return f"[{fmt_num(low, sign=True)}, {fmt_num(high, sign=True)}]"


def _plural(n: int, word: str) -> str:
    return f"{word}{'s' if n != 1 else ''}"


# ----------------------------------------------------------------------------- tables
def table_row(cells: Iterable[object]) -> str:
    """``| a | b | c |``."""
    return "| " + " | ".join(map(str, cells)) + " |"


def table_head(columns: Sequence[str]) -> list[str]:
    """The header row and the separator of a table with ``columns``."""
    return [table_row(columns), "|" + "---|" * len(columns)]


def run_row(variant: Variant, run: Run) -> str:
    """Runs table: variant, run, seed, meta-iterations, status."""
    trained = run.iterations if run.cut_from is None else run.cut_from
    status = "finished" if run.finished else f"in progress ({trained}/{run.config.num_iterations})"
    if run.cut_from is not None:
        status += f"; {trained} trained, cut by --until"
    return table_row([variant.label, f"`{run.name}`", run.config.seed, run.iterations, status])


def final_row(s: VariantSummary) -> str:
    """Final-performance table: mean [95% CI] over seeds of each metric, between- and within-run sd."""
    within = float(np.nanmean(s.within_run_std)) if np.any(np.isfinite(s.within_run_std)) else math.nan
    return table_row([s.label, len(s.seeds), fmt_ci(s.ci["return_before"]), fmt_ci(s.ci["return_after"]),
                      fmt_ci(s.ci["gain"], sign=True), fmt_num(s.ci["return_after"].std), fmt_num(within)])


def welch_row(t: PairTest, with_t: bool = True) -> str:
    """One pairwise test: the columns of ``WELCH_COLUMNS`` (without ``t (df)`` unless ``with_t``)."""
    w = t.welch
    cells = [f"{t.a} ({w.n_a})", f"{t.b} ({w.n_b})", fmt_num(w.difference, sign=True), _interval(w.ci_low, w.ci_high)]
    if with_t:
        cells.append(f"{fmt_num(w.t)} ({fmt_num(w.df, 1)})")
    cells += [fmt_p(w.p_value), fmt_p(t.p_holm), fmt_num(w.hedges_g, sign=True),
              _interval(t.bootstrap.low, t.bootstrap.high)]
    return table_row(cells)


def welch_table(tests: Sequence[PairTest], with_t: bool = True) -> list[str]:
    """Header and one ``welch_row`` per test."""
    columns = [c for c in WELCH_COLUMNS if with_t or c != "t (df)"]
    return table_head(columns) + [welch_row(t, with_t) for t in tests]


def variance_row(p: VariancePair) -> str:
    """Variance table: metric, pair, sds, variance ratio, F-test and Brown-Forsythe p."""
    return table_row([METRIC_NAMES[p.metric], p.a, p.b, fmt_num(p.std_a), fmt_num(p.std_b), fmt_num(p.f_ratio),
                      fmt_p(p.f_p), fmt_p(p.brown_forsythe_p)])


def held_out_row(v: HeldOutVariant) -> str:
    """Held-out table: variant, seeds, meta-iterations, mean [95% CI] after 0 .. K steps, gain."""
    return table_row([v.label, len(v.seeds), ", ".join(map(str, v.iterations)), *map(fmt_ci, v.per_step),
                      fmt_ci(v.ci["gain"], sign=True)])


# ----------------------------------------------------------------------------- findings
def _ordered(t: PairTest) -> tuple[str, str, float, float]:
    """(better, worse, low, high): the pair and the Welch CI of better - worse."""
    w = t.welch
    return (t.a, t.b, w.ci_low, w.ci_high) if w.difference > 0 else (t.b, t.a, -w.ci_high, -w.ci_low)


def _better(name: str, t: PairTest, with_ci: bool) -> str:
    """``"name: a > b by 3.00 (...)."`` for a significant difference."""
    better, worse, low, high = _ordered(t)
    w = t.welch
    ci = f"95% CI [{low:.2f}, {high:.2f}], " if with_ci else ""
    return (f"{name}: {better} > {worse} by {abs(w.difference):.2f} ({ci}Welch p = {fmt_p(w.p_value)}, "
            f"Holm p = {fmt_p(t.p_holm)}, Hedges' g = {abs(w.hedges_g):.2f}).")


def _pairs(tests: Sequence[PairTest]) -> str:
    """Each pair with its p-value, effect size and power statement (the smallest difference its
    seeds detect with 80% power)."""
    return ", ".join(f"{t.a} vs {t.b} (p = {fmt_p(t.welch.p_value)}, g = {t.welch.hedges_g:+.2f}, "
                     f"difference {t.welch.difference:+.2f}; detectable at 80% power: |difference| >= "
                     f"{t.detectable:.2f})" for t in tests)


def _mean_findings(metric: str, tests: Sequence[PairTest], seeds: str, alpha: float) -> list[str]:
    """What the Welch tests of ``metric`` say (final performance)."""
    name = METRIC_NAMES[metric]
    if not tests:
        return [f"{name}: no test possible (a variant needs at least 2 seeds)."]
    lines = [_better(name, t, with_ci=True) for t in tests if t.p_holm < alpha]
    rest = [t for t in tests if not t.p_holm < alpha]
    if rest:
        text = (f"{name}: no significant difference (Holm-adjusted, alpha {alpha}) for {_pairs(rest)}"
                f"; with {seeds} seeds per variant only large effects are detectable.")
        nominal = [t for t in rest if t.welch.p_value < alpha]
        if nominal:
            text += " Nominally (unadjusted p < 0.05): " + ", ".join(f"{t.a} vs {t.b}" for t in nominal) + "."
        lines.append(text)
    return lines


def _spread_finding(c: Comparison, metric: str, alpha: float) -> str:
    """What the variance tests of ``metric`` say."""
    name = METRIC_NAMES[metric]
    pairs = [p for p in c.variance_pairs if p.metric == metric]
    if not pairs:
        return f"spread across seeds of the {name}: no variance test possible (a variant needs at least 2 seeds)."
    flagged = [p for p in pairs if (math.isfinite(p.brown_forsythe_p) and p.brown_forsythe_p < alpha)
               or (math.isfinite(p.f_p) and p.f_p < alpha)]
    overall = c.variance_overall.get(metric)
    stds = ", ".join(f"{s.label} {s.ci[metric].std:.2f}" for s in c.summaries)
    text = f"spread across seeds of the {name} (sd: {stds}): "
    if overall is not None:
        text += f"Brown-Forsythe over all variants p = {fmt_p(overall.p_value)}; "
    if flagged:
        return text + "unequal by at least one test (unadjusted) for " + ", ".join(
            f"{p.a} vs {p.b} (F p = {fmt_p(p.f_p)}, Brown-Forsythe p = {fmt_p(p.brown_forsythe_p)})"
            for p in flagged) + "."
    return text + "no pair differs significantly in variance (F-test and Brown-Forsythe, unadjusted)."


def _held_out_findings(h: HeldOut, metric: str, alpha: float) -> list[str]:
    """What the held-out Welch tests of ``metric`` say."""
    tests = [t for t in h.tests if t.metric == metric]
    name = f"{HELD_OUT_NAMES[metric]} ({h.step} {_plural(h.step, 'step')})"
    lines = [_better(name, t, with_ci=False) for t in tests if t.p_holm < alpha]
    rest = [t for t in tests if not t.p_holm < alpha]
    if rest:
        lines.append(f"{name}: no significant difference (Holm-adjusted) for {_pairs(rest)}.")
    return lines


def findings(c: Comparison, alpha: float = 0.05) -> list[str]:
    """Plain-language statements of what the tests say (Holm-adjusted over each metric's pairs)."""
    seeds = " or ".join(map(str, sorted({len(s.seeds) for s in c.summaries})))
    lines = [line for metric in KEY_METRICS
             for line in _mean_findings(metric, [t for t in c.pair_tests if t.metric == metric], seeds, alpha)]
    lines += [_spread_finding(c, metric, alpha) for metric in KEY_METRICS]
    if c.held_out is not None:
        lines += [line for metric in HELD_OUT_TESTED for line in _held_out_findings(c.held_out, metric, alpha)]
    return lines


# ----------------------------------------------------------------------------- report
def report_markdown(c: Comparison) -> str:
    """The report (figures referenced by file name, next to it)."""
    lines = [*_runs_section(c), *_alignment_section(c), *_final_section(c), *_differences_section(c)]
    if c.held_out is not None:
        lines += held_out_markdown(c.held_out)
    lines += [*_variance_section(c), *_statements_section(c)]
    return "\n".join(lines)


def _runs_section(c: Comparison) -> list[str]:
    """Title, the runs table, left-out runs, the shared setting and other differences."""
    config = c.variants[0].runs[0].config
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
        *table_head(["variant", "run", "seed", "meta-iterations", "status"]),
        *[run_row(variant, run) for variant in c.variants for run in variant.runs],
    ]
    if c.left_out:
        lines += ["", "Left out (fewer meta-iterations than `--min-iterations`): "
                  + ", ".join(f"`{r.name}` ({r.iterations})" for r in c.left_out) + "."]
    lines += ["", f"Shared setting: {config.family}, {config.num_tasks} tasks x {config.episodes_per_task} episodes x "
              f"{config.horizon} steps per meta-batch, {config.adapt_steps} inner step(s)."]
    return lines + [f"Note: the runs of {v.label} also differ in {', '.join(v.other_differences)}."
                    for v in c.variants if v.other_differences]


def _alignment_section(c: Comparison) -> list[str]:
    start, stop = c.window
    lengths = sorted({r.iterations for v in c.variants for r in v.runs})
    if c.env_step_grid is not None:
        step = c.env_step_grid[0]
        alignment = (
            f"**Alignment: equal environment steps.** Every run is compared at {c.length} points of a grid of "
            f"{step:,.0f} environment steps up to {c.env_step_grid[-1]:,.0f} (the run with the fewest steps): "
            f"point k holds the returns of the meta-iteration during which the run reached (k + 1) x {step:,.0f} "
            f"steps. The final performance of a run is its mean over points {start}-{stop - 1}. Returns "
            "after adaptation are MAML's validation episodes and RL^2's last episode of each trial."
        )
        return ["", alignment, "", "![learning curves](curves.png)", "", "![adaptation gain](gain.png)", ""]
    return [
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
    ]


def _final_section(c: Comparison) -> list[str]:
    several = [n for n in sorted({len(v.runs) for v in c.variants}) if n > 1]
    t_note = (f" (with {' or '.join(map(str, several))} seeds it uses "
              f"t({' or '.join(str(n - 1) for n in several)}) and is wide)" if several else "")
    return [
        "## Final performance",
        "",
        "Mean over seeds with its 95% Student-t confidence interval over seeds" + t_note
        + "; a variant with 1 seed has no interval. "
        "Between-seed sd: standard deviation of the runs' final values. Within-run sd: standard deviation of "
        "return after adaptation over the final window, averaged over the runs (iteration-to-iteration noise).",
        "",
        *table_head(["variant", "seeds", "return before", "return after", "gain (after - before)",
                     "between-seed sd (after)", "within-run sd (after)"]),
        *[final_row(s) for s in c.summaries],
        "", "![final performance](final.png)", "",
    ]


def _differences_section(c: Comparison) -> list[str]:
    lines = [
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
    for metric, name in METRIC_NAMES.items():
        tests = [t for t in c.pair_tests if t.metric == metric]
        if tests:
            lines += [f"### {name.capitalize()}", "", *welch_table(tests), ""]
    return lines


def held_out_markdown(h: HeldOut) -> list[str]:
    """The held-out section: per-variant returns after 0 .. K steps and the pairwise tests."""
    s = h.settings
    steps = int(s["steps"])
    step_columns = ["before adaptation" if k == 0 else f"after {k} {_plural(k, 'step')}" for k in range(steps + 1)]
    lines = [
        "## Held-out evaluation (`bmaml-eval`)",
        "",
        f"Each run's meta-policy on {s['num_tasks']} held-out tasks x {s['episodes_per_task']} episodes (evaluation "
        f"seed {s['seed']}: the same tasks and noise for every run), after 0 to {steps} adaptation steps. Per run: "
        "the mean over tasks; per variant: the mean over seeds with its 95% t-interval. The tests use the return "
        f"after {h.step} {_plural(h.step, 'step')} (the inner steps of training, its objective). "
        "Meta-iterations behind each evaluated policy are listed (a run in progress is evaluated at its latest "
        "checkpoint).",
        "",
        *table_head(["variant", "seeds", "meta-iterations", *step_columns, f"gain at step {h.step}"]),
        *[held_out_row(v) for v in h.variants],
    ]
    trained = sorted({i for v in h.variants for i in v.iterations})
    if len(trained) > 1:
        lines += ["", f"Note: the evaluated policies were trained for different numbers of meta-iterations "
                      f"({', '.join(map(str, trained))}); unlike the learning curves, this section is not aligned "
                      "by iteration (a checkpoint holds only the latest policy)."]
    if h.missing:
        lines += ["", "Not evaluated (no eval.json): " + ", ".join(f"`{m}`" for m in h.missing) + "."]
    for metric in HELD_OUT_TESTED:
        tests = [t for t in h.tests if t.metric == metric]
        if tests:
            lines += ["", f"{HELD_OUT_NAMES[metric].capitalize()} (step {h.step}), pairwise:", "",
                      *welch_table(tests, with_t=False)]
    return lines + [""]


def _variance_section(c: Comparison) -> list[str]:
    lines = [
        "## Variance across seeds",
        "",
        "Is one variant less predictable from seed to seed? Brown-Forsythe (Levene's test on deviations from "
        "the median; robust) and the F-test of the variance ratio (exact under normality only), two-sided, "
        "unadjusted.",
        "",
        *table_head(["metric", "a", "b", "sd a", "sd b", "variance ratio a/b", "F-test p", "Brown-Forsythe p"]),
        *[variance_row(p) for p in c.variance_pairs],
    ]
    return lines + [f"\nBrown-Forsythe over all variants, {METRIC_NAMES[metric]}: W = {fmt_num(test.statistic)}, "
                    f"p = {fmt_p(test.p_value)}." for metric, test in c.variance_overall.items() if test is not None]


def _statements_section(c: Comparison) -> list[str]:
    counts = sorted({len(v.runs) for v in c.variants})
    return [
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
