"""The study's compute: process-hours of training per family and variant, from every run's
``metrics.jsonl`` (each meta-iteration's ``time_s``: sampling and update, one thread per run), and
the median time per MAML iteration (RL^2: per 10 iterations, the same environment steps). Pilot
runs (e.g. ``-lr0.1``) are rows of their own; runs in progress count too; held-out evaluations
(about 1-3 minutes per run) do not. The times are as measured on a shared machine (two runs per two
cores, plus whatever else ran), not a benchmark.

    usage: PYTHONPATH=. python docs/study/compute.py [RUNS_DIR]   (default docs/study/runs; prints markdown)
"""

from __future__ import annotations

import re
import sys

import numpy as np
from study_runs import metrics, runs_dir


def main(argv: list[str]) -> int:
    root = runs_dir(argv)
    if root is None:
        return 2
    print("Study compute: training time from the runs' metrics (process-hours, one thread each; "
          "evaluations not included)\n")
    print("| family | variant | runs | iterations | process-hours | median s per MAML iteration (RL^2: per 10) |")
    print("|---|---|---|---|---|---|")
    total = 0.0
    for family in sorted(p for p in root.iterdir() if p.is_dir()):
        variants: dict[str, list[list[float]]] = {}
        for run in sorted(family.iterdir()):
            match = re.fullmatch(r"(.+)-seed\d+", run.name)  # the study's variants and its pilots
            if match and (run / "metrics.jsonl").is_file():
                variants.setdefault(match.group(1), []).append([float(r["time_s"]) for r in metrics(run)])
        for variant, runs in sorted(variants.items()):
            hours = sum(map(sum, runs)) / 3600
            total += hours
            per = np.median(np.concatenate(runs)) * (10 if variant.startswith("rl2-") else 1)
            print(f"| {family.name} | {variant} | {len(runs)} | {sum(map(len, runs))} | {hours:.2f} | {per:.1f} |")
    print(f"\nTotal: {total:.1f} process-hours of training.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
