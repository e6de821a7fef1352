"""Runs are never lost, half-written or mixed up, and every bad input to bmaml-train is one clear
error before any work starts (the hostile-input campaign's reproducers, each a regression test).

Promised (docs/reliability.md): run files are written atomically; a resumed run's recorded
config, checkpoint and metrics must agree, or the resume is refused naming the file and line; a
full disk says so, naming the file, and leaves the last checkpoint intact; a config is never
filled in with defaults on resume.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import bmaml_robot as bm
import bmaml_robot.checkpoint as checkpoint_module
from bmaml_robot.checkpoint import NoSpaceError, load_checkpoint, read_jsonl, save_checkpoint
from bmaml_robot.cli import train_main
from bmaml_robot.config import TrainConfig, dump_config, from_dict, load_config, parse_override
from bmaml_robot.run import CHECKPOINT, CONFIG, METRICS

TINY = ["--config", "2d-navigation", "--set", "num_tasks=2", "--set", "episodes_per_task=2", "--set", "horizon=5",
        "--set", "hidden_sizes=[8]", "--num-threads", "1", "--quiet"]


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def cli_error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """bmaml-train's usage error (exit 2) for ``argv``: its message."""
    with pytest.raises(SystemExit) as info:
        train_main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A finished 3-iteration run (a checkpoint at every iteration)."""
    out = tmp_path / "run"
    assert train_main(TINY + ["--num-iterations", "3", "--out", str(out)]) == 0
    return out


# ----------------------------------------------------------------------------- the recorded config
def test_config_yaml_is_written_atomically_and_a_full_disk_names_it(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.yaml"
    dump_config(TrainConfig(family="Navigation2D").resolved(), path)
    before = path.read_text()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.os, "fsync", full)
    with pytest.raises(NoSpaceError, match=f"no space left on device while writing {path}"):
        dump_config(TrainConfig(family="AntGoal").resolved(), path)
    assert path.read_text() == before  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]  # no temporary left


@pytest.mark.parametrize("content, message", [
    ("", "expected the config bmaml-train recorded"),
    ("family: Navigation2D\nnum_tasks: 2\n", "incomplete run config, missing keys"),
])
def test_resume_refuses_an_empty_or_incomplete_config(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                      content: str, message: str) -> None:
    """Killed before the first checkpoint with a damaged config.yaml: resuming must not train the
    default config (HalfCheetahDir 40 x 20 x 500) in that directory."""
    out = tmp_path / "killed"
    out.mkdir()
    (out / CONFIG).write_text(content)
    err = cli_error(["--resume", "--out", str(out)], capsys)
    assert message in err and str(out / CONFIG) in err
    assert (out / CONFIG).read_text() == content  # not overwritten


def test_resume_before_the_first_checkpoint_refuses_other_values(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "killed"
    out.mkdir()
    dump_config(load_config("2d-navigation").replace(num_tasks=2).resolved(), out / CONFIG)
    err = cli_error(["--resume", "--out", str(out), "--set", "fast_lr=0.3"], capsys)
    assert "other values of ['fast_lr']" in err
    # The keys that may change may change, as after a checkpoint; the rest is the recorded config.
    assert train_main(["--resume", "--out", str(out), "--num-iterations", "1", "--num-threads", "1", "--quiet"]) == 0
    assert yaml.safe_load((out / CONFIG).read_text())["fast_lr"] == 0.1


def test_a_new_run_never_lands_on_a_recorded_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "killed"
    out.mkdir()
    dump_config(load_config("2d-navigation").resolved(), out / CONFIG)
    assert "already holds a run" in cli_error(TINY + ["--out", str(out)], capsys)


# ----------------------------------------------------------------------------- metrics and checkpoint
def damage_metrics(run: Path, lines: list[str]) -> None:
    (run / METRICS).write_text("".join(line + "\n" for line in lines))


@pytest.mark.parametrize("damage, message", [
    (lambda ls: ls[:1] + ls[2:], "line 2: expected iteration 1, got 2"),  # a gap
    (lambda ls: ls[:1] + ["garbage"] + ls[1:], "line 2: not a JSON record"),
    (lambda ls: ls[:1] + ["{}"] + ls[2:], "line 2: expected iteration 1, got None"),
    (lambda ls: ls[:2], "holds iterations 0..1 but checkpoint.pt is at iteration 3"),
    (lambda ls: ls[:1] + ["[1, 2]"] + ls[1:], "line 2: expected a JSON object"),
])
def test_resume_refuses_damaged_metrics_naming_the_line(run: Path, capsys: pytest.CaptureFixture, damage: Any,
                                                        message: str) -> None:
    lines = (run / METRICS).read_text().splitlines()
    damage_metrics(run, damage(lines))
    damaged = (run / METRICS).read_text()
    err = cli_error(["--resume", "--out", str(run), "--num-iterations", "4"], capsys)
    assert message in err and str(run / METRICS) in err
    assert (run / METRICS).read_text() == damaged  # nothing rewritten


def test_a_torn_last_line_and_lines_past_the_checkpoint_are_recomputed(run: Path) -> None:
    """A kill between appending metrics and the checkpoint, or in the middle of an append."""
    lines = (run / METRICS).read_text().splitlines()
    state = load_checkpoint(run / CHECKPOINT)
    state["next_iteration"] = 2  # the checkpoint of iteration 2 never got written
    save_checkpoint(run / CHECKPOINT, state)
    damage_metrics(run, lines + ['{"iteration": 3, "ret'])
    assert train_main(["--resume", "--out", str(run), "--num-iterations", "3", "--quiet"]) == 0
    assert [m["iteration"] for m in read_jsonl(run / METRICS)] == [0, 1, 2]


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("env_steps"), "missing keys ['env_steps']"),
    (lambda s: s.update(next_iteration=-5), "next_iteration: expected an integer >= 0, got -5"),
    (lambda s: s.update(next_iteration="8"), "next_iteration: expected an integer >= 0, got '8'"),
    (lambda s: s.update(next_iteration=10**9), "but checkpoint.pt is at iteration 1000000000"),
    (lambda s: s["policy"].update({"mean.weight": torch.zeros(3, 3)}), "its parameters do not match"),
    (lambda s: s.update(policy=[1, 2]), "policy: expected a state dict of tensors"),
])
def test_resume_refuses_a_wrong_checkpoint_naming_file_and_key(run: Path, capsys: pytest.CaptureFixture, edit: Any,
                                                               message: str) -> None:
    state = load_checkpoint(run / CHECKPOINT)
    edit(state)
    save_checkpoint(run / CHECKPOINT, state)
    metrics = (run / METRICS).read_text()
    err = cli_error(["--resume", "--out", str(run), "--num-iterations", "5"], capsys)
    assert message in err and str(run / CHECKPOINT) in err.replace(str(run / METRICS), str(run / CHECKPOINT))
    assert (run / METRICS).read_text() == metrics
    assert yaml.safe_load((run / CONFIG).read_text())["num_iterations"] == 3  # not rewritten


def test_a_full_disk_says_so_and_keeps_the_last_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "full"
    assert train_main(TINY + ["--num-iterations", "1", "--out", str(out)]) == 0
    good = (out / CHECKPOINT).read_bytes()
    real_fsync = os.fsync

    def full_on_checkpoints(fd: int) -> None:
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(f".{CHECKPOINT}."):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(checkpoint_module.os, "fsync", full_on_checkpoints)
    assert train_main(["--resume", "--out", str(out), "--num-iterations", "2", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"no space left on device while writing {out / CHECKPOINT}" in err and "--resume" in err
    assert (out / CHECKPOINT).read_bytes() == good
    assert load_checkpoint(out / CHECKPOINT)["next_iteration"] == 1


@pytest.mark.parametrize("make_out", [
    lambda tmp: (tmp / "a_file").write_text("x") and tmp / "a_file",
    lambda tmp: (tmp / "a_file").write_text("x") and tmp / "a_file" / "run",
])
def test_an_out_that_cannot_hold_a_run_is_a_cli_error(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                      make_out: Any) -> None:
    out = make_out(tmp_path)
    assert "out:" in cli_error(TINY + ["--out", str(out)], capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_a_read_only_out_is_a_cli_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "ro"
    out.mkdir(mode=0o555)
    assert "out: cannot write to" in cli_error(TINY + ["--out", str(out / "run")], capsys)


# ----------------------------------------------------------------------------- config and CLI
@pytest.mark.parametrize("override, message", [
    ("num_tasks=[", "--set num_tasks: '[' is not a valid YAML value"),
    ('family="x', "--set family:"),
    ("seed=" + "9" * 5000, "--set seed:"),
])
def test_bad_yaml_in_set_names_the_key(override: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_override(override)
    assert str(info.value).startswith(message)
    assert len(str(info.value)) < 400


def test_bad_config_files_name_the_file(tmp_path: Path) -> None:
    deep = tmp_path / "deep.yaml"
    deep.write_text("family: " + "[" * 20000 + "]" * 20000 + "\n")
    with pytest.raises(ValueError, match=f"config: {deep} is not valid YAML"):
        load_config(str(deep))
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"family: \xff\xfe\n")
    with pytest.raises(ValueError, match=f"config: {binary} is not UTF-8 text"):
        load_config(str(binary))
    with pytest.raises(ValueError, match=r"hidden_sizes: expected a list of integers, got '\[64,'"):
        from_dict({"hidden_sizes": "[64,"})
    with pytest.raises(ValueError, match=r"expected config keys \(strings\), got 1"):
        from_dict({1: 2, "family": "AntDir"})
    nested: Any = []
    for _ in range(3000):
        nested = [nested]
    with pytest.raises(ValueError, match="family: expected a string"):
        from_dict({"family": nested})


@pytest.mark.parametrize("override, message", [
    ("init_log_std=1000", "init_log_std: expected a value in [-10, 10]"),
    ("horizon=2000000000", "need about"),
    ("num_tasks=100000000", "need about"),
])
def test_values_training_would_die_on_are_refused_before_work(capsys: pytest.CaptureFixture, override: str,
                                                              message: str) -> None:
    assert message in cli_error(TINY + ["--set", override, "--out", "runs/x"], capsys)
    assert not Path("runs/x").exists()  # refused before the run directory is made


def test_a_diverging_inner_step_is_one_clear_error(capsys: pytest.CaptureFixture) -> None:
    assert train_main(TINY + ["--set", "fast_lr=1e30", "--num-iterations", "2", "--out", "runs/x"]) == 1
    assert "fast_lr" in capsys.readouterr().err


@pytest.mark.parametrize("task, message", [
    ({"goal": [1e308, -1e308]}, r"tasks\[0\]\['goal'\]: expected values in \[-1000, 1000\]"),
    ({"goal": [2000.0, 0.0]}, r"expected values in \[-1000, 1000\]"),
])
def test_absurd_tasks_are_refused(task: dict, message: str) -> None:
    env = bm.make_vec("AntGoal", 1)
    try:
        with pytest.raises(ValueError, match=message):
            env.set_tasks([task])
    finally:
        env.close()
    env = bm.make_vec("HalfCheetahVel", 1)
    try:
        with pytest.raises(ValueError, match=r"\['velocity'\]: expected values in \[-100, 100\] \(m/s\)"):
            env.set_tasks([{"velocity": 1e300}])
        env.set_tasks([{"velocity": 50.0}])  # far outside the distribution, yet allowed
    finally:
        env.close()
