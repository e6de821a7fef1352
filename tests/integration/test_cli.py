"""``bmaml-train`` in-process: flags, overrides, errors before any work, quiet mode, resume."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch

import bmaml_robot.train as train_module
from bmaml_robot.checkpoint import read_jsonl
from bmaml_robot.cli import train_main
from bmaml_robot.config import TrainConfig, load_config

TINY = ["--config", "2d-navigation", "--set", "num_tasks=2", "--set", "episodes_per_task=2", "--set", "horizon=10"]


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # The default run directory is relative (runs/...): keep it inside tmp_path.
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def without_time(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in m.items() if not k.endswith("time_s")} for m in metrics]


@pytest.fixture
def fake_train(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Replace the training itself: record what the CLI would train, do no work."""
    calls: list[dict[str, Any]] = []

    def record(config: TrainConfig, run_dir: Any, *, resume: bool = False, progress: bool = False):
        calls.append({"config": config, "run_dir": Path(run_dir), "resume": resume, "progress": progress})
        return train_module.TrainResult(Path(run_dir), None, [])  # type: ignore[arg-type]

    monkeypatch.setattr(train_module, "train", record)
    return calls


# ----------------------------------------------------------------------------- a real tiny run
def test_tiny_run_from_flags_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = train_main(TINY + ["--num-iterations", "2", "--num-threads", "1", "--out", str(out), "--quiet"])
    assert code == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "it/s" not in captured.err and "%|" not in captured.err  # no progress bar either
    assert {p.name for p in out.iterdir()} == {"config.yaml", "metrics.jsonl", "checkpoint.pt", "policy.pt",
                                               "provenance.json", "tensorboard"}
    config = load_config(str(out / "config.yaml"))
    assert config == load_config("2d-navigation").replace(num_tasks=2, episodes_per_task=2, horizon=10,
                                                          num_iterations=2, num_threads=1).resolved()
    assert [m["iteration"] for m in read_jsonl(out / "metrics.jsonl")] == [0, 1]


def test_progress_and_summary_without_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert train_main(TINY + ["--num-iterations", "2", "--num-threads", "1", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "Navigation2D" in captured.out and "2 meta-iterations" in captured.out
    assert "before adaptation" in captured.out and "gain" in captured.out
    assert str(out) in captured.out
    assert "2/2" in captured.err  # tqdm's progress bar goes to stderr


def test_resume_continues_a_run_like_an_uninterrupted_one(tmp_path: Path) -> None:
    common = TINY + ["--policy", "gru", "--recurrence", "outer", "--set", "hidden_size=8", "--num-threads", "1",
                     "--quiet"]
    assert train_main(common + ["--num-iterations", "3", "--out", str(tmp_path / "whole")]) == 0
    assert train_main(common + ["--num-iterations", "1", "--out", str(tmp_path / "split")]) == 0
    # --resume takes the config from the checkpoint: only the new length is given.
    assert train_main(["--resume", "--out", str(tmp_path / "split"), "--num-iterations", "3", "--quiet"]) == 0
    whole = read_jsonl(tmp_path / "whole" / "metrics.jsonl")
    split = read_jsonl(tmp_path / "split" / "metrics.jsonl")
    assert [m["iteration"] for m in split] == [0, 1, 2]
    assert without_time(split) == without_time(whole)
    assert load_config(str(tmp_path / "split" / "config.yaml")) == load_config(str(tmp_path / "whole" / "config.yaml"))


# ----------------------------------------------------------------------------- how flags map to the config
def test_no_argument_runs_the_embedded_demo(fake_train: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> None:
    assert train_main([]) == 0
    (call,) = fake_train
    assert call["config"] == load_config("demo")
    assert call["config"].family == "Navigation2D"
    assert call["run_dir"] == Path("runs") / "demo-mlp-seed0"
    assert call["progress"] and not call["resume"]
    assert "Navigation2D" in capsys.readouterr().out


def test_flags_and_overrides_reach_the_config(fake_train: list[dict[str, Any]], tmp_path: Path) -> None:
    argv = ["--config", "halfcheetah-vel", "--policy", "lstm", "--recurrence", "all", "--num-iterations", "7",
            "--num-threads", "1", "--seed", "3", "--set", "fast_lr=0.05", "--set", "hidden-size=12",
            "--set", "first_order=true", "--set", "hidden_sizes=32,32", "--quiet", "--out", str(tmp_path / "x")]
    assert train_main(argv) == 0
    config = fake_train[0]["config"]
    assert config == load_config("halfcheetah-vel").replace(
        policy="lstm", recurrence="all", num_iterations=7, num_threads=1, seed=3, fast_lr=0.05, hidden_size=12,
        first_order=True, hidden_sizes=(32, 32))
    assert fake_train[0]["run_dir"] == tmp_path / "x" and not fake_train[0]["progress"]


def test_config_by_path_and_default_run_dir_name(fake_train: list[dict[str, Any]], tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("family: SwimmerDir\nnum_tasks: 3\n")
    assert train_main(["--config", str(path), "--policy", "gru", "--seed", "4", "--quiet"]) == 0
    call = fake_train[0]
    assert call["config"] == TrainConfig(family="SwimmerDir", num_tasks=3, policy="gru", seed=4)
    assert call["run_dir"] == Path("runs") / "mine-gru-seed4"


def test_keyboard_interrupt_says_how_to_resume(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path) -> None:
    def interrupted(*args: Any, **kwargs: Any):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "train", interrupted)
    assert train_main(TINY + ["--out", str(tmp_path / "run"), "--quiet"]) == 130
    assert "--resume" in capsys.readouterr().err


# ----------------------------------------------------------------------------- errors before any work
BAD = [
    (["--policy", "transformer"], r"argument --policy: invalid choice: 'transformer'"),
    (["--recurrence", "never"], r"argument --recurrence: invalid choice: 'never'"),
    (["--num-iterations", "abc"], r"argument --num-iterations/--num-batches: invalid int value: 'abc'"),
    (["--num-batches", "0"], r"num_iterations: expected a value >= 1, got 0"),  # the old name of the flag
    (["--num-iterations", "0"], r"num_iterations: expected a value >= 1, got 0"),
    (["--num-threads", "-2"], r"num_threads: expected a value >= 1, got -2"),
    (["--seed", "-1"], r"seed: expected an integer in \[0, 2\*\*64\), got -1"),
    (["--seed", "1.5"], r"argument --seed: invalid int value: '1.5'"),
    (["--set", "bogus=1"], r"--set: unknown key 'bogus'; valid keys are \[.*'num_tasks'.*\]"),
    (["--set", "num_tasks"], r"--set: expected KEY=VALUE, got 'num_tasks'"),
    (["--set", "num_tasks=many"], r"num_tasks: expected an integer, got 'many'"),
    (["--set", "gamma=2"], r"gamma: expected a value in \[0, 1\], got 2.0"),
    (["--set", "policy=cnn"], r"policy: expected one of \['mlp', 'rnn', 'gru', 'lstm'\], got 'cnn'"),
    (["--set", "family=Walker"], r"family: expected one of \[.*\], got 'Walker'"),
    (["--config", "nope"], r"config: expected a YAML file or one of \[.*'2d-navigation'.*\], got 'nope'"),
    (["--config", "missing.yaml"], r"config: no such file"),
    (["--bogus-flag"], r"unrecognized arguments: --bogus-flag"),
    (["--resume"], r"--resume: needs --out"),
    (["--sampler", "cluster"], r"argument --sampler: invalid choice: 'cluster'"),
    (["--workers", "2"], r"--workers: only used with --sampler ray \(this run samples with sampler='local'\)"),
    (["--ray-address", "auto"], r"--ray-address: only used with --sampler ray"),
    (["--sampler", "ray", "--workers", "0"], r"workers: expected a value >= 1, got 0"),
    (["--sampler", "ray", "--threads-per-worker", "0"], r"threads_per_worker: expected a value >= 1, got 0"),
    (["--sampler", "ray", "--set", "num_tasks=2", "--workers", "3"], r"workers: expected at most num_tasks=2"),
]


def _fails_before_work(argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                       fake_train: list[dict[str, Any]]) -> str:
    with pytest.raises(SystemExit) as info:
        train_main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "bmaml-train: error:" in err
    assert re.search(message, err), err
    assert fake_train == [], "training was started"
    return err


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_flags_fail_before_any_work(argv: list[str], message: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str], fake_train: list[dict[str, Any]]) -> None:
    out = tmp_path / "run"
    full = argv + (["--out", str(out)] if "--out" not in argv and argv != ["--resume"] else [])
    _fails_before_work(full, message, tmp_path, capsys, fake_train)
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_bad_yaml_config_fails_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               fake_train: list[dict[str, Any]]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("family: Navigation2D\nmeta_batch_size: 3\n")
    _fails_before_work(["--config", str(path), "--out", str(tmp_path / "run")],
                       r"unknown keys \['meta_batch_size'\]; valid keys are", tmp_path, capsys, fake_train)
    assert not (tmp_path / "run").exists()


def test_resume_without_a_checkpoint_fails_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           fake_train: list[dict[str, Any]]) -> None:
    _fails_before_work(["--resume", "--out", str(tmp_path / "run")], r"--resume: no run to continue in", tmp_path,
                       capsys, fake_train)
    assert not (tmp_path / "run").exists()


def test_real_errors_leave_no_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Without the fake: the real train() is never reached.
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        train_main(TINY + ["--set", "horizon=0", "--out", str(out)])
    assert info.value.code == 2
    assert "horizon: expected a value >= 1, got 0" in capsys.readouterr().err
    assert not out.exists()


def test_seed_too_large_fails_before_the_run_directory_is_made(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        train_main(TINY + ["--seed", str(2**64), "--out", str(out), "--quiet"])
    assert info.value.code == 2
    assert re.search(r"seed: expected .*, got 18446744073709551616", capsys.readouterr().err)
    assert not out.exists()


def test_existing_run_is_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert train_main(TINY + ["--num-iterations", "1", "--num-threads", "1", "--out", str(out), "--quiet"]) == 0
    before = (out / "metrics.jsonl").read_bytes()
    with pytest.raises(SystemExit) as info:
        train_main(TINY + ["--num-iterations", "2", "--num-threads", "1", "--out", str(out), "--quiet"])
    assert info.value.code == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "metrics.jsonl").read_bytes() == before


def test_resume_with_changed_settings_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert train_main(TINY + ["--num-iterations", "1", "--num-threads", "1", "--out", str(out), "--quiet"]) == 0
    with pytest.raises(SystemExit):
        train_main(["--resume", "--out", str(out), "--num-iterations", "2", "--seed", "9", "--quiet"])
    assert "other values of ['seed']" in capsys.readouterr().err
    assert len(read_jsonl(out / "metrics.jsonl")) == 1


# ----------------------------------------------------------------------------- the demo itself
@pytest.mark.slow
def test_no_argument_demo_shows_an_adaptation_gain(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert train_main(["--quiet"]) == 0
    metrics = read_jsonl(tmp_path / "runs" / "demo-mlp-seed0" / "metrics.jsonl")
    assert len(metrics) == load_config("demo").num_iterations
    last = metrics[-3:]
    assert all(m["return_after"] > m["return_before"] + 5.0 for m in last), last


def test_default_run_directory_is_never_reused(tmp_path, monkeypatch):
    from bmaml_robot.cli import _fresh_run_dir

    monkeypatch.chdir(tmp_path)
    base = tmp_path / "runs" / "demo-mlp-seed0"
    assert _fresh_run_dir(base) == base
    base.mkdir(parents=True)
    assert _fresh_run_dir(base) == base.with_name("demo-mlp-seed0-2")
    base.with_name("demo-mlp-seed0-2").mkdir()
    assert _fresh_run_dir(base) == base.with_name("demo-mlp-seed0-3")


def test_demo_is_a_documented_command_whose_errors_name_the_flag(capsys: pytest.CaptureFixture) -> None:
    from bmaml_robot.cli import demo_main

    with pytest.raises(SystemExit):
        demo_main(["--help"])
    help_text = capsys.readouterr().out
    assert "robots stepped together" in help_text and "``" not in help_text
    assert demo_main(["--family", "Navigation2D", "--num-envs", "4", "--steps", "3"]) == 0
    assert "env-steps/s" in capsys.readouterr().out
    for args, flag in ((["--steps", "0"], "--steps"), (["--num-envs", "x"], "--num-envs"),
                       (["--num-threads", "999"], "--num-threads")):
        with pytest.raises(SystemExit) as info:
            demo_main(args)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert flag in err and "max_episode_steps" not in err


def test_importing_the_source_folder_says_it_shadows_the_installed_package(tmp_path: Path) -> None:
    """From the repository root, the source folder (no compiled core) shadows the installed package:
    the error says so and how to fix it, instead of blaming MuJoCo."""
    import importlib.metadata
    import shutil
    import subprocess
    import sys

    import bmaml_robot

    try:
        importlib.metadata.distribution("bmaml-robot")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("bmaml-robot is not installed: nothing to shadow")
    source = tmp_path / "bmaml_robot"
    shutil.copytree(Path(bmaml_robot.__file__).parent, source, ignore=shutil.ignore_patterns("_core*", "__pycache__"))
    result = subprocess.run([sys.executable, "-c", "import bmaml_robot"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode != 0
    assert "shadows the installed package" in result.stderr and "run from another directory" in result.stderr
