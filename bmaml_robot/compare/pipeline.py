"""``compare``: from run directories to a ``Comparison`` (and its files): load, check, group,
analyse, evaluate held-out results, state the findings, write."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from bmaml_robot.checkpoint import write_text_atomic
from bmaml_robot.compare.analysis import Comparison, analyse, held_out_evaluation
from bmaml_robot.compare.report import findings, report_markdown
from bmaml_robot.compare.runs import (
    DEFAULT_GROUP_BY,
    X_AXES,
    Run,
    check_comparable,
    check_group_by,
    cut,
    group_runs,
    load_run_metrics,
    on_env_step_grid,
)
from bmaml_robot_deploy.checks import check_choice, check_int


def compare(
    run_dirs: Sequence[str | Path],
    *,
    group_by: Sequence[str] = DEFAULT_GROUP_BY,
    last: int = 10,
    smooth_window: int = 5,
    min_iterations: int = 1,
    eval_dir: str | Path | None = None,
    out: str | Path | None = None,
    command: str = "",
    x_axis: str = "iteration",
    until: int | None = None,
) -> Comparison:
    """Compare the runs in ``run_dirs`` grouped by ``group_by`` (``bmaml_robot.compare``).

    last: final window, in meta-iterations (the last ``last`` of the common length). smooth_window:
    trailing moving average of the plotted curves (1: none; statistics never use it).
    min_iterations: runs with fewer meta-iterations are left out (listed in the report), so that
    a run that has barely started does not shorten the common length of all. eval_dir: where
    the runs' ``bmaml-eval`` results are (``eval_dir/<run name>/eval.json``; default: each run's
    own ``eval.json`` if there is one); they add a held-out section. out: where
    report.md, the PNGs and comparison.json go (nothing is written when None). x_axis:
    ``iteration`` (runs of one batch, curves per meta-iteration) or ``env_steps`` (runs at equal
    environment steps, their batches and algorithms may differ: MAML against RL^2; ``last`` and
    the curves then count points of the env-step grid, ``runs.on_env_step_grid``). until: where
    the comparison ends, in meta-iterations (or environment steps with ``env_steps``): runs trained
    further are cut there, a comparison at one training budget (default: the runs' common length).
    """
    check_choice(x_axis, "x_axis", X_AXES)
    keys = check_group_by(group_by)
    check_int(last, "last", minimum=1)
    check_int(smooth_window, "smooth_window", minimum=1)
    check_int(min_iterations, "min_iterations", minimum=1)
    if until is not None:
        check_int(until, "until", minimum=1)
    loaded = [load_run_metrics(p) for p in _distinct_paths(run_dirs)]
    if until is not None:
        loaded = [cut(run, int(until), x_axis) for run in loaded]
    check_comparable(loaded, keys, x_axis)
    runs, left_out = _long_enough(loaded, min_iterations)
    grid = None
    if x_axis == "env_steps":
        runs, grid = on_env_step_grid(runs)
    variants = group_runs(runs, keys)
    if eval_dir is not None and not Path(eval_dir).is_dir():
        raise ValueError(f"eval_dir: expected a directory of bmaml-eval results, got {str(eval_dir)!r}")
    comparison = analyse(variants, keys, int(last), int(smooth_window))
    comparison.command = command
    comparison.x_axis, comparison.env_step_grid = x_axis, grid
    comparison.left_out = left_out
    comparison.held_out = held_out_evaluation(variants, None if eval_dir is None else Path(eval_dir))
    comparison.findings = findings(comparison)
    if out is not None:
        write_outputs(comparison, out)
    return comparison


def _distinct_paths(run_dirs: Sequence[str | Path]) -> list[Path]:
    """``run_dirs`` as paths; ValueError for a single path, none, or one given twice."""
    if isinstance(run_dirs, (str, Path)) or len(run_dirs) == 0:
        raise ValueError(f"run_dirs: expected a list of run directories, got {run_dirs!r}")
    paths = [Path(p) for p in run_dirs]
    duplicates = sorted({str(p) for p in paths if sum(q.resolve() == p.resolve() for q in paths) > 1})
    if duplicates:
        raise ValueError(f"run_dirs: given more than once: {duplicates}")
    return paths


def _long_enough(loaded: list[Run], min_iterations: int) -> tuple[list[Run], list[Run]]:
    """(runs with at least ``min_iterations`` meta-iterations, the others); ValueError if none."""
    runs = [r for r in loaded if r.iterations >= min_iterations]
    if not runs:
        raise ValueError(f"min_iterations: every run has fewer than {min_iterations} meta-iterations "
                         f"({', '.join(f'{r.name}: {r.iterations}' for r in loaded)})")
    return runs, [r for r in loaded if r.iterations < min_iterations]


def write_outputs(comparison: Comparison, out: str | Path) -> list[Path]:
    """Write the figures, comparison.json and report.md (each atomically) into ``out``."""
    from bmaml_robot.compare.figures import FIGURES

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    comparison.out_dir = out_dir
    comparison.files = [plot(comparison, out_dir / name) for name, plot in FIGURES.items()]
    json_path = out_dir / "comparison.json"
    write_text_atomic(json_path, json.dumps(comparison.to_dict(), indent=1) + "\n")
    report = out_dir / "report.md"
    write_text_atomic(report, report_markdown(comparison))
    comparison.files += [json_path, report]
    return comparison.files
