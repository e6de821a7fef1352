"""``run.RunDir``: the policy of a run is the file that is furthest along, and old runs (their
policy.pt without an iteration count, their config with the old key names) still load."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bmaml_robot.checkpoint import load_checkpoint, save_checkpoint
from bmaml_robot.config import TrainConfig
from bmaml_robot.run import CHECKPOINT, CONFIG, FINAL_POLICY, RunDir, load_run
from bmaml_robot.train import train

TINY = TrainConfig(family="Navigation2D", num_tasks=2, episodes_per_task=2, horizon=5, num_iterations=2,
                   num_threads=1, hidden_sizes=(4,), seed=0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("runs") / "run"
    train(TINY, path)
    return path


def test_policy_pt_records_its_iteration_count(run_dir: Path) -> None:
    assert load_checkpoint(run_dir / FINAL_POLICY)["iterations"] == 2
    loaded = load_run(run_dir)
    assert (loaded.source, loaded.iterations) == (FINAL_POLICY, 2)


def test_the_file_furthest_along_wins(run_dir: Path, tmp_path: Path) -> None:
    """A finished run being extended (--resume with more iterations) has a newer checkpoint: that
    is the policy to evaluate; on a tie policy.pt is."""
    copy = tmp_path / "run"
    copy.mkdir()
    for name in (FINAL_POLICY, CHECKPOINT, CONFIG):
        (copy / name).write_bytes((run_dir / name).read_bytes())
    state = load_checkpoint(copy / CHECKPOINT)
    save_checkpoint(copy / CHECKPOINT, {**state, "next_iteration": 5})
    loaded = RunDir(copy).load()
    assert (loaded.source, loaded.iterations) == (CHECKPOINT, 5)
    # A policy.pt made before it stored a count takes its run's checkpoint count (not num_iterations).
    save_checkpoint(copy / CHECKPOINT, state)
    final = load_checkpoint(copy / FINAL_POLICY)
    del final["iterations"]
    final["config"]["num_iterations"] = 7  # what a later, shorter --resume command asked for
    save_checkpoint(copy / FINAL_POLICY, final)
    loaded = RunDir(copy).load()
    assert (loaded.source, loaded.iterations) == (FINAL_POLICY, 2)


def test_a_run_recorded_with_the_old_key_names_resumes(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    copy.mkdir()
    for name in (FINAL_POLICY, CHECKPOINT, CONFIG):
        (copy / name).write_bytes((run_dir / name).read_bytes())
    (copy / "metrics.jsonl").write_bytes((run_dir / "metrics.jsonl").read_bytes())
    renames = {"num_iterations": "num_batches", "adapt_steps": "num_steps", "eval_adapt_steps": "eval_steps"}
    for name in (FINAL_POLICY, CHECKPOINT):
        state = load_checkpoint(copy / name)
        state["config"] = {renames.get(k, k): v for k, v in state["config"].items()}
        save_checkpoint(copy / name, state)
    values = yaml.safe_load((copy / CONFIG).read_text())
    (copy / CONFIG).write_text(yaml.safe_dump({renames.get(k, k): v for k, v in values.items()}))
    assert RunDir(copy).load().config == RunDir(run_dir).load().config
    result = train(TINY.replace(num_iterations=3), copy, resume=True)
    assert [m["iteration"] for m in result.metrics] == [0, 1, 2]
