"""What the study's analysis scripts (settled.py, claim3.py, claim5.py) share: which directories
are study runs, which of them are evaluated at their latest iteration, and their metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

#: ``<variant>-seed<k>``: the study's variants (run_study.sh), e.g. ``maml-rnn-frozen-small``.
RUN_NAME = re.compile(r"((?:maml|rl2)-(?:mlp|rnn|gru|lstm)(?:-(?:frozen|outer))?(?:-small)?)-seed(\d+)")


def metrics(run: Path) -> list[dict[str, Any]]:
    """The run's metrics.jsonl records; a torn last line (a run killed while writing) is skipped."""
    records = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def evaluated_at_latest(run: Path) -> bool:
    """Whether the run's eval.json is of its latest meta-iteration (run_study.sh re-evaluates a run
    that has moved on; a run still training is left out)."""
    if not (run / "eval.json").is_file() or not (run / "metrics.jsonl").is_file():
        return False
    return int(json.loads((run / "eval.json").read_text())["iterations_trained"]) == len(metrics(run))


def study_runs(family: Path) -> dict[str, list[Path]]:
    """{variant: its runs evaluated at their latest iteration, by seed} in ``family``'s directory."""
    variants: dict[str, list[Path]] = {}
    for run in sorted(family.iterdir(), key=lambda p: p.name):
        match = RUN_NAME.fullmatch(run.name)
        if match and evaluated_at_latest(run):
            variants.setdefault(match.group(1), []).append(run)
    return variants
