"""Have the study's curves settled? One table per family: each variant's return after adaptation.

Per run, the training curve of the return after adaptation (``metrics.jsonl``; RL^2: the trial's
last episode) is averaged over the last WINDOW iterations and over the WINDOW before them; the
run's *change* is the difference of the two. Per variant: the mean over seeds of the last window,
the mean change with its 95% t-interval over seeds, and the change as a share of the last window.
A variant counts as settled when its change is below SETTLED (5%) of its level, or when the
interval holds 0 and its upper end is below 2 x SETTLED. A curve still rising by more than that
means the comparison at this length is one of learning speed, not of where the variants end.

    usage: PYTHONPATH=. python docs/study/settled.py RUNS_DIR/FAMILY   (prints a markdown table)
    env:   WINDOW=25
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np

from bmaml_robot.stats import mean_ci

WINDOW = int(os.environ.get("WINDOW", "25"))
SETTLED = 0.05


def change(run: Path) -> tuple[int, float, float] | None:
    """(iterations, mean of the last window, last window minus the one before) or None if too short."""
    values = [json.loads(line)["return_after"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    if len(values) < 2 * WINDOW:
        return None
    last, before = np.mean(values[-WINDOW:]), np.mean(values[-2 * WINDOW : -WINDOW])
    return len(values), float(last), float(last - before)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: settled.py RUNS_DIR/FAMILY", file=sys.stderr)
        return 2
    family = Path(argv[0])
    variants: dict[str, list[tuple[int, float, float]]] = {}
    for run in sorted(family.iterdir()):
        match = re.fullmatch(r"(.+)-seed\d+", run.name)
        if match and (run / "metrics.jsonl").is_file() and (figures := change(run)) is not None:
            variants.setdefault(match.group(1), []).append(figures)
    print(f"{family.name}: return after adaptation, mean of the last {WINDOW} iterations and its change "
          f"from the {WINDOW} before (95% t-interval over seeds)\n")
    print("| variant | seeds | iterations | last window | change | change / level | settled? |")
    print("|---|---|---|---|---|---|---|")
    for name, runs in variants.items():
        iterations = sorted({r[0] for r in runs})
        level = float(np.mean([r[1] for r in runs]))
        deltas = np.array([r[2] for r in runs])
        mean = float(deltas.mean())
        if deltas.size > 1:
            ci = mean_ci(deltas)
            low, high = ci.low, ci.high
            interval = f"{mean:+.1f} [{low:+.1f}, {high:+.1f}]"
        else:
            low = high = mean
            interval = f"{mean:+.1f} (1 seed)"
        share = mean / abs(level) if level else float("inf")
        settled = abs(share) < SETTLED or (low <= 0 <= high and high < 2 * SETTLED * abs(level))
        print(f"| {name} | {len(runs)} | {', '.join(map(str, iterations))} | {level:.1f} | {interval} "
              f"| {share:+.1%} | {'yes' if settled else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
