"""Task families: the meta-RL benchmark definitions (which robot, which objective, which tasks).

A task is a small dict, e.g. ``{"direction": -1.0}``; the C++ core receives it as two numbers.
Rewards are computed in C++ (``csrc/objective.h`` documents the formulas). Families whose tasks
change the robot's body or medium (``physics``: ``HopperParams``, ``HalfCheetahCrippled``, ...)
have the objective ``"forward"`` (run forward, as the robot's Dir family with direction +1) and
tasks of physics scales (``envs/physics.py``), e.g. ``{"actuator_gear": {"fshin": 0.0}}``; the
core receives the two objective numbers followed by the absolute physics values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from bmaml_robot.envs.physics import PhysicsLayout
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
    """``"HalfCheetah"``, ``"Ant"``, ``"Swimmer"``, ``"Hopper"``, ``"Walker2d"`` or ``"Navigation2D"``."""
    objective: str
    """``"direction"``, ``"velocity"``, ``"goal"``, ``"navigation"`` (see csrc/objective.h) or
    ``"forward"`` (the direction reward with direction +1, for physics families)."""
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
    physics: tuple[str, ...] = ()
    """The model fields a task sets (``envs/physics.py``); empty for reward-only families."""

    @property
    def task_keys(self) -> tuple[str, ...]:
        """The keys of a task dict (a physics task may leave any of them out: asset's values)."""
        return self.physics if self.physics else _TASK_KEYS[self.objective]

    @property
    def layout(self) -> PhysicsLayout | None:
        """The physics fields of this family on its robot, or None."""
        return PhysicsLayout(self.robot, self.physics) if self.physics else None

    @property
    def core_objective(self) -> str:
        """The objective the C++ core computes (``"forward"`` is its direction reward)."""
        return "direction" if self.objective == "forward" else self.objective

    @property
    def task_width(self) -> int:
        """Floats per encoded task: ``TASK_PARAMS`` plus the physics values."""
        layout = self.layout
        return TASK_PARAMS + (layout.size if layout else 0)

    def canonical(self, task: Mapping[str, Any]) -> Task:
        """``task`` checked and written out in full, with plain floats: for a physics family every
        element of every field (``PhysicsLayout.canonical``), else the task's own keys."""
        encoded = self.encode(task)
        layout = self.layout
        if layout is not None:
            return layout.canonical(task)
        if self.task_keys == ("goal",):
            return {"goal": [float(encoded[0]), float(encoded[1])]}
        return {self.task_keys[0]: float(encoded[0])}

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator) -> list[Task]:
        """Draw ``num_tasks`` tasks from the family's distribution with ``rng``."""
        return sample_checked(self._sample, num_tasks, rng)

    def in_distribution(self, task: Mapping[str, Any]) -> bool:
        """Whether ``task`` (checked as ``encode`` does) is one the family's distribution can draw
        (``task_distribution``); tasks outside it are allowed (to test generalisation) but are not
        what a meta-policy was trained for."""
        return bool(self._support(self.encode(task)))

    def encode(self, task: Mapping[str, Any], where: str = "task") -> np.ndarray:
        """Check a task dict and return its C++ encoding, float64 ``[task_width]``."""
        if not isinstance(task, Mapping):
            raise TypeError(f"{where}: expected a dict with keys {list(self.task_keys)}, got {type(task).__name__}")
        keys = set(task)
        layout = self.layout
        if layout is not None:
            unknown = sorted(map(str, keys - set(self.physics)))
            if unknown:
                raise ValueError(f"{where}: {self.name} tasks have keys among {list(self.physics)}; unknown {unknown}")
            return np.concatenate([[1.0, 0.0], layout.encode(task, where)])
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


# --- Families that change the body or the medium (objective "forward", tasks of physics scales) ---

#: ProMP's ``rand_param_envs`` (``RandomEnv``): every element scaled by base^u, u ~ U[-3, 3]
#: (``log_scale_limit = 3``), base 1.5 but 1.3 for the joint damping.
_LOG_SCALE_LIMIT = 3.0
_RAND_PARAM_BASES = {"body_mass": 1.5, "body_inertia": 1.5, "dof_damping": 1.3, "geom_friction": 1.5}
#: Swimmer-v5's medium (``<option density="4000" viscosity="0.1">``) down to it scaled by the
#: real air/water ratios (density 1.2/1000, viscosity 2e-5/9e-4): log-uniform, as the fluid's
#: forces are proportional to each.
_SWIMMER_DENSITY = (4.8, 4000.0)
_SWIMMER_VISCOSITY = (0.0022, 0.1)


def _scales(layout: PhysicsLayout, params: np.ndarray) -> dict[str, np.ndarray]:
    """An encoded task's physics part as scales per field (``PhysicsLayout.decode``)."""
    return layout.decode(params[TASK_PARAMS:])


def _rand_params(robot: str) -> tuple[Callable[[int, np.random.Generator], list[Task]], Callable[[np.ndarray], bool]]:
    layout = PhysicsLayout(robot, tuple(_RAND_PARAM_BASES))

    def sample(n: int, rng: np.random.Generator) -> list[Task]:
        tasks = []
        for _ in range(n):
            tasks.append({
                f: layout.named(f, base ** rng.uniform(-_LOG_SCALE_LIMIT, _LOG_SCALE_LIMIT, layout.defaults(f).shape))
                for f, base in _RAND_PARAM_BASES.items()
            })
        return tasks

    def support(params: np.ndarray) -> bool:
        scales = _scales(layout, params)
        return all(
            bool(np.all(np.abs(np.log(scales[f]) / np.log(base)) <= _LOG_SCALE_LIMIT + 1e-9))
            for f, base in _RAND_PARAM_BASES.items()
        )

    return sample, support


def _crippled(robot: str, groups: Mapping[str, tuple[str, ...]]) -> tuple[
    Callable[[int, np.random.Generator], list[Task]], Callable[[np.ndarray], bool]
]:
    """One group of actuators (a joint, or a leg's joints) disabled per task, uniformly."""
    layout = PhysicsLayout(robot, ("actuator_gear",))
    choices = list(groups.values())

    def task(dead: tuple[str, ...]) -> Task:
        return {"actuator_gear": {n: 0.0 if n in dead else 1.0 for n in layout.names("actuator_gear")}}

    def sample(n: int, rng: np.random.Generator) -> list[Task]:
        return [task(choices[k]) for k in rng.integers(len(choices), size=n)]

    def support(params: np.ndarray) -> bool:
        scales = _scales(layout, params)["actuator_gear"]
        dead = tuple(n for n, s in zip(layout.names("actuator_gear"), scales) if s == 0)
        return dead in choices and bool(np.all(scales[scales != 0] == 1))

    return sample, support


def _torso_mass() -> tuple[Callable[[int, np.random.Generator], list[Task]], Callable[[np.ndarray], bool]]:
    layout = PhysicsLayout("HalfCheetah", ("body_mass", "body_inertia"))

    def sample(n: int, rng: np.random.Generator) -> list[Task]:
        tasks = []
        for s in 1.5 ** rng.uniform(-_LOG_SCALE_LIMIT, _LOG_SCALE_LIMIT, size=n):
            tasks.append(layout.canonical({"body_mass": {"torso": float(s)}, "body_inertia": {"torso": float(s)}}))
        return tasks

    def support(params: np.ndarray) -> bool:
        scales = _scales(layout, params)
        torso = scales["body_mass"][0]
        others_default = np.all(scales["body_mass"][1:] == 1) and np.all(scales["body_inertia"][1:] == 1)
        same_scale = np.allclose(scales["body_inertia"][0], torso, rtol=1e-12, atol=0)
        return bool(others_default and same_scale and abs(np.log(torso) / np.log(1.5)) <= _LOG_SCALE_LIMIT + 1e-9)

    return sample, support


def _log_uniform(low: float, high: float, size: int, rng: np.random.Generator) -> np.ndarray:
    return np.exp(rng.uniform(np.log(low), np.log(high), size=size))


def _fluid() -> tuple[Callable[[int, np.random.Generator], list[Task]], Callable[[np.ndarray], bool]]:
    def sample(n: int, rng: np.random.Generator) -> list[Task]:
        density = _log_uniform(*_SWIMMER_DENSITY, n, rng)
        viscosity = _log_uniform(*_SWIMMER_VISCOSITY, n, rng)
        return [{"density": float(d), "viscosity": float(v)} for d, v in zip(density, viscosity)]

    def support(params: np.ndarray) -> bool:
        density, viscosity = params[TASK_PARAMS:]
        return bool(_SWIMMER_DENSITY[0] <= density <= _SWIMMER_DENSITY[1]
                    and _SWIMMER_VISCOSITY[0] <= viscosity <= _SWIMMER_VISCOSITY[1])

    return sample, support


_FORWARD = "v_x - 0.05 |a|^2"
_WALKER = "v_x + 1 if healthy - 0.001 |a|^2; ends when unhealthy (Gymnasium v5's ranges)"
_RAND_PARAMS_TEXT = (
    "every body mass and inertia element x 1.5^u, joint damping x 1.3^u, geom friction element x 1.5^u; "
    "u ~ U[-3, 3] i.i.d. (ProMP's rand_param_envs)"
)


def _physics_family(
    name: str, robot: str, reward: str, distribution: str, physics: tuple[str, ...],
    sample_support: tuple[Callable[[int, np.random.Generator], list[Task]], Callable[[np.ndarray], bool]],
) -> TaskFamily:
    sample, support = sample_support
    return TaskFamily(name, robot, "forward", reward, distribution, sample, support, physics=physics)


_HALF_CHEETAH_JOINTS = ("bshin", "bfoot", "fthigh", "fshin", "ffoot")  # not bthigh: Nagabandi et al.'s 1-5
_ANT_LEGS = {f"leg {k}": (f"hip_{k}", f"ankle_{k}") for k in (1, 2, 3)}  # leg 4: held out, as theirs

FAMILIES.update({
    f.name: f
    for f in [
        _physics_family("HopperParams", "Hopper", _WALKER, _RAND_PARAMS_TEXT, tuple(_RAND_PARAM_BASES),
                        _rand_params("Hopper")),
        _physics_family("Walker2dParams", "Walker2d", _WALKER, _RAND_PARAMS_TEXT, tuple(_RAND_PARAM_BASES),
                        _rand_params("Walker2d")),
        _physics_family(
            "HalfCheetahCrippled", "HalfCheetah", _FORWARD,
            "one of the motors bshin, bfoot, fthigh, fshin, ffoot disabled (gear x 0), uniformly "
            "(Nagabandi et al. 2019; bthigh: held out)",
            ("actuator_gear",), _crippled("HalfCheetah", {n: (n,) for n in _HALF_CHEETAH_JOINTS}),
        ),
        _physics_family(
            "AntCrippled", "Ant", "v_x - " + _ANT_CTRL + _ANT,
            "the two motors (hip_k, ankle_k) of one leg k in {1, 2, 3} disabled, uniformly "
            "(Nagabandi et al. 2019; leg 4: held out)",
            ("actuator_gear",), _crippled("Ant", _ANT_LEGS),
        ),
        _physics_family(
            "HalfCheetahMass", "HalfCheetah", _FORWARD,
            "torso mass and inertia x 1.5^u, u ~ U[-3, 3] (a payload: 0.30-3.4 x the 6.25 kg torso)",
            ("body_mass", "body_inertia"), _torso_mass(),
        ),
        _physics_family(
            "SwimmerFluid", "Swimmer", _FORWARD,
            "density ~ logU[4.8, 4000] kg/m^3, viscosity ~ logU[0.0022, 0.1] Pa s, independent "
            "(Swimmer-v5's medium down to it x the air/water ratios)",
            ("density", "viscosity"), _fluid(),
        ),
    ]
})


def get_family(name: str) -> TaskFamily:
    """The family called ``name``; a ValueError lists the valid names otherwise."""
    if not isinstance(name, str):
        raise TypeError(
            f"family: expected a family name, one of {sorted(FAMILIES)}, got {type(name).__name__} {name!r}"
        )
    check_choice(name, "family", sorted(FAMILIES))
    return FAMILIES[name]


def encode_tasks(family: TaskFamily, tasks: Sequence[Mapping[str, Any]], num_envs: int) -> np.ndarray:
    """Check one task per env and encode them, float64 ``[num_envs, family.task_width]``."""
    if isinstance(tasks, Mapping) or not isinstance(tasks, Sequence):
        raise TypeError(f"tasks: expected a list of {num_envs} task dicts, got {type(tasks).__name__}")
    if len(tasks) != num_envs:
        raise ValueError(f"tasks: expected one task per env ({num_envs}), got {len(tasks)}")
    return np.stack([family.encode(task, f"tasks[{i}]") for i, task in enumerate(tasks)])
