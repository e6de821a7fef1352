"""The README's reproduction table, from the run directories made by run_reproduction.sh.

    python docs/reproduce/make_table.py [RUNS_DIR]     # prints the table, writes RUNS_DIR/table.md

Per family (runs ``RUNS_DIR/<config>-seed<k>``, every number a mean over seeds):
- untrained: the same architecture and seed at initialisation, held out (``bmaml-eval --initial``,
  ``RUN/initial/eval.json``), before and after one adaptation step;
- meta-trained, held out (``bmaml-eval``, ``RUN/eval.json``): before adaptation and after 1 and 3
  steps, and the gain of one step; with two seeds or more each seed's value in parentheses, with
  one seed the 95% interval over the held-out tasks (paired for the gain; each value is a mean over
  40 held-out tasks x 20 episodes);
- training: the meta-batch's return before and after adaptation, mean of the last 10 iterations
  (``metrics.jsonl``).
Nothing is computed here but means: every number comes from the shipped tools' files.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

ORDER = ["halfcheetah-dir", "halfcheetah-vel", "ant-dir", "ant-vel", "ant-goal", "swimmer-dir", "swimmer-vel",
         "2d-navigation", "halfcheetah-crippled", "swimmer-fluid", "halfcheetah-mass", "ant-crippled", "hopper-params",
         "walker2d-params"]
LAST = 10


def runs_by_config(root: Path) -> dict[str, list[Path]]:
    runs: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(root.iterdir()):
        match = re.fullmatch(r"(.+)-seed(\d+)", path.name)
        if match and (path / "metrics.jsonl").is_file():
            runs[match.group(1)].append(path)
    return runs


def step_means(path: Path) -> tuple[list[float], list[tuple[float, float]], int, list[float],
                                   list[tuple[float, float]]] | None:
    """Per adaptation step: the mean over tasks and its 95% CI over tasks; the iterations behind it;
    the gain over step 0 and its paired 95% CI over tasks."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    rows = data["per_step"]
    return ([r["mean"] for r in rows], [(r["ci_low"], r["ci_high"]) for r in rows], data["iterations_trained"],
            [r["gain_mean"] for r in rows], [(r["gain_ci_low"], r["gain_ci_high"]) for r in rows])


def cell(values: list[float], task_ci: tuple[float, float] | None = None) -> str:
    """Mean over seeds with each seed's value in parentheses (two seeds or more: a t-interval over
    two seeds says little), or one seed's value with its 95% CI over the held-out tasks."""
    if len(values) >= 2:
        return f"{np.mean(values):.1f} ({', '.join(f'{v:.1f}' for v in values)})"
    if task_ci is not None:
        return f"{values[0]:.1f} [{task_ci[0]:.1f}, {task_ci[1]:.1f}]"
    return f"{values[0]:.1f}"


def row(config: str, runs: list[Path]) -> str:
    settings = yaml.safe_load((runs[0] / "config.yaml").read_text())
    family = settings["family"]
    batch = f"{settings['num_tasks']} x {settings['episodes_per_task']}"
    trained = [step_means(run / "eval.json") for run in runs]
    initial = [step_means(run / "initial" / "eval.json") for run in runs]
    metrics = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in runs]
    iterations = sorted({len(m) for m in metrics})
    before = [float(np.mean([m["return_before"] for m in ms[-LAST:]])) for ms in metrics]
    after = [float(np.mean([m["return_after"] for m in ms[-LAST:]])) for ms in metrics]
    cells = [f"`{family}`", batch, "/".join(map(str, iterations)), str(len(runs))]
    if all(i is not None for i in initial):
        cells.append(f"{np.mean([i[0][0] for i in initial]):.1f} / {np.mean([i[0][1] for i in initial]):.1f}")
    else:
        cells.append("")
    if all(t is not None for t in trained):
        evaluated = sorted({t[2] for t in trained})
        for step in (0, 1, 3):
            one_seed_ci = trained[0][1][step] if len(trained) == 1 else None
            cells.append(cell([t[0][step] for t in trained], one_seed_ci))
        one_seed_gain_ci = trained[0][4][1] if len(trained) == 1 else None
        cells.append(cell([t[3][1] for t in trained], one_seed_gain_ci))
        cells[2] += "" if evaluated == iterations else f" (eval at {'/'.join(map(str, evaluated))})"
    else:
        cells += ["", "", "", ""]
    cells.append(f"{np.mean(before):.1f} -> {np.mean(after):.1f}")
    return "| " + " | ".join(cells) + " |"


def table(root: Path) -> str:
    runs = runs_by_config(root)
    header = [
        "| family | batch (tasks x episodes) | meta-iterations | seeds | untrained, held out: before / after 1 step "
        "| meta-trained, held out: before adaptation | after 1 step | after 3 steps | gain of 1 step "
        f"| training, last {LAST} iterations: before -> after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    configs = [c for c in ORDER if c in runs] + sorted(set(runs) - set(ORDER))
    return "\n".join(header + [row(config, runs[config]) for config in configs]) + "\n"


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else Path(__file__).parent)
    text = table(root)
    (root / "table.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
