"""How fast a command-line mistake is reported: each CLI's usage error, as a fresh process, against
the deploy runtime's CLI (``bmaml-control``, numpy + onnxruntime only) making the same kind of
mistake, interleaved in the same rounds.

Each CLI parses and checks its arguments before it imports torch (``bmaml_robot/cli.py``), so a
typo costs the package's import (MuJoCo, its C++ core and Gymnasium, ~0.25 s), not torch's
several seconds. Target: ours within 3x of the deploy CLI's time (ratio of rates >= 0.33);
measured 0.36-0.49 (0.6-0.8 s against 0.3 s, on a loaded 2-core machine); before this,
``bmaml-train --set nope=1`` took 2-6 s (ratio ~0.1).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

#: (name, argv of ``python -c``'s program) for each CLI's argument mistake.
MISTAKES = {
    "bmaml-train --set nope=1": "from bmaml_robot.cli import train_main; train_main(['--set', 'nope=1'])",
    "bmaml-eval RUN --adapt-steps -1": "from bmaml_robot.cli import eval_main; eval_main(['x', '--adapt-steps', '-1'])",
    "bmaml-export RUN --adapt-steps -1": (
        "from bmaml_robot.cli import export_main; export_main(['x', '--task', '{}', '--adapt-steps', '-1', '--out', 'y'])"),
    "bmaml-compare RUN --last 0": "from bmaml_robot.cli import compare_main; compare_main(['x', '--last', '0'])",
    "bmaml-render RUN --episodes 0": (
        "from bmaml_robot.cli import render_main; render_main(['x', '--task', '{}', '--out', 'y.gif', '--episodes', '0'])"),
}
REFERENCE = "from bmaml_robot_deploy.cli import main; main(['x.onnx', '--link', 'nope'])"


def usage_error(program: str):
    def run() -> None:
        result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr[-500:]
    return run


@pytest.mark.parametrize("name", list(MISTAKES))
def test_argument_errors_come_before_the_heavy_imports(bench, name: str) -> None:
    bench.benchmark.group = "cli-usage-error"
    ours, reference = f"{name}/ours", f"{name}/bmaml-control usage error"
    bench.compare((ours, usage_error(MISTAKES[name])), {reference: usage_error(REFERENCE)}, work=1,
                  unit="commands", rounds=5, warmup_rounds=1)
    bench.ratio(f"usage error {name} / bmaml-control's", ours, reference, target=0.33)
