"""The README's Python blocks run as written (in order, in a scratch directory), so they stay true.

Between the training block and the deploy block the README's own ``bmaml-export`` command runs
(its bash block), on the run the training block made.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[2] / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_the_readme_python_blocks_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    from bmaml_robot.export import main as export_main

    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    python = blocks("python")
    assert len(python) == 3, "a Python block was added or removed: say here what it needs"
    vector_env, training, deploy = python
    try:
        exec(compile(vector_env, "README.md (batched robots)", "exec"), {})
        exec(compile(training, "README.md (meta-training)", "exec"), {})
        export = next(line for block in blocks("bash") for line in block.splitlines()
                      if line.startswith("bmaml-export runs/hc-gru"))
        assert export_main(shlex.split(export)[1:]) == 0
        namespace: dict = {}
        exec(compile(deploy, "README.md (deploy)", "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    assert namespace["stats"].steps == 100
    assert namespace["action"].shape == (6,)
