"""The study's verdicts: claims (1)-(5) of issue 17, each as a test with its effect size, 95% CI,
Holm-adjusted p and the difference the seeds detect with 80% power, and a finding decided by fixed
rules (below), per family, at the family's budget (one meta-training length: ``study_runs``);
a comparison with fewer than 2 seeds on a side is "pending". The per-claim reports (bmaml-compare,
claim2/3/5.py) hold the detail; this table is what README "The study" quotes.

Measures (held-out: bmaml-eval's 40 tasks, evaluation seed 0; claim5.py's ``run_figures``):

1. MAML-RNN-frozen - MAML-MLP: held-out return after 1 step and the gain of that step. The claim
   ("adapts no better") is refuted if RNN-frozen is significantly higher on either.
2. Spread of the adapted return, RNN-frozen / MLP, at four scales: across seeds (F-test on the
   held-out return after 1 step: a ratio of standard deviations) and, from claim2.py's ``spreads``,
   across the episodes of a task, across tasks, across training iterations (Welch on the logs).
   Supported at a scale where the ratio is significantly above 1.
3. Small (32 units, 10 x 5) - default (100 units, 20 x 10) frozen RNN, claim3.py's curve measures:
   "learns faster" per iteration if its early mean return is significantly higher or it reaches
   100 significantly sooner, per environment step if its return at the small runs' total steps is
   significantly higher; "regresses" if its peak - final is significantly larger.
4. MAML-GRU-outer and MAML-LSTM-outer - MAML-RNN-frozen and - MAML-MLP, held-out return after 1
   step: "does better" where significantly higher.
5. RL^2-GRU against each MAML variant, at equal environment steps of meta-training: its first
   attempt (the first episode of a trial: 0-100 steps of the task) against the MAML variant's
   adapted return (after 2,000 steps of the task): "faster" where not below it (above it: faster
   and better); its adapted return (the trial's last episode) against MAML's: "better" where above.

A finding per test: "higher" / "lower" (Holm-adjusted p < 0.05 within the claim and family) or
"no difference detected"; with it, always, the effect, its CI and the detectable difference.

    usage: PYTHONPATH=. python docs/study/verdicts.py [RUNS_DIR]   (default docs/study/runs; prints markdown)
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from claim2 import spreads
from claim3 import run_metrics, span
from claim5 import run_figures
from scipy import stats as scipy_stats
from study_runs import StudyRun, family_budget, runs_dir, study_runs

from bmaml_robot.stats import detectable_effect, f_test_variance, holm, pooled_std, welch_test

ALPHA = 0.05
FAMILIES = ("HalfCheetahDir", "SwimmerDir", "HalfCheetahCrippled")
MLP, FROZEN, SMALL = "maml-mlp", "maml-rnn-frozen", "maml-rnn-frozen-small"
GATED = ("maml-gru-outer", "maml-lstm-outer")
RL2 = "rl2-gru"
MAML = (MLP, FROZEN, "maml-rnn-outer", *GATED)


@dataclass
class Test:
    """One comparison ``a`` vs ``b`` on one measure; ``ratio``: a ratio of spreads (log scale)."""

    claim: str
    comparison: str
    measure: str
    a: np.ndarray
    b: np.ndarray
    ratio: bool = False
    variance: bool = False  # an F-test of the two samples' variances (a ratio of standard deviations)
    p_holm: float = math.nan

    @property
    def ready(self) -> bool:
        return self.a.size > 1 and self.b.size > 1

    def estimate(self) -> tuple[float, float, float, float, float]:
        """(effect, CI low, CI high, p, detectable at 80% power): a difference of means, or a ratio."""
        if self.variance:
            f = f_test_variance(self.a, self.b)
            # the standard-deviation ratio the F-test finds 80% of the time (the far tail neglected)
            critical = scipy_stats.f(self.a.size - 1, self.b.size - 1)
            detectable = math.sqrt(critical.ppf(1 - ALPHA / 2) / critical.ppf(0.2))
            return math.sqrt(f.ratio), math.sqrt(f.ratio_low), math.sqrt(f.ratio_high), f.p_value, detectable
        w = welch_test(self.a, self.b)
        detectable = detectable_effect(self.a.size, self.b.size) * pooled_std(self.a, self.b)
        if self.ratio:
            return (math.exp(w.difference), math.exp(w.ci_low), math.exp(w.ci_high), w.p_value,
                    math.exp(detectable))
        return w.difference, w.ci_low, w.ci_high, w.p_value, detectable

    def finding(self) -> str:
        if not self.ready:
            return "pending"
        effect = self.estimate()[0]
        if self.p_holm < ALPHA:
            return "higher" if effect > (1.0 if self.ratio or self.variance else 0.0) else "lower"
        return "no difference detected"

    def row(self, family: str) -> str:
        seeds = f"{self.a.size} + {self.b.size}"
        if not self.ready:
            return f"| {self.claim} | {family} | {self.comparison} | {self.measure} | {seeds} | | | | pending |"
        effect, low, high, _, detectable = self.estimate()
        if self.ratio or self.variance:
            cells = f"x{effect:.2f} [{low:.2f}, {high:.2f}] | {self.p_holm:.3g} | x{detectable:.2f}"
        else:
            cells = f"{effect:+.1f} [{low:+.1f}, {high:+.1f}] | {self.p_holm:.3g} | {detectable:.1f}"
        return (f"| {self.claim} | {family} | {self.comparison} | {self.measure} | {seeds} | {cells} "
                f"| {self.finding()} |")


def adjust(tests: list[Test]) -> list[Test]:
    """Holm over the tests that have their seeds (one claim, one family)."""
    ready = [t for t in tests if t.ready]
    for test, p in zip(ready, holm([t.estimate()[3] for t in ready])):
        test.p_holm = float(p)
    return tests


def family_tests(family: Path) -> dict[str, list[Test]]:
    """{claim: its tests} for one family's runs."""
    runs = study_runs(family)

    def values(variant: str, measure: Callable[[StudyRun], float]) -> np.ndarray:
        return np.array([measure(run) for run in runs.get(variant, [])], dtype=np.float64)

    def held_out(metric: str) -> Callable[[StudyRun], float]:
        return lambda run: run_figures(run)[0][metric]

    def spread(scale: str) -> Callable[[StudyRun], float]:
        return lambda run: math.log(max(spreads(run)[scale], 1e-12))

    claims: dict[str, list[Test]] = {
        "1": [Test("1", f"{FROZEN} - {MLP}", measure, values(FROZEN, held_out(metric)), values(MLP, held_out(metric)))
              for metric, measure in (("adapted", "held-out return after 1 step"), ("gain", "gain of 1 step"))],
        "2": [Test("2", f"{FROZEN} / {MLP}", "spread across seeds (sd of the return after 1 step)",
                   values(FROZEN, held_out("adapted")), values(MLP, held_out("adapted")), variance=True)]
        + [Test("2", f"{FROZEN} / {MLP}", f"spread {scale}", values(FROZEN, spread(scale)), values(MLP, spread(scale)),
                ratio=True) for scale in ("across episodes", "across tasks", "across iterations")],
        "4": [Test("4", f"{gated} - {other}", "held-out return after 1 step", values(gated, held_out("adapted")),
                   values(other, held_out("adapted"))) for gated in GATED for other in (FROZEN, MLP)],
        "5": [Test("5", f"{RL2} (first attempt) - {maml} (adapted)", "held-out return",
                   values(RL2, held_out("first attempt")), values(maml, held_out("adapted"))) for maml in MAML]
        + [Test("5", f"{RL2} - {maml}", "held-out adapted return", values(RL2, held_out("adapted")),
                values(maml, held_out("adapted"))) for maml in MAML],
    }
    if runs.get(SMALL):
        length, steps = span(runs[SMALL] + runs.get(FROZEN, []), runs[SMALL])

        def curve_measure(measure: str) -> Callable[[StudyRun], float]:
            return lambda run: run_metrics(run, length, steps)[measure]

        claims["3"] = [Test("3", f"{SMALL} - {FROZEN}",
                            measure if measure.startswith("at ") else f"{measure} (first {length} iterations)",
                            values(SMALL, curve_measure(measure)), values(FROZEN, curve_measure(measure)))
                       for measure in run_metrics(runs[SMALL][0], length, steps)]
    return {claim: adjust(tests) for claim, tests in sorted(claims.items())}


def grouped(tests: list[Test], name: Callable[[Test], str], words: dict[str, str]) -> str:
    """The tests' names grouped by finding, e.g. "larger: across seeds; no difference detected: ..."."""
    groups: dict[str, list[str]] = {}
    for test in tests:
        groups.setdefault(test.finding(), []).append(name(test))
    return "; ".join(f"{words.get(f, f)}: {', '.join(groups[f])}" for f in ("higher", "lower", "no difference detected")
                     if f in groups)


def summary(claim: str, tests: list[Test]) -> str:
    """The claim's verdict in a family, from its tests' findings (rules in the module docstring)."""
    if any(not t.ready for t in tests):
        return "pending (fewer than 2 seeds on a side)"
    findings = [t.finding() for t in tests]
    if claim == "1":
        return ("refuted: it adapts better" if "higher" in findings else
                "supported: it adapts worse" if "lower" in findings else "supported: no difference detected")
    if claim == "2":
        verdict = "supported" if "higher" in findings else "not supported"
        words = {"higher": "larger spread", "lower": "smaller spread"}
        return f"{verdict} ({grouped(tests, lambda t: t.measure[len('spread '):].split(' (')[0], words)})"
    if claim == "3":  # measures: early mean, first iteration at 100, regression, final, at equal steps
        faster = findings[0] == "higher" or findings[1] == "lower"
        slower = findings[0] == "lower" or findings[1] == "higher"
        per_step = {"higher": "yes", "lower": "no, slower"}.get(findings[4], "not shown")
        return (f"learns faster per iteration: {'yes' if faster else 'no, slower' if slower else 'not shown'}, "
                f"per environment step: {per_step}; regresses: {'yes' if findings[2] == 'higher' else 'not shown'}; "
                f"final return (equal iterations): {findings[3]}")
    if claim == "4":
        verdict = "supported" if "higher" in findings else "not supported"
        return f"{verdict} ({grouped(tests, lambda t: t.comparison, {'higher': 'better', 'lower': 'worse'})})"
    first, adapted = tests[: len(MAML)], tests[len(MAML):]

    def maml(test: Test) -> str:
        return test.comparison.split(" - ")[1].split(" ")[0]

    return (f"first attempt (0-100 steps of the task) vs MAML's adapted return (2,000 steps): "
            f"{grouped(first, maml, {'higher': 'above', 'lower': 'below'})}. Adapted return vs MAML's: "
            f"{grouped(adapted, maml, {'higher': 'above', 'lower': 'below'})}")


def main(argv: list[str]) -> int:
    root = runs_dir(argv)
    if root is None:
        return 2
    print("Verdicts on claims (1)-(5), per family (generated by verdicts.py; rules in its docstring). "
          "Effects: a - b (returns) or a / b (spreads, xN), 95% CI; p Holm-adjusted within the claim and family; "
          "detectable: the difference (or ratio) these seeds find with 80% power.\n")
    print("| claim | family | comparison | measure | seeds | effect [95% CI] | p (Holm) | detectable | finding |")
    print("|---|---|---|---|---|---|---|---|---|")
    summaries = []
    for name in FAMILIES:
        if not (root / name).is_dir() or not study_runs(root / name):
            summaries.append(f"| (1)-(5) | {name} | | no evaluated runs yet |")
            continue
        budget = family_budget(root / name)
        for claim, tests in family_tests(root / name).items():
            for test in tests:
                print(test.row(name))
            summaries.append(f"| ({claim}) | {name} | {budget} | {summary(claim, tests)} |")
    print("\n| claim | family | budget (MAML iterations; RL^2: x RL2_FACTOR) | verdict |\n|---|---|---|---|")
    print("\n".join(summaries))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
