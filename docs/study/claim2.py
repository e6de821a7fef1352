"""Claim (2) of the study: the frozen-recurrence RNN is "less predictable, with larger variance".

Predictability has more than one scale; per run (at the family's budget: study_runs.py) this measures
the spread of the adapted return at each:

- *across episodes*: the standard deviation over the episodes of one held-out task after 1 step
  (RL^2: the last episode of the trials), averaged over the tasks: how much one adapted policy's
  episodes vary;
- *across tasks*: the standard deviation over the held-out tasks of their mean adapted return: how
  evenly it adapts to different tasks;
- *across iterations*: the standard deviation of the training-time return after adaptation over
  the last LAST meta-iterations (RL^2: RL2_FACTOR x as many): how much the meta-policy jumps as it trains.

(The spread *across seeds* of the final return is bmaml-compare's variance test, in the report.)
A spread grows with the return itself (a policy that runs faster varies more in metres), so the
table shows each variant's held-out adapted return (the level) beside its spreads.
Per variant: the geometric mean of each spread over seeds; every variant is compared with the
MLP of classic MAML on the log of each spread (Welch: a ratio of spreads with its 95% CI, Holm over
the variants, and the smallest ratio 5 + 5 seeds detect with 80% power).

    usage: PYTHONPATH=. python docs/study/claim2.py RUNS_DIR/FAMILY   (prints markdown)
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from study_runs import RL2_FACTOR, StudyRun, describe_budget, family_budget, study_runs

from bmaml_robot.stats import detectable_effect, holm, pooled_std, welch_test

LAST = 25
REFERENCE = "maml-mlp"
SPREADS = ("across episodes", "across tasks", "across iterations")


def spreads(run: StudyRun) -> dict[str, float]:
    """The run's three spreads of the adapted return (module docstring)."""
    data = run.evaluation()
    evaluation = data["evaluation"]
    step = int(evaluation["episodes_per_trial"]) - 1 if evaluation.get("algorithm") == "rl2" else 1
    per_task = data["per_task"]
    after = [float(r["return_after"]) for r in run.metrics()]
    last = LAST * (RL2_FACTOR if evaluation.get("algorithm") == "rl2" else 1)
    return {
        "level": float(np.mean([t["mean_return"][step] for t in per_task])),
        "across episodes": float(np.mean([t["std_over_episodes"][step] for t in per_task])),
        "across tasks": float(np.std([t["mean_return"][step] for t in per_task], ddof=1)),
        "across iterations": float(np.std(after[-last:], ddof=1)),
    }


def log_spreads(values: list[dict[str, float]], spread: str) -> np.ndarray:
    """The logs of one spread over seeds; a zero spread (e.g. one trial per task) is left out."""
    return np.log([v[spread] for v in values if v[spread] > 0])


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: claim2.py RUNS_DIR/FAMILY", file=sys.stderr)
        return 2
    family = Path(argv[0])
    variants = {name: [spreads(run) for run in runs] for name, runs in study_runs(family).items()
                if not name.endswith("-small")}
    if REFERENCE not in variants or len(variants) < 2:
        have = sorted(variants) or "none"
        print(f"{family}: claim 2 needs evaluated {REFERENCE} runs and another variant; have {have}")
        return 0
    print(f"Claim 2 on {family.name} at {describe_budget(family_budget(family) or 0)}: spread (standard deviation) "
          "of the adapted return, geometric mean over seeds\n")
    print(f"| variant | seeds | adapted return (level) | {' | '.join(SPREADS)} |")
    print("|---|---|---|" + "---|" * len(SPREADS))
    for name, values in variants.items():
        cells = [f"{math.exp(logs.mean()):.1f}" if (logs := log_spreads(values, s)).size else "n/a" for s in SPREADS]
        print(f"| {name} | {len(values)} | {np.mean([v['level'] for v in values]):.1f} | {' | '.join(cells)} |")
    others = [name for name in variants if name != REFERENCE]
    for spread in SPREADS:
        reference = log_spreads(variants[REFERENCE], spread)
        tests = []
        for name in others:
            logs = log_spreads(variants[name], spread)
            tests.append((logs, welch_test(logs, reference) if logs.size > 1 and reference.size > 1 else None))
        adjusted = holm([w.p_value if w is not None else np.nan for _, w in tests])
        print(f"\nSpread {spread}, each variant / {REFERENCE} (Welch on the logs; Holm over the variants):\n")
        print("| variant | ratio [95% CI] | p | p (Holm) | detectable ratio (80% power) |")
        print("|---|---|---|---|---|")
        for name, (logs, w), p_holm in zip(others, tests, adjusted):
            if w is None:
                ratio = f"{math.exp(logs.mean() - reference.mean()):.2f}" if logs.size and reference.size else "n/a"
                print(f"| {name} | {ratio} (too few seeds) | | | |")
                continue
            detectable = math.exp(detectable_effect(logs.size, reference.size) * pooled_std(logs, reference))
            print(f"| {name} | {math.exp(w.difference):.2f} [{math.exp(w.ci_low):.2f}, {math.exp(w.ci_high):.2f}] "
                  f"| {w.p_value:.3g} | {p_holm:.3g} | {detectable:.2f} (or 1/{detectable:.2f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
