"""The study's scripts (docs/study): run_study.sh trains, evaluates, resumes and extends runs without
redoing finished work; make_report.sh turns evaluated runs into the reports of every claim.

Tiny settings (2 meta-iterations of the study's batch, RL^2 at RL2_FACTOR 1, 2 held-out tasks)
keep it to about a minute (mostly the CLIs' start-up). The scripts run the CLIs of the package this test imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bmaml_robot

REPO = Path(__file__).resolve().parents[2]
STUDY = REPO / "docs" / "study"

pytestmark = pytest.mark.skipif(not (STUDY / "run_study.sh").is_file(), reason="docs/study is not in this tree")


def environment(**extra: str) -> dict[str, str]:
    python = sys.executable
    return {
        **os.environ,
        "PYTHONPATH": str(Path(bmaml_robot.__file__).parent.parent),
        "BMAML_TRAIN": f"{python} -m bmaml_robot.cli",
        "BMAML_EVAL": f"{python} -m bmaml_robot.evaluate",
        "BMAML_COMPARE": f"{python} -m bmaml_robot.compare",
        "PYTHON": python,
        "ITERS": "2", "RL2_FACTOR": "1", "JOBS": "2",
        "EVAL_TASKS": "2", "EVAL_EPISODES": "2", "EVAL_TRIALS": "1",
        **extra,
    }


def study(runs: Path, only: str) -> str:
    # cwd: not the source tree, whose bmaml_robot (no built core) `python -m` would import first.
    result = subprocess.run(["bash", str(STUDY / "run_study.sh"), str(runs)], env=environment(ONLY=only),
                            capture_output=True, text=True, timeout=600, cwd=runs.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout, result.stdout + result.stderr
    return result.stdout


def trained(run: Path) -> tuple[int, int]:
    """(meta-iterations in metrics.jsonl, iterations_trained of eval.json)."""
    lines = len((run / "metrics.jsonl").read_text().splitlines())
    return lines, json.loads((run / "eval.json").read_text())["iterations_trained"]


def test_the_study_resumes_extends_and_reports(tmp_path: Path) -> None:
    runs, family = tmp_path / "runs", "HalfCheetahDir"
    names = ["maml-mlp-seed0", "maml-mlp-seed1", "rl2-gru-seed0", "maml-rnn-frozen-seed0", "maml-rnn-frozen-small-seed0"]
    printed = study(runs, " ".join(f"{family}:{name.replace('-seed', ':')}" for name in names))
    for name in names:
        assert f"done {runs / family / name}" in printed
        assert trained(runs / family / name) == (2, 2), name
        assert (runs / family / name / "policy.pt").is_file()

    # Run again: nothing is retrained or re-evaluated.
    run = runs / family / "maml-mlp-seed0"
    metrics, evaluation = (run / "metrics.jsonl").read_text(), (run / "eval.json").stat().st_mtime_ns
    study(runs, f"{family}:maml-mlp:0")
    assert (run / "metrics.jsonl").read_text() == metrics and (run / "eval.json").stat().st_mtime_ns == evaluation

    # Extend it to 3 iterations: it continues (its first two iterations kept) and is re-evaluated,
    # its evaluation at 2 kept as eval-it2.json; the same run twice in one call runs once at a time
    # (the second finds it done).
    first_evaluation = (run / "eval.json").read_text()
    study(runs, f"{family}:maml-mlp:0:3 {family}:maml-mlp:0:3")
    assert trained(run) == (3, 3) and (run / "metrics.jsonl").read_text().startswith(metrics)
    assert (run / "eval-it2.json").read_text() == first_evaluation

    out = tmp_path / "reports"
    result = subprocess.run(["bash", str(STUDY / "make_report.sh"), str(runs), str(out)],
                            env=environment(FAMILIES=family, SHARE="0.5"), capture_output=True, text=True, timeout=600,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # One budget per family: the one most runs are evaluated at (2; the extended run counts with its
    # evaluation and curve at 2), every comparison ends there.
    maml_report = (out / family / "maml" / "report.md").read_text()
    assert "| mlp | 2 |" in maml_report and "compared on iterations 0-1" in maml_report
    assert json.loads((out / family / "evals" / run.name / "eval.json").read_text())["iterations_trained"] == 2
    # Claim 3 per environment step, up to the small runs' budget (2 x 10,000 steps: here shorter
    # than one iteration of the default batch, whose run is left out and listed).
    small = (out / family / "small" / "report.md").read_text()
    assert "hidden_size=32-num_tasks=10" in small and "equal environment steps" in small
    assert "equal environment steps" in (out / family / "maml-vs-rl2" / "report.md").read_text()
    claim5 = (out / family / "claim5.md").read_text()
    assert "| rl2-gru | 1 |" in claim5 and "| maml-mlp | 2 |" in claim5 and "Holm" in claim5
    claim2 = (out / family / "claim2.md").read_text()
    assert "| maml-mlp | 2 |" in claim2 and "| rl2-gru | 1 |" in claim2 and "Spread across tasks" in claim2
    settled = (out / family / "settled.md").read_text()
    assert "| maml-mlp | 2 | 2 |" in settled and "| rl2-gru | 1 | 2 |" in settled
    assert "at 2 MAML iterations" in settled
    verdicts = (out / "verdicts.md").read_text()  # no frozen RNN, one RL^2 seed: every claim waits
    assert f"| (1) | {family} | 2 | pending" in verdicts and f"| (5) | {family} | 2 | pending" in verdicts
    assert f"| 5 | {family} | rl2-gru - maml-mlp | held-out adapted return | 1 + 2 |" in verdicts
    compute = (out / "compute.md").read_text()
    assert f"| {family} | maml-mlp | 2 | 5 |" in compute and f"| {family} | rl2-gru | 1 | 2 |" in compute


@pytest.mark.parametrize("variable, value, message", [
    ("ONLY", "HalfCheetahDir:maml-mlp", "ONLY: expected family:variant:seed[:iterations] items"),
    ("EXTEND", "HalfCheetahDir", "EXTEND: expected FAMILY:ITERATIONS items"),
])
def test_the_study_refuses_malformed_lists(tmp_path: Path, variable: str, value: str, message: str) -> None:
    result = subprocess.run(["bash", str(STUDY / "run_study.sh"), str(tmp_path)], env=environment(**{variable: value}),
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_first_pass_leaves_a_run_whose_extension_is_under_way(tmp_path: Path) -> None:
    """A run past the first pass's length but short of its own (an extension killed midway) is left to
    the extension's pass: the first pass neither cuts it short nor evaluates it at an odd length."""
    runs, family = tmp_path / "runs", "HalfCheetahDir"
    run = runs / family / "maml-mlp-seed0"
    study(runs, f"{family}:maml-mlp:0:3")
    config = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(config.replace("num_iterations: 3 ", "num_iterations: 5 "))
    printed = study(runs, f"{family}:maml-mlp:0")
    assert f"skipped {run}: past 2 iterations, its extension to 5 under way" in printed
    assert trained(run) == (3, 3) and not (run / "eval-it3.json").exists()
