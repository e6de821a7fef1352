"""The study's budget rule (docs/study/study_runs.py): a family is compared at one meta-training length,
the one most runs are evaluated at; a run extended further counts with its evaluation and curve at
that length, never with its longer one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

STUDY = Path(__file__).resolve().parents[2] / "docs" / "study"
pytestmark = pytest.mark.skipif(not (STUDY / "study_runs.py").is_file(), reason="docs/study is not in this tree")
sys.path.insert(0, str(STUDY))
study_runs = pytest.importorskip("study_runs")


def run(family: Path, name: str, trained: int, evaluated: list[int]) -> Path:
    """A run of ``trained`` iterations with evaluations at ``evaluated`` (the last as eval.json)."""
    path = family / name
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps({"iteration": i, "env_steps": 10}) + "\n"
                                                for i in range(trained)))
    for k, iterations in enumerate(evaluated):
        file = "eval.json" if k == len(evaluated) - 1 else f"eval-it{iterations}.json"
        (path / file).write_text(json.dumps({"iterations_trained": iterations}))
    return path


def test_a_family_is_compared_at_the_budget_most_runs_reached(tmp_path: Path) -> None:
    factor = study_runs.RL2_FACTOR
    run(tmp_path, "maml-mlp-seed0", 300, [150, 300])  # extended
    run(tmp_path, "maml-mlp-seed1", 185, [150])  # extension under way: its evaluation is at 150
    run(tmp_path, "maml-rnn-frozen-seed0", 150, [150])
    run(tmp_path, "rl2-gru-seed0", 150 * factor, [150 * factor])  # equal environment steps
    run(tmp_path, "rl2-gru-seed1", 40, [])  # not evaluated yet
    (tmp_path / "notes").mkdir()  # not a run
    assert study_runs.family_budget(tmp_path) == 150
    runs = study_runs.study_runs(tmp_path)
    assert {name: [r.name for r in rs] for name, rs in runs.items()} == {
        "maml-mlp": ["maml-mlp-seed0", "maml-mlp-seed1"], "maml-rnn-frozen": ["maml-rnn-frozen-seed0"],
        "rl2-gru": ["rl2-gru-seed0"]}
    extended = runs["maml-mlp"][0]
    assert extended.eval_file.name == "eval-it150.json" and len(extended.metrics()) == 150
    assert runs["rl2-gru"][0].iterations == 150 * factor
    # Once as many runs reached the longer budget, the family moves on to it.
    assert [r.name for r in study_runs.study_runs(tmp_path, 300)["maml-mlp"]] == ["maml-mlp-seed0"]
    for name in ("maml-mlp-seed1", "maml-rnn-frozen-seed0"):
        (tmp_path / name / "eval.json").rename(tmp_path / name / "eval-it150.json")
        (tmp_path / name / "metrics.jsonl").write_text("{}\n" * 300)
        (tmp_path / name / "eval.json").write_text(json.dumps({"iterations_trained": 300}))
    (tmp_path / "rl2-gru-seed0" / "metrics.jsonl").write_text("{}\n" * 300 * factor)
    (tmp_path / "rl2-gru-seed0" / "eval-it3000.json").write_text(json.dumps({"iterations_trained": 300 * factor}))
    assert study_runs.family_budget(tmp_path) == 300


def test_an_evaluation_beyond_the_metrics_is_not_counted(tmp_path: Path) -> None:
    """(metrics.jsonl restored from an older commit than eval.json: the evaluation is of a policy the
    metrics do not reach)"""
    run(tmp_path, "maml-mlp-seed0", 100, [150])
    assert study_runs.family_budget(tmp_path) is None and study_runs.study_runs(tmp_path) == {}
