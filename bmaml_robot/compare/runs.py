"""Runs and variants: load a run's config and learning curves, check that runs can be compared,
group them into variants (one run per seed) and name the variants.

How a config key shows in a variant's label and where its values sort is data (``KEY_STYLES``),
not code: the runs of a new algorithm are compared by adding its config keys there (or nothing,
as any key shows as ``key=value``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bmaml_robot.checkpoint import read_jsonl
from bmaml_robot.config import FIELDS, RENAMED, TrainConfig, read_yaml, run_config
from bmaml_robot.policies import POLICY_KINDS, RECURRENCE_MODES
from bmaml_robot.run import CONFIG, METRICS, RunDir

#: A run's config: a ``TrainConfig`` or any mapping of config keys to values.
Config = TrainConfig | Mapping[str, Any]

DEFAULT_GROUP_BY = ("policy", "recurrence")
#: Keys every run of one comparison must share (returns are not comparable otherwise).
SAME_KEYS = ("family", "horizon", "num_tasks", "episodes_per_task")
#: Compared at equal environment steps (``x_axis="env_steps"``), runs may differ in their batch.
SAME_KEYS_AT_EQUAL_STEPS = ("family", "horizon")
#: Keys that must be shared unless they are grouping keys.
SAME_UNLESS_GROUPED = ("algorithm", "adapt_steps", "action_scale")
#: What a comparison's curves are aligned on: meta-iterations, or environment steps (runs of
#: different batches or algorithms, e.g. MAML against RL^2, at equal sample budgets).
X_AXES = ("iteration", "env_steps")
#: Points of the env-step grid (at most; fewer when the runs have fewer iterations).
ENV_STEP_POINTS = 100
#: Keys expected to differ between runs of one variant (not reported as differences).
RUN_KEYS = ("seed", "num_iterations", "num_threads", "checkpoint_every")
#: Per-iteration values every line of ``metrics.jsonl`` must have.
METRIC_KEYS = ("iteration", "return_before", "return_after")


@dataclasses.dataclass(frozen=True)
class KeyStyle:
    """How a grouping key shows in a variant's label and where its values sort."""

    bare: bool = False
    """The label shows the value alone (``gru``), else ``key=value`` (``fast_lr=0.05``)."""
    order: tuple[Any, ...] = ()
    """Values that sort in this order, before all others (then numbers by value, then text)."""
    unused_when: tuple[tuple[str, Any], ...] = ()
    """``(other key, value)``: the key means nothing when the other key has that value (the
    recurrence of an MLP). It then sorts first, and is left out of the label when the other key is
    a grouping key too."""


#: Grouping keys with a style of their own; any other config key (known or added later, e.g. an
#: ``algorithm`` key) shows as ``key=value`` and sorts by value. Keys absent from a run's config
#: are harmless here.
KEY_STYLES: dict[str, KeyStyle] = {
    "policy": KeyStyle(bare=True, order=tuple(POLICY_KINDS)),
    "recurrence": KeyStyle(bare=True, order=tuple(RECURRENCE_MODES), unused_when=(("policy", "mlp"),)),
    "family": KeyStyle(bare=True),
    "algorithm": KeyStyle(bare=True, order=("maml", "rl2")),
}


# ----------------------------------------------------------------------------- runs
@dataclasses.dataclass
class Run:
    """One training run's config and learning curves."""

    path: Path
    config: TrainConfig
    return_before: np.ndarray
    """float64 [iterations]: mean return of the meta-batch before adaptation, per meta-iteration."""
    return_after: np.ndarray
    """float64 [iterations]: after adaptation (the validation episodes; RL^2: a trial's last episode)."""
    env_steps: np.ndarray
    """float64 [iterations]: environment steps taken by the end of each meta-iteration (cumulative)."""
    finished: bool
    """``policy.pt`` is there and every planned iteration is in the metrics."""
    cut_from: int | None = None
    """The meta-iterations it had trained when ``cut`` to a shorter comparison (None: not cut)."""

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def iterations(self) -> int:
        return int(self.return_after.size)


def load_run_metrics(run_dir: str | Path) -> Run:
    """Read ``config.yaml`` and ``metrics.jsonl`` of ``run_dir``; ValueError naming the run and
    what is wrong (not a directory, no config, no or empty metrics, missing keys, gaps)."""
    files = RunDir(run_dir)
    path = files.path
    config = _read_config(files)
    records = _read_metrics(files)
    before = np.array([float(r["return_before"]) for r in records])
    after = np.array([float(r["return_after"]) for r in records])
    if not (np.all(np.isfinite(before)) and np.all(np.isfinite(after))):
        raise ValueError(f"run {path}: {METRICS} has non-finite returns")
    finished = files.final_path.is_file() and len(records) >= config.num_iterations
    steps = np.cumsum([float(r.get("env_steps", np.nan)) for r in records])
    return Run(path, config, before, after, steps, finished)


def cut(run: Run, until: int, x_axis: str) -> Run:
    """The run up to ``until``: its first ``until`` meta-iterations (x_axis ``iteration``) or its
    iterations ended by ``until`` environment steps (``env_steps``): a comparison at one training
    budget, whatever further some runs were trained."""
    if x_axis == "iteration":
        keep = min(until, run.iterations)
    else:
        keep = int(np.searchsorted(run.env_steps, until, side="right"))
    if keep == run.iterations:
        return run
    return dataclasses.replace(run, return_before=run.return_before[:keep], return_after=run.return_after[:keep],
                               env_steps=run.env_steps[:keep], cut_from=run.iterations)


def on_env_step_grid(runs: Sequence[Run]) -> tuple[list[Run], np.ndarray]:
    """The runs resampled at equal environment steps: point ``k`` of every run is the iteration
    during which it reached ``grid[k]`` steps (its returns then), on a common grid of up to
    ``ENV_STEP_POINTS`` points up to the shortest run's total. Returns the resampled runs (their
    "iterations" are grid points) and the grid, float64 [points]."""
    missing = [run.name for run in runs if not np.all(np.isfinite(run.env_steps))]
    if missing:
        raise ValueError(f"runs: {', '.join(missing)} record no env_steps in {METRICS}: they cannot be compared "
                         "at equal environment steps")
    total = min(float(run.env_steps[-1]) for run in runs)
    points = min(ENV_STEP_POINTS, min(run.iterations for run in runs))
    grid = total * np.arange(1, points + 1) / points
    resampled = []
    for run in runs:
        index = np.minimum(np.searchsorted(run.env_steps, grid, side="left"), run.iterations - 1)
        resampled.append(dataclasses.replace(run, return_before=run.return_before[index],
                                             return_after=run.return_after[index], env_steps=grid.copy()))
    return resampled, grid


def _read_config(files: RunDir) -> TrainConfig:
    """The run's ``config.yaml`` as recorded (old runs keep their convention)."""
    path = files.path
    if not path.is_dir():
        raise ValueError(f"run {str(path)!r}: expected a run directory (from bmaml-train), got "
                         f"{'a file' if path.exists() else 'no such directory'}")
    if not files.config_path.is_file():
        raise ValueError(f"run {path}: no {CONFIG}; is it a bmaml-train run directory?")
    try:
        return run_config(read_yaml(files.config_path), source=str(files.config_path))
    except ValueError as error:
        raise ValueError(f"run {path}: {CONFIG} is not a valid config ({error})") from error


def _read_metrics(files: RunDir) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl``, one per meta-iteration 0, 1, ... without gaps."""
    path = files.path
    if not files.metrics_path.is_file():
        raise ValueError(f"run {path}: no {METRICS} (the run has not started)")
    records = read_jsonl(files.metrics_path)
    if not records:
        raise ValueError(f"run {path}: {METRICS} is empty (no meta-iteration finished yet)")
    for index, record in enumerate(records):
        missing = [k for k in METRIC_KEYS if k not in record]
        if missing:
            raise ValueError(f"run {path}: {METRICS} line {index + 1} lacks {missing}")
        if record["iteration"] != index:
            raise ValueError(f"run {path}: {METRICS} line {index + 1} is iteration {record['iteration']}, "
                             f"expected {index} (iterations must start at 0 without gaps)")
    return records


# ----------------------------------------------------------------------------- config keys
def config_values(config: Config) -> dict[str, Any]:
    """Every key of ``config`` with its value, in the config's order."""
    if isinstance(config, Mapping):
        return dict(config)
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def config_value(config: Config, key: str) -> Any:
    """``config``'s value of ``key``; None when it has no such key."""
    if isinstance(config, Mapping):
        return config.get(key)
    return getattr(config, key, None)


def _differing_keys(configs: Sequence[Config], ignored: Iterable[str] = ()) -> list[str]:
    """Keys (all the configs' keys, in order) whose values differ between ``configs``."""
    skip = set(ignored)
    keys = dict.fromkeys(k for c in configs for k in config_values(c) if k not in skip)
    return [k for k in keys if len({repr(config_value(c, k)) for c in configs}) > 1]


def check_group_by(group_by: Sequence[str]) -> tuple[str, ...]:
    """The grouping keys, stripped and under their current names (``config.RENAMED``); ValueError
    when there are none, unknown ones, or ``seed``."""
    keys = tuple(RENAMED.get(k.strip(), k.strip()) for k in group_by if k.strip())
    if not keys:
        raise ValueError("group_by: expected at least one config key, got none")
    unknown = [k for k in keys if k not in FIELDS]
    if unknown:
        raise ValueError(f"group_by: unknown config keys {unknown}; valid keys are {sorted(FIELDS)}")
    if "seed" in keys:
        raise ValueError("group_by: 'seed' cannot be a grouping key (seeds are the replicates of a variant)")
    return keys


def check_comparable(runs: Sequence[Run], group_by: Sequence[str], x_axis: str = "iteration") -> None:
    """ValueError naming the runs and the differing keys when ``runs`` cannot be compared (at
    equal environment steps, ``x_axis="env_steps"``, their batches may differ)."""
    same = SAME_KEYS_AT_EQUAL_STEPS if x_axis == "env_steps" else SAME_KEYS
    keys = list(same) + [k for k in SAME_UNLESS_GROUPED if k not in group_by]
    problems = [listed for listed in (_values_by_run(runs, key) for key in keys) if listed]
    if problems:
        raise ValueError("runs: cannot compare runs that differ in " + " | ".join(problems)
                         + f" (every run of one comparison must share {', '.join(keys)})")


def _values_by_run(runs: Sequence[Run], key: str) -> str:
    """``"key=a: run1, run2; key=b: run3"`` when the runs differ in ``key``, else ``""``."""
    values: dict[str, list[str]] = {}
    for run in runs:
        values.setdefault(repr(config_value(run.config, key)), []).append(run.name)
    if len(values) < 2:
        return ""
    return "; ".join(f"{key}={value}: {', '.join(names)}" for value, names in values.items())


# ----------------------------------------------------------------------------- variants
def _is_unused(config: Config, key: str, group_by: Sequence[str] | None = None) -> bool:
    """Whether ``key`` means nothing for ``config`` (``KeyStyle.unused_when``); with ``group_by``,
    only when the key that makes it meaningless is a grouping key too."""
    style = KEY_STYLES.get(key, KeyStyle())
    return any(config_value(config, other) == value and (group_by is None or other in group_by)
               for other, value in style.unused_when)


def _label_part(config: Config, key: str) -> str:
    """``"gru"`` for a bare key, else ``"fast_lr=0.05"`` (sequences joined by commas)."""
    value = config_value(config, key)
    if KEY_STYLES.get(key, KeyStyle()).bare:
        return str(value)
    shown = ",".join(map(str, value)) if isinstance(value, (tuple, list)) else value
    return f"{key}={shown}"


def variant_label(config: Config, group_by: Sequence[str]) -> str:
    """``"gru-outer"``, ``"mlp"`` (recurrence means nothing to an MLP), ``"fast_lr=0.05"``..."""
    return "-".join(_label_part(config, key) for key in group_by if not _is_unused(config, key, group_by))


def _sort_part(config: Config, key: str) -> tuple[int, float, str]:
    """Unused keys first, then the values of ``KeyStyle.order``, numbers, text."""
    style = KEY_STYLES.get(key, KeyStyle())
    value = config_value(config, key)
    if _is_unused(config, key):
        return (0, -1, "")
    if value in style.order:
        return (0, style.order.index(value), "")
    if isinstance(value, (int, float)):
        return (1, float(value), "")
    return (2, 0, str(value))


def variant_sort_key(config: Config, group_by: Sequence[str]) -> tuple[tuple[int, float, str], ...]:
    """Where a variant sorts: one ``_sort_part`` per grouping key."""
    return tuple(_sort_part(config, key) for key in group_by)


@dataclasses.dataclass
class Variant:
    """The runs of one variant (one per seed), sorted by seed."""

    label: str
    runs: list[Run]
    other_differences: list[str]
    """Config keys (beyond the grouping keys and seed/length/threads) that differ between its runs."""

    @property
    def seeds(self) -> list[int]:
        return [r.config.seed for r in self.runs]

    @property
    def common_length(self) -> int:
        return min(r.iterations for r in self.runs)


def group_runs(runs: Sequence[Run], group_by: Sequence[str]) -> list[Variant]:
    """The variants of ``runs`` by ``group_by``, in sort order; ValueError for two runs of one
    variant with the same seed."""
    groups: dict[str, list[Run]] = {}
    for run in sorted(runs, key=lambda r: (variant_sort_key(r.config, group_by), r.config.seed, r.name)):
        groups.setdefault(variant_label(run.config, group_by), []).append(run)
    variants = []
    for label, members in groups.items():
        _check_replicates(label, members)
        differing = _differing_keys([r.config for r in members], ignored=(*group_by, *RUN_KEYS))
        variants.append(Variant(label, members, sorted(differing)))
    return variants


def _check_replicates(label: str, members: Sequence[Run]) -> None:
    """ValueError when two runs of the variant ``label`` have the same seed."""
    seen: dict[int, Run] = {}
    for run in members:
        twin = seen.setdefault(run.config.seed, run)
        if twin is run:
            continue
        differing = [k for k in config_values(run.config)
                     if k not in RUN_KEYS and config_value(twin.config, k) != config_value(run.config, k)]
        if differing:
            raise ValueError(f"runs: {twin.name} and {run.name} fall into one variant ({label}) with the same "
                             f"seed {run.config.seed} but differ in {differing}: add them to group_by "
                             f"(--group-by)")
        raise ValueError(f"runs: {twin.name} and {run.name} are the same variant ({label}) "
                         f"with the same seed {run.config.seed}: they are one replicate, not two")
