"""Claim (3) of the study: "smaller networks and batches make the frozen RNN learn faster but regress".

Per run (one seed), from the training curve of the return after adaptation (``metrics.jsonl``,
smoothed by a trailing mean over SMOOTH iterations):

- learning speed: the area under the curve over the first EARLY iterations (mean return), and the
  first iteration at which the curve reaches THRESHOLD (the iteration count if never);
- regression: the curve's peak minus its mean over the last LAST iterations (>= 0; 0 = no
  regression), and the final mean itself;
- learning speed per environment step (the small batch takes a quarter of the default's steps per
  iteration): the mean return after adaptation (unsmoothed) over the last 10% of the small runs'
  environment steps (the default's curve over the same steps: its first quarter).

The two variants (default: 100 units, 20 x 10 batch; small: 32 units, 10 x 5) are compared per
metric with Welch's test, Hedges' g and the smallest difference the seeds detect with 80% power.

    usage: PYTHONPATH=. python docs/study/claim3.py [RUNS_DIR]   (default docs/study/runs/HalfCheetahDir)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from study_runs import StudyRun, describe_budget, family_budget, study_runs

from bmaml_robot.stats import detectable_effect, pooled_std, welch_test

SMOOTH, EARLY, LAST, THRESHOLD = 5, 50, 10, 100.0
VARIANTS = {"default (100 units, 20 x 10)": "maml-rnn-frozen", "small (32 units, 10 x 5)": "maml-rnn-frozen-small"}


def curve(run: StudyRun) -> np.ndarray:
    values = np.array([float(r["return_after"]) for r in run.metrics()])
    return np.array([values[max(0, i - SMOOTH + 1) : i + 1].mean() for i in range(len(values))])


def span(runs: list[StudyRun], small: list[StudyRun]) -> tuple[int, float]:
    """(the iterations all of ``runs`` have, the environment steps the shortest of ``small`` took)."""
    return (min(len(run.metrics()) for run in runs),
            min(float(sum(r["env_steps"] for r in run.metrics())) for run in small))


def at_steps(run: StudyRun, steps: float) -> float:
    """Mean return after adaptation over the iterations ending in the last 10% of ``steps``."""
    records = run.metrics()
    done = np.cumsum([float(r["env_steps"]) for r in records])
    window = (done > 0.9 * steps) & (done <= steps)
    return float(np.mean([float(r["return_after"]) for r, inside in zip(records, window) if inside]))


def run_metrics(run: StudyRun, length: int, steps: float) -> dict[str, float]:
    """The claim's measures (module docstring) over ``length`` iterations and ``steps`` env steps."""
    c = curve(run)[:length]
    reached = np.flatnonzero(c >= THRESHOLD)
    return {
        f"mean return, iterations 0-{EARLY - 1}": float(c[:EARLY].mean()),
        f"first iteration at {THRESHOLD:g}": float(reached[0]) if reached.size else float(length),
        "peak - final (regression)": float(c.max() - c[-LAST:].mean()),
        f"final (last {LAST})": float(c[-LAST:].mean()),
        f"at {steps / 1e6:.2f} M environment steps": at_steps(run, steps),
    }


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else "docs/study/runs/HalfCheetahDir")
    evaluated = study_runs(root)
    runs = {name: evaluated.get(variant, []) for name, variant in VARIANTS.items()}
    if any(len(r) < 2 for r in runs.values()):
        print(f"{root}: claim 3 needs >= 2 finished seeds per variant; have "
              + ", ".join(f"{name}: {len(r)}" for name, r in runs.items()))
        return 0
    length, steps = span([p for r in runs.values() for p in r], runs["small (32 units, 10 x 5)"])
    values = {name: [run_metrics(p, length, steps) for p in r] for name, r in runs.items()}
    (a_name, a), (b_name, b) = values.items()
    print(f"Claim 3 on {root} at {describe_budget(family_budget(root) or 0)}: {a_name} ({len(a)} seeds) vs "
          f"{b_name} ({len(b)} seeds), first {length} iterations, curves smoothed over {SMOOTH}\n")
    print("| metric | default | small | small - default, Welch 95% CI | p | Hedges' g | detectable (80% power) |")
    print("|---|---|---|---|---|---|---|")
    for metric in a[0]:
        x, y = np.array([m[metric] for m in a]), np.array([m[metric] for m in b])
        w = welch_test(y, x)
        detectable = detectable_effect(x.size, y.size) * pooled_std(x, y)
        print(f"| {metric} | {x.mean():.1f} | {y.mean():.1f} | {w.difference:+.1f} [{w.ci_low:+.1f}, {w.ci_high:+.1f}] "
              f"| {w.p_value:.3g} | {w.hedges_g:+.2f} | {detectable:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
