"""Runs made before the action convention (no ``action_scale`` in their files) keep the
convention they were trained with: their policy acts in the robot's own units (scale 1 on the
MuJoCo robots). They load, resume and export that way, with a note in the log.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from bmaml_robot.checkpoint import load_checkpoint, read_jsonl, save_checkpoint
from bmaml_robot.cli import train_main
from bmaml_robot.config import TrainConfig
from bmaml_robot.run import CHECKPOINT, CONFIG, FINAL_POLICY, METRICS, load_run
from bmaml_robot.train import train


def tiny(**overrides) -> TrainConfig:
    values = dict(family="HalfCheetahDir", num_tasks=2, episodes_per_task=2, horizon=10, num_iterations=1,
                  num_threads=1, hidden_sizes=(8,), seed=0)
    return TrainConfig(**{**values, **overrides})


def make_legacy(run_dir: Path) -> None:
    """Remove ``action_scale`` from every file of the run, as a run made before it existed."""
    for name in (CHECKPOINT, FINAL_POLICY):
        state = load_checkpoint(run_dir / name)
        del state["config"]["action_scale"]
        save_checkpoint(run_dir / name, state)
    values = yaml.safe_load((run_dir / CONFIG).read_text())
    del values["action_scale"]
    (run_dir / CONFIG).write_text(yaml.safe_dump(values))


def test_an_old_run_loads_resumes_and_exports_in_robot_units(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    old, reference = tmp_path / "old", tmp_path / "reference"
    train(tiny(action_scale=1.0), old)  # what the code before the convention computed
    make_legacy(old)
    # The same run, two iterations, with the old convention spelled out.
    train(tiny(num_iterations=2, action_scale=1.0), reference)

    with caplog.at_level(logging.WARNING, logger="bmaml_robot"):
        run = load_run(old)
    assert run.config.action_scale == 1.0
    assert "no action_scale" in caplog.text

    # bmaml-train --resume continues it with the scale it was trained with: the same metrics as
    # the run that said so from the start, and its files now say it.
    assert train_main(["--resume", "--out", str(old), "--num-iterations", "2", "--quiet"]) == 0
    strip = lambda ms: [{k: v for k, v in m.items() if not k.endswith("time_s")} for m in ms]  # noqa: E731
    assert strip(read_jsonl(old / METRICS)) == strip(read_jsonl(reference / METRICS))
    assert yaml.safe_load((old / CONFIG).read_text())["action_scale"] == 1.0
    # A new-convention run of the same config learns from other numbers (the scale matters).
    train(tiny(num_iterations=2), tmp_path / "new")
    assert strip(read_jsonl(tmp_path / "new" / METRICS)) != strip(read_jsonl(reference / METRICS))


def test_an_old_run_exports_a_graph_that_clips_to_the_bounds(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from bmaml_robot.export import adapt_run, export_onnx
    from bmaml_robot_deploy import Controller

    train(tiny(action_scale=1.0), tmp_path / "old")
    make_legacy(tmp_path / "old")
    adaptation = adapt_run(tmp_path / "old", {"direction": 1.0}, adapt_steps=0, episodes=1)
    assert adaptation.metadata().action_scale == 1.0
    path = export_onnx(adaptation.policy, None, tmp_path / "old.onnx", adaptation.metadata())
    obs = np.random.default_rng(0).normal(0.0, 3.0, size=(adaptation.policy.obs_dim,))
    with torch.no_grad():
        mean, _, _ = adaptation.policy.step(torch.from_numpy(obs).float()[None], None)
    np.testing.assert_allclose(Controller(path).act(obs), mean[0].clamp(-1.0, 1.0).numpy(), rtol=0, atol=1e-6)
