"""What the study's analysis scripts (settled.py, claim2/3/5.py, verdicts.py, compute.py) share:
which directories are study runs, the budget a family is compared at, each run's evaluation and
metrics at that budget, and the runs directory argument.

A family is compared at one *budget* (meta-training length, counted in MAML meta-iterations; an
RL^2 run trains RL2_FACTOR iterations per MAML iteration: equal environment steps), so that runs
already extended (run_study.sh's EXTEND) are never mixed with runs that are not: an extended run
keeps the evaluation of its earlier budget as ``eval-it<N>.json`` beside its latest ``eval.json``.
The budget is the one the most runs of the family are evaluated at (a tie: the longer one).

    usage: PYTHONPATH=. python docs/study/study_runs.py RUNS_DIR/FAMILY [EVAL_DIR]
           prints "BUDGET ENV_STEPS" (the family's budget and a MAML run's environment steps at it;
           nothing when no run is evaluated), then its compared runs one per line; with EVAL_DIR, makes
           EVAL_DIR/<run>/eval.json links to their evaluations at the budget (bmaml-compare --eval-dir)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: ``<variant>-seed<k>``: the study's variants (run_study.sh), e.g. ``maml-rnn-frozen-small``.
RUN_NAME = re.compile(r"((?:maml|rl2)-(?:mlp|rnn|gru|lstm)(?:-(?:frozen|outer))?(?:-small)?)-seed(\d+)")
#: run_study.sh's RL2_FACTOR (its environment variable): RL^2 iterations per MAML iteration
#: (4,000 vs 40,000 environment steps).
RL2_FACTOR = int(os.environ.get("RL2_FACTOR", "10"))


def metrics(run: Path) -> list[dict[str, Any]]:
    """The run's metrics.jsonl records; a torn last line (a run killed while writing) is skipped."""
    records = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


@dataclass(frozen=True)
class StudyRun:
    """One run as compared at its family's budget."""

    path: Path
    eval_file: Path  #: its evaluation at the budget (eval.json or eval-it<N>.json)
    iterations: int  #: its training iterations at the budget

    @property
    def name(self) -> str:
        return self.path.name

    def metrics(self) -> list[dict[str, Any]]:
        """Its metrics.jsonl records up to the budget."""
        return metrics(self.path)[: self.iterations]

    def evaluation(self) -> dict[str, Any]:
        """Its bmaml-eval results at the budget."""
        result: dict[str, Any] = json.loads(self.eval_file.read_text())
        return result


def budget_of(run: Path, iterations: int) -> int:
    """``iterations`` of ``run`` as a budget (MAML meta-iterations of equal environment steps)."""
    return iterations // RL2_FACTOR if run.name.startswith("rl2-") else iterations


def evaluations(run: Path) -> dict[int, StudyRun]:
    """{budget: the run at it} for every evaluation the run holds of iterations it has trained."""
    if not (run / "metrics.jsonl").is_file():
        return {}
    trained = len(metrics(run))
    found = {}
    for path in sorted(run.glob("eval*.json")):
        iterations = int(json.loads(path.read_text())["iterations_trained"])
        if iterations <= trained:
            found[budget_of(run, iterations)] = StudyRun(run, path, iterations)
    return found


def study_run_dirs(family: Path) -> list[Path]:
    """The family's run directories, by name."""
    return sorted((p for p in family.iterdir() if RUN_NAME.fullmatch(p.name)), key=lambda p: p.name)


def family_budget(family: Path) -> int | None:
    """The budget the family is compared at (module docstring); None when nothing is evaluated."""
    counts = Counter(budget for run in study_run_dirs(family) for budget in evaluations(run))
    return max(counts, key=lambda b: (counts[b], b)) if counts else None


def study_runs(family: Path, budget: int | None = None) -> dict[str, list[StudyRun]]:
    """{variant: its runs evaluated at ``budget`` (default: the family's), by seed} in ``family``."""
    budget = family_budget(family) if budget is None else budget
    variants: dict[str, list[StudyRun]] = {}
    for run in study_run_dirs(family):
        at = evaluations(run).get(budget) if budget is not None else None
        if at is not None:
            variants.setdefault(RUN_NAME.fullmatch(run.name).group(1), []).append(at)  # type: ignore[union-attr]
    return variants


def describe_budget(budget: int) -> str:
    """E.g. "150 MAML iterations (RL^2: 1,500: equal environment steps)"."""
    return f"{budget} MAML iterations (RL^2: {budget * RL2_FACTOR:,}: equal environment steps)"


def runs_dir(argv: list[str]) -> Path | None:
    """The study's runs directory: ``argv[0]``, default ``docs/study/runs``; None (the error printed)
    when it is not a directory."""
    root = Path(argv[0] if argv else "docs/study/runs")
    if not root.is_dir():
        print(f"RUNS_DIR: expected the study's runs directory, got {root}", file=sys.stderr)
        return None
    return root


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2) or not Path(argv[0]).is_dir():
        print("usage: study_runs.py RUNS_DIR/FAMILY [EVAL_DIR]", file=sys.stderr)
        return 2
    family = Path(argv[0])
    budget = family_budget(family)
    if budget is None:
        return 0
    runs = [run for variant in study_runs(family, budget).values() for run in variant]
    if len(argv) == 2:
        links = Path(argv[1])
        shutil.rmtree(links, ignore_errors=True)
        for run in runs:
            (links / run.name).mkdir(parents=True)
            os.symlink(os.path.relpath(run.eval_file.resolve(), (links / run.name).resolve()),
                       links / run.name / "eval.json")
    maml = next((run for run in runs if run.name.startswith("maml-") and "-small-" not in run.name), runs[0])
    print(budget, int(sum(float(r["env_steps"]) for r in maml.metrics())))
    print("\n".join(str(run.path) for run in runs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
