"""Task families: the meta-RL benchmark definitions (which robot, which objective, which tasks).

A task is a small dict, e.g. ``{"direction": -1.0}``; the C++ core receives it as two numbers.
Rewards are computed in C++ (``csrc/objective.h`` documents the formulas).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from bmaml_robot_deploy.checks import check_choice, check_float, check_int

Task = dict[str, Any]

#: Number of floats that encode one task for the C++ core.
TASK_PARAMS = 2

#: The largest magnitude of each task value the envs accept, far outside every family's
#: distribution (to test generalisation) yet where rewards stay finite: a goal at 1e308 would
#: make every reward -inf.
TASK_LIMITS = {"direction": 1.0, "velocity": 100.0, "goal": 1000.0}
TASK_LIMIT_UNITS = {
    "direction": "a signed unit: +1 forward, -1 backward",
    "velocity": "m/s",
    "goal": "m per coordinate",
}


@dataclasses.dataclass(frozen=True)
class TaskFamily:
    """One benchmark family."""

    name: str
    """Registered name, e.g. ``"HalfCheetahDir"``."""
    robot: str
    """``"HalfCheetah"``, ``"Ant"``, ``"Swimmer"`` or ``"Navigation2D"``."""
    objective: str
    """``"direction"``, ``"velocity"``, ``"goal"`` or ``"navigation"`` (see csrc/objective.h)."""
    reward: str
    """The reward in words, for documentation."""
    task_distribution: str
    """How tasks are drawn, for documentation."""
    _sample: Callable[[int, np.random.Generator], list[Task]]
    _support: Callable[[np.ndarray], bool]
    """Whether an encoded task (``encode``'s output) lies in the training distribution."""
    action_scale: float = 10.0
    """Default half-width of the policy's normalised action space (``envs/action_map.py``): 10 for
    the MuJoCo robots, as pytorch-maml-rl and garage; Navigation2D's own bound 0.1 (no rescaling:
    neither reference rescales it)."""

    @property
    def task_keys(self) -> tuple[str, ...]:
        return _TASK_KEYS[self.objective]

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator) -> list[Task]:
        """Draw ``num_tasks`` tasks from the family's distribution with ``rng``."""
        return sample_checked(self._sample, num_tasks, rng)

    def in_distribution(self, task: Mapping[str, Any]) -> bool:
        """Whether ``task`` (checked as ``encode`` does) is one the family's distribution can draw
        (``task_distribution``); tasks outside it are allowed (to test generalisation) but are not
        what a meta-policy was trained for."""
        return bool(self._support(self.encode(task)))

    def encode(self, task: Mapping[str, Any], where: str = "task") -> np.ndarray:
        """Check a task dict and return its C++ encoding, float64 ``[TASK_PARAMS]``."""
        if not isinstance(task, Mapping):
            raise TypeError(f"{where}: expected a dict with keys {list(self.task_keys)}, got {type(task).__name__}")
        keys = set(task)
        if keys != set(self.task_keys):
            missing = sorted(set(self.task_keys) - keys)
            unknown = sorted(keys - set(self.task_keys))
            raise ValueError(
                f"{where}: {self.name} tasks have exactly the keys {list(self.task_keys)}; "
                f"missing {missing}, unknown {unknown}"
            )
        params = np.zeros(TASK_PARAMS)
        key = self.task_keys[0]
        limit = TASK_LIMITS[key]
        if self.objective in ("direction", "velocity"):
            # Not a number: TypeError ("expected a number"); not finite: ValueError.
            check_float(task[key], f"{where}[{key!r}]", finite=False, type_error=TypeError)
            params[0] = check_float(task[key], f"{where}[{key!r}]")
        else:
            goal = _real_array(task["goal"])
            if goal is None:
                raise TypeError(f"{where}['goal']: expected two finite numbers [x, y], got {task['goal']!r}")
            if goal.shape != (2,) or not np.all(np.isfinite(goal)):
                raise ValueError(f"{where}['goal']: expected two finite numbers [x, y], got {task['goal']!r}")
            params[:] = goal
        if np.any(np.abs(params) > limit):
            raise ValueError(
                f"{where}[{key!r}]: expected values in [-{limit:g}, {limit:g}] ({TASK_LIMIT_UNITS[key]}), "
                f"got {task[key]!r}"
            )
        return params


def sample_checked(
    sample: Callable[[int, np.random.Generator], list[Task]], num_tasks: int, rng: np.random.Generator
) -> list[Task]:
    """``sample(num_tasks, rng)`` once both are checked (a count >= 1, a numpy Generator)."""
    num_tasks = check_int(num_tasks, "num_tasks", minimum=1)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    return sample(num_tasks, rng)


_TASK_KEYS = {
    "direction": ("direction",),
    "velocity": ("velocity",),
    "goal": ("goal",),
    "navigation": ("goal",),
}


def _real_array(value: Any) -> np.ndarray | None:
    """``value`` as a float64 array if it holds only real numbers (no strings, bools or objects)."""
    if isinstance(value, (str, bytes, Mapping)):
        return None
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):  # ragged
        return None
    if array.dtype.kind not in "iuf":
        return None
    return array.astype(np.float64)


def _in_box(low: float, high: float, count: int) -> Callable[[np.ndarray], bool]:
    """Support of a uniform distribution: the first ``count`` task values within [low, high]."""
    return lambda params: bool(np.all((params[:count] >= low) & (params[:count] <= high)))


def _unit_direction(params: np.ndarray) -> bool:
    return bool(params[0] in (-1.0, 1.0))


def _directions(n: int, rng: np.random.Generator) -> list[Task]:
    return [{"direction": float(d)} for d in rng.choice([-1.0, 1.0], size=n)]


def _velocities(high: float) -> Callable[[int, np.random.Generator], list[Task]]:
    return lambda n, rng: [{"velocity": float(v)} for v in rng.uniform(0.0, high, size=n)]


def _square_goals(half_width: float) -> Callable[[int, np.random.Generator], list[Task]]:
    """Goals uniform in the square ``[-half_width, half_width]^2`` (the MAML reference code's)."""
    return lambda n, rng: [{"goal": [float(x), float(y)]} for x, y in rng.uniform(-half_width, half_width, size=(n, 2))]


_DIR = "direction * v_x - 0.05 |a|^2"
_VEL = "-|v_x - velocity| - 0.05 |a|^2"
_ANT = " - 5e-4 |clip(cfrc_ext)|^2 + 0.05 if healthy; ends when unhealthy"
_ANT_CTRL = "0.005 |a|^2"

FAMILIES: dict[str, TaskFamily] = {
    f.name: f
    for f in [
        TaskFamily(
            "HalfCheetahDir", "HalfCheetah", "direction", _DIR, "direction in {-1, +1}", _directions, _unit_direction
        ),
        TaskFamily(
            "HalfCheetahVel",
            "HalfCheetah",
            "velocity",
            _VEL,
            "velocity ~ U[0, 2]",
            _velocities(2.0),
            _in_box(0.0, 2.0, 1),
        ),
        TaskFamily(
            "AntDir",
            "Ant",
            "direction",
            "direction * v_x - " + _ANT_CTRL + _ANT,
            "direction in {-1, +1}",
            _directions,
            _unit_direction,
        ),
        TaskFamily(
            "AntVel",
            "Ant",
            "velocity",
            "-|v_x - velocity| + 1 - " + _ANT_CTRL + _ANT,
            "velocity ~ U[0, 3]",
            _velocities(3.0),
            _in_box(0.0, 3.0, 1),
        ),
        TaskFamily(
            "AntGoal",
            "Ant",
            "goal",
            "-(|x - goal_x| + |y - goal_y|) + 4 - " + _ANT_CTRL + _ANT,
            "goal ~ U[-3, 3]^2",
            _square_goals(3.0),
            _in_box(-3.0, 3.0, 2),
        ),
        TaskFamily("SwimmerDir", "Swimmer", "direction", _DIR, "direction in {-1, +1}", _directions, _unit_direction),
        TaskFamily(
            "SwimmerVel", "Swimmer", "velocity", _VEL, "velocity ~ U[0, 0.5]", _velocities(0.5), _in_box(0.0, 0.5, 1)
        ),
        TaskFamily(
            "Navigation2D",
            "Navigation2D",
            "navigation",
            "-||position - goal||_2; ends within 0.01 of the goal",
            "goal ~ U[-0.5, 0.5]^2",
            _square_goals(0.5),
            _in_box(-0.5, 0.5, 2),
            action_scale=0.1,
        ),
    ]
}


def get_family(name: str) -> TaskFamily:
    """The family called ``name``; a ValueError lists the valid names otherwise."""
    if not isinstance(name, str):
        raise TypeError(
            f"family: expected a family name, one of {sorted(FAMILIES)}, got {type(name).__name__} {name!r}"
        )
    check_choice(name, "family", sorted(FAMILIES))
    return FAMILIES[name]


def encode_tasks(family: TaskFamily, tasks: Sequence[Mapping[str, Any]], num_envs: int) -> np.ndarray:
    """Check one task per env and encode them, float64 ``[num_envs, TASK_PARAMS]``."""
    if isinstance(tasks, Mapping) or not isinstance(tasks, Sequence):
        raise TypeError(f"tasks: expected a list of {num_envs} task dicts, got {type(tasks).__name__}")
    if len(tasks) != num_envs:
        raise ValueError(f"tasks: expected one task per env ({num_envs}), got {len(tasks)}")
    return np.stack([family.encode(task, f"tasks[{i}]") for i, task in enumerate(tasks)])
