"""Have the study's curves settled? One table per family: each variant's return after adaptation.

Per run (up to the family's budget: study_runs.py), the training curve of the return after adaptation
(``metrics.jsonl``; RL^2: the trial's last episode) is averaged over the iterations of the last
SHARE of its environment steps and over the SHARE before them (the same share of training for
MAML and for RL^2, whose iterations are 10x smaller); the run's *change* is the difference of the
two. Per variant: the mean over seeds of the last window, the mean change with its 95% t-interval
over seeds, and the change as a share of the last window. A variant counts as settled when its
change is within SETTLED (5%) of its level, or when the interval holds 0 and both its ends are
within 2 x SETTLED. A curve still rising (or falling) by more means a comparison at this length
is one of learning speed (or of a regression), not of where the variants end.

    usage: PYTHONPATH=. python docs/study/settled.py RUNS_DIR/FAMILY   (prints a markdown table)
    env:   SHARE=0.1667 (1/6: 25 of 150 MAML iterations)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from study_runs import StudyRun, describe_budget, family_budget, study_runs

from bmaml_robot.stats import mean_ci

SHARE = float(os.environ.get("SHARE", str(1 / 6)))
SETTLED = 0.05


def change(run: StudyRun) -> tuple[int, float, float] | None:
    """(iterations, mean of the last window, last window minus the one before) or None if too short."""
    records = run.metrics()
    steps = np.cumsum([float(r["env_steps"]) for r in records])
    values = np.array([float(r["return_after"]) for r in records])
    total = steps[-1] if len(steps) else 0.0
    last = steps > total * (1 - SHARE)
    before = (steps > total * (1 - 2 * SHARE)) & ~last
    if not last.any() or not before.any():
        return None
    return len(values), float(values[last].mean()), float(values[last].mean() - values[before].mean())


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: settled.py RUNS_DIR/FAMILY", file=sys.stderr)
        return 2
    family = Path(argv[0])
    print(f"{family.name} at {describe_budget(family_budget(family) or 0)}: return after adaptation, mean over the "
          f"last {SHARE:.0%} of each run's environment steps and its change from the {SHARE:.0%} before "
          "(95% t-interval over seeds)\n")
    print("| variant | seeds | iterations | last window | change | change / level | settled? |")
    print("|---|---|---|---|---|---|---|")
    for name, runs in study_runs(family).items():
        figures = [f for f in map(change, runs) if f is not None]
        if not figures:
            continue
        iterations = sorted({f[0] for f in figures})
        level = float(np.mean([f[1] for f in figures]))
        deltas = np.array([f[2] for f in figures])
        mean = float(deltas.mean())
        low = high = mean
        interval = f"{mean:+.1f} (1 seed)"
        if deltas.size > 1:
            ci = mean_ci(deltas)
            low, high = ci.low, ci.high
            interval = f"{mean:+.1f} [{low:+.1f}, {high:+.1f}]"
        scale = abs(level) or float("inf")
        settled = abs(mean) < SETTLED * scale or (low <= 0 <= high and max(-low, high) < 2 * SETTLED * scale)
        print(f"| {name} | {len(figures)} | {', '.join(map(str, iterations))} | {level:.1f} | {interval} "
              f"| {mean / scale:+.1%} | {'yes' if settled else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
