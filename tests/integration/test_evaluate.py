"""bmaml-eval: held-out evaluation of a run after 0..K adaptation steps.

A tiny Navigation2D run is trained once per module (2 meta-iterations of 2 tasks x 2 episodes x
10 steps); evaluations use a few tasks and episodes, so the file runs in a few seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from bmaml_robot.checkpoint import load_checkpoint, save_checkpoint
from bmaml_robot.config import TrainConfig
from bmaml_robot.evaluate import (
    EVAL_JSON,
    EVAL_PNG,
    evaluate,
    main,
)
from bmaml_robot.factory import build_policy
from bmaml_robot.meta.sampler import MetaSampler
from bmaml_robot.run import load_run
from bmaml_robot.seeds import evaluation_seed, held_out_tasks, iteration_seed
from bmaml_robot.stats import mean_ci
from bmaml_robot.train import meta_tasks, train

TINY = dict(family="Navigation2D", num_tasks=2, episodes_per_task=2, horizon=10, num_iterations=2, num_threads=1,
            hidden_sizes=(8, 8), seed=0)
SMALL_EVAL = dict(adapt_steps=2, num_tasks=3, episodes=2)


def assert_png_is_a_plot(path: Path, min_width: int = 300, min_height: int = 200) -> None:
    """The PNG reads back, has a plot's size and is not blank (varied pixels, several colours)."""
    image = iio.imread(path)
    assert image.ndim == 3 and image.shape[0] >= min_height and image.shape[1] >= min_width, image.shape
    rgb = image[..., :3].reshape(-1, 3)
    assert rgb.std() > 5.0
    assert len(np.unique(rgb, axis=0)) > 10


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    threads = torch.get_num_threads()
    path = tmp_path_factory.mktemp("eval") / "run"
    train(TrainConfig(**TINY), path)
    torch.set_num_threads(threads)
    return path


def test_evaluation_writes_json_and_plot_with_cis(run_dir: Path, tmp_path: Path) -> None:
    result = evaluate(run_dir, out=tmp_path, **SMALL_EVAL)
    assert result.json_path == tmp_path / EVAL_JSON and result.png_path == tmp_path / EVAL_PNG
    assert not (run_dir / EVAL_JSON).exists()  # --out is honoured
    data = json.loads(result.json_path.read_text())
    assert data["policy_file"] == "policy.pt" and data["iterations_trained"] == 2
    assert data["evaluation"]["steps"] == 2 and data["evaluation"]["num_tasks"] == 3
    assert data["evaluation"]["fast_lr"] == TINY.get("fast_lr", 0.1)
    assert len(data["per_task"]) == 3 and len(data["per_step"]) == 3
    assert [t["task"] for t in data["per_task"]] == held_out_tasks("Navigation2D", 3, 0)
    per_task = np.array([t["mean_return"] for t in data["per_task"]])  # [tasks, steps + 1]
    assert np.allclose(per_task.T, result.episode_returns.mean(axis=2))
    for step, row in enumerate(data["per_step"]):
        ci = mean_ci(per_task[:, step])
        assert row["step"] == step
        assert (row["mean"], row["ci_low"], row["ci_high"]) == pytest.approx((ci.mean, ci.low, ci.high))
        gain = mean_ci(per_task[:, step] - per_task[:, 0])
        assert row["gain_mean"] == pytest.approx(gain.mean)
    assert data["per_step"][0]["gain_mean"] == 0.0
    # Navigation2D returns are minus distances: negative, at most 10 steps of them.
    assert np.all(per_task < 0)
    assert_png_is_a_plot(result.png_path)
    # Written atomically: no temporary files left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == [EVAL_JSON, EVAL_PNG]


def test_evaluation_is_deterministic_and_independent_of_threads_and_steps(run_dir: Path) -> None:
    first = evaluate(run_dir, write=False, **SMALL_EVAL)
    again = evaluate(run_dir, write=False, num_threads=2, **SMALL_EVAL)
    assert np.array_equal(first.episode_returns, again.episode_returns)
    # The result after k steps does not depend on how many steps are evaluated.
    shorter = evaluate(run_dir, write=False, **{**SMALL_EVAL, "adapt_steps": 1})
    assert np.array_equal(shorter.episode_returns, first.episode_returns[:2])
    other_seed = evaluate(run_dir, write=False, seed=1, **SMALL_EVAL)
    assert not np.array_equal(other_seed.episode_returns, first.episode_returns)


def test_adaptation_changes_the_returns_and_fast_lr_zero_does_not(run_dir: Path) -> None:
    """fast_lr=0: every step samples the meta-policy itself, with evaluation stream 1 + k."""
    config, tasks = load_run(run_dir).config, held_out_tasks("Navigation2D", 3, 0)
    frozen = evaluate(run_dir, write=False, fast_lr=0.0, **SMALL_EVAL)
    policy = load_run(run_dir).policy
    sampler = MetaSampler("Navigation2D", 3, 2, config.horizon)
    sampler.set_tasks(tasks)
    for step in range(3):
        episodes = sampler.sample(policy, None, evaluation_seed(0, 1 + step))
        assert np.allclose(frozen.episode_returns[step], episodes.episode_returns().numpy())
    sampler.close()
    adapted = evaluate(run_dir, write=False, fast_lr=0.5, **SMALL_EVAL)
    assert np.array_equal(adapted.episode_returns[0], frozen.episode_returns[0])  # same meta-policy
    assert not np.allclose(adapted.episode_returns[1], frozen.episode_returns[1])


def test_held_out_stream_is_disjoint_from_training() -> None:
    training_seeds = {iteration_seed(seed, iteration, stream)
                      for seed in range(4) for iteration in range(100) for stream in range(4)}
    evaluation_seeds = {evaluation_seed(seed, stream) for seed in range(4) for stream in range(10)}
    assert not training_seeds & evaluation_seeds
    config = TrainConfig(**TINY)
    training_goals = {tuple(t["goal"]) for i in range(200) for t in meta_tasks(config, i)}
    held_out = held_out_tasks("Navigation2D", 50, 0)
    assert not training_goals & {tuple(t["goal"]) for t in held_out}
    # The same held-out tasks for every run (they do not depend on the run's seed) ...
    assert held_out_tasks("Navigation2D", 5, 0) == held_out[:5]
    # ... and other ones with another evaluation seed.
    assert held_out_tasks("Navigation2D", 5, 1) != held_out[:5]


def test_run_in_progress_uses_the_latest_checkpoint(run_dir: Path, tmp_path: Path) -> None:
    in_progress = tmp_path / "in-progress"
    shutil.copytree(run_dir, in_progress)
    (in_progress / "policy.pt").unlink()
    loaded = load_run(in_progress)
    assert loaded.source == "checkpoint.pt" and loaded.iterations == 2
    # A finished run being extended (--resume with more iterations): its checkpoint is ahead of
    # policy.pt and is the one evaluated.
    extended = tmp_path / "extended"
    shutil.copytree(run_dir, extended)
    state = load_checkpoint(extended / "checkpoint.pt")
    state["next_iteration"] = 3
    state["policy"] = {k: v + 1.0 for k, v in state["policy"].items()}
    save_checkpoint(extended / "checkpoint.pt", state)
    loaded = load_run(extended)
    assert loaded.source == "checkpoint.pt" and loaded.iterations == 3
    for name, value in loaded.policy.state_dict().items():
        assert torch.equal(value, state["policy"][name]), name
    # A finished run: policy.pt (its final checkpoint holds the same policy).
    assert load_run(run_dir).source == "policy.pt"
    assert evaluate(in_progress, write=False, adapt_steps=0, num_tasks=2, episodes=1).summary[0]["step"] == 0


def test_cli_prints_a_table_and_writes(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(run_dir), "--adapt-steps", "1", "--tasks", "2", "--episodes", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Navigation2D, mlp" in out and "gain vs step 0" in out
    assert len([line for line in out.splitlines() if line.strip().startswith(("0 ", "1 "))]) == 2
    assert (tmp_path / EVAL_JSON).is_file() and (tmp_path / EVAL_PNG).is_file()


@pytest.mark.parametrize("args, message", [
    (["{missing}"], "no such directory"),
    (["{empty}"], "has no policy.pt or checkpoint.pt"),
    (["{run}", "--adapt-steps", "-1"], "--adapt-steps/--steps: expected an integer >= 0"), (["{run}", "--steps", "-1"], "--adapt-steps/--steps: expected an integer >= 0"),
    (["{run}", "--tasks", "0"], "tasks: expected an integer >= 1"),
    (["{run}", "--fast-lr", "nan"], "--fast-lr: expected a finite number"),
    (["{run}", "--seed", "-3"], "--seed: expected an integer in [0, 2**64)"),
])
def test_cli_errors_are_usage_errors(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     args: list[str], message: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.yaml").write_text("family: Navigation2D\n")
    paths = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "run": run_dir}
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(**paths) for a in args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_initial_evaluates_the_policy_training_started_from(run_dir: Path) -> None:
    """``bmaml-eval --initial``: the run's architecture and seed at initialisation, written to
    RUN_DIR/initial; the same numbers as evaluating a freshly built policy of that config."""
    assert main([str(run_dir), "--initial", "--adapt-steps", "1", "--tasks", "3", "--episodes", "2"]) == 0
    data = json.loads((run_dir / "initial" / EVAL_JSON).read_text())
    assert data["policy_file"] == "initialisation" and data["iterations_trained"] == 0
    initial = load_run(run_dir, initial=True)
    fresh = build_policy(initial.config, initial.policy.obs_dim, initial.policy.act_dim)
    trained = load_run(run_dir).policy
    for name, value in initial.policy.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[name]), name
    assert any(not torch.equal(v, trained.state_dict()[k]) for k, v in initial.policy.state_dict().items())
    trained_eval = evaluate(run_dir, write=False, adapt_steps=1, num_tasks=3, episodes=2)
    assert [row["mean"] for row in data["per_step"]] != [row["mean"] for row in trained_eval.summary]
