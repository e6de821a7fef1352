"""What a run logs as it goes: TensorBoard event files readable by TensorBoard's own reader,
held-out evaluation during training (``eval_every``), and the run's provenance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bmaml_robot.checkpoint import read_jsonl
from bmaml_robot.config import TrainConfig
from bmaml_robot.evaluate import evaluate
from bmaml_robot.provenance import git_state
from bmaml_robot.run_log import PROVENANCE, TENSORBOARD_DIR
from bmaml_robot.train import train

TINY = dict(family="Navigation2D", num_tasks=2, episodes_per_task=2, horizon=10, num_iterations=4, num_threads=1,
            hidden_sizes=(8,), seed=0, eval_every=2, eval_adapt_steps=1, eval_tasks=3, eval_episodes=2)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the run's event files, read by TensorBoard's own event reader."""
    accumulator_module = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    accumulator = accumulator_module.EventAccumulator(str(run_dir / TENSORBOARD_DIR))
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def test_tensorboard_holds_the_metrics_and_the_held_out_evaluation(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    result = train(TrainConfig(**TINY), tmp_path / "run")
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    logged = scalars(tmp_path / "run")
    assert [step for step, _ in logged["returns/after_adaptation"]] == [0, 1, 2, 3]
    for tag, key in (("returns/before_adaptation", "return_before"), ("returns/after_adaptation", "return_after"),
                     ("trpo/kl_after", "kl_after"), ("trpo/line_search_steps", "ls_steps")):
        np.testing.assert_allclose([v for _, v in logged[tag]], [m[key] for m in metrics], rtol=1e-6)
    assert {"trpo/grad_norm", "time/iteration_s", "env_steps/total", "returns/gain"} <= set(logged)
    assert logged["env_steps/total"][-1][1] == sum(m["env_steps"] for m in metrics)
    # Held-out evaluation every 2 iterations: after iterations 1 and 3 only.
    assert [("eval_return_step1" in m) for m in metrics] == [False, True, False, True]
    assert [step for step, _ in logged["eval/return_step1"]] == [1, 3]
    # The last one is exactly bmaml-eval's on the final policy (same tasks, noise and steps).
    final = evaluate(tmp_path / "run", adapt_steps=1, num_tasks=3, episodes=2, write=False)
    assert metrics[-1]["eval_return_step0"] == pytest.approx(final.summary[0]["mean"], rel=1e-12)
    assert metrics[-1]["eval_return_step1"] == pytest.approx(final.summary[1]["mean"], rel=1e-12)
    assert result.metrics == metrics


def test_evaluation_during_training_changes_nothing_else(tmp_path: Path) -> None:
    with_eval = train(TrainConfig(**TINY), tmp_path / "a").metrics
    without = train(TrainConfig(**{**TINY, "eval_every": 0}), tmp_path / "b").metrics
    strip = lambda ms: [{k: v for k, v in m.items() if not k.endswith("time_s") and not k.startswith("eval_")}  # noqa: E731
                        for m in ms]
    assert strip(with_eval) == strip(without)


def test_a_resumed_run_purges_the_recomputed_steps_and_records_each_session(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    train(TrainConfig(**{**TINY, "num_iterations": 2}), run)
    train(TrainConfig(**TINY), run, resume=True)
    train(TrainConfig(**TINY), run, resume=True)  # finished: nothing trained, no session recorded
    logged = scalars(run)
    assert [step for step, _ in logged["returns/after_adaptation"]] == [0, 1, 2, 3]
    sessions = json.loads((run / PROVENANCE).read_text())
    assert [s["start_iteration"] for s in sessions] == [0, 2]
    commit, _ = git_state()
    for session in sessions:
        assert session["package_version"] and session["torch"] == torch.__version__
        assert session["git_commit"] == commit  # None outside a checkout


def test_eval_every_flag(tmp_path: Path) -> None:
    from bmaml_robot.cli import train_main

    argv = ["--config", "2d-navigation", "--set", "num_tasks=2", "--set", "episodes_per_task=2", "--set", "horizon=5",
            "--set", "eval_tasks=2", "--set", "eval_episodes=1", "--num-iterations", "2", "--num-threads", "1",
            "--eval-every", "1", "--out", str(tmp_path / "run"), "--quiet"]
    assert train_main(argv) == 0
    assert all("eval_return_step1" in m for m in read_jsonl(tmp_path / "run" / "metrics.jsonl"))
