"""Per-task physics: which model fields a family varies, and how a task dict becomes their values.

A physics task names, per field, the elements it changes and by how much, e.g.
``{"actuator_gear": {"fshin": 0.0}}`` (a dead front shin motor) or ``{"body_mass": {"torso": 1.5}}``.
Values are **scales** of the asset's value (``body_mass``, ``body_inertia``, ``dof_damping``,
``geom_friction``, ``actuator_gear``; 0 disables a motor), and **absolute** for the medium
(``density`` kg/m^3, ``viscosity`` Pa s). Elements a task leaves out keep the asset's value.
Per-axis fields (``body_inertia``: the 3 principal axes; ``geom_friction``: sliding, torsional,
rolling) take one scale for all axes or a list of 3.

The C++ core receives absolute values in the order of ``csrc/physics.h``; the element names and
the asset's values come from the core itself (its column labels), so the two cannot disagree.
Values are written into the model as they are, without recomputing MuJoCo's derived constants
(no ``mj_setConst``), exactly as setting a Gymnasium env's ``model.body_mass[...]`` does: that is
the parity reference.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import mujoco
import numpy as np

from bmaml_robot import _core
from bmaml_robot.envs.assets import asset_path

#: Every field a family may vary (``csrc/physics.h``); a row holds a family's fields in its own order.
PHYSICS_FIELDS = ("body_mass", "body_inertia", "dof_damping", "geom_friction", "actuator_gear", "density", "viscosity")
#: Fields given as one number (absolute), not as a mapping of element names to scales.
MEDIUM_FIELDS = ("density", "viscosity")
_AXES = {"body_inertia": 3, "geom_friction": 3}
#: The largest scale and medium values accepted: far outside every family's distribution (a
#: 1.5^3 = 3.4x scale is the widest drawn), where MuJoCo still integrates.
SCALE_LIMIT = 1000.0
MEDIUM_LIMITS = {"density": 1e6, "viscosity": 1e4}
MEDIUM_UNITS = {"density": "kg/m^3", "viscosity": "Pa s"}


@functools.cache
def _core_columns(robot: str, fields: tuple[str, ...]) -> tuple[tuple[str, ...], np.ndarray]:
    """The core's column labels and the asset's values for ``fields`` (the core names the
    elements, so Python and C++ cannot disagree on order or names)."""
    core = _core.VecEnvCore(robot, "direction", asset_path(robot), 1, 1, 1, 0, physics=list(fields))
    return tuple(core.physics_columns), np.array(core.physics_defaults)


def _field_columns(robot: str, field: str) -> tuple[tuple[str, ...], np.ndarray]:
    """Element names of ``field`` and its defaults (``[n]``, ``[n, 3]`` per axis, or ``[]``)."""
    labels, defaults = _core_columns(robot, (field,))
    if field in MEDIUM_FIELDS:
        return (), defaults.reshape(())
    inner = [label[len(field) + 1 : -1] for label in labels]  # "body_inertia[torso,2]" -> "torso,2"
    axes = _AXES.get(field)
    if axes:
        names = tuple(dict.fromkeys(label.rsplit(",", 1)[0] for label in inner))
        return names, defaults.reshape(len(names), axes)
    return tuple(inner), defaults


def write_fields(model: mujoco.MjModel, values: Mapping[str, np.ndarray]) -> None:
    """Write absolute ``values`` (field -> ``PhysicsLayout.defaults``' shape) into ``model``, as the
    core writes a thread's model copy."""
    for field, value in values.items():
        if field == "body_mass":
            model.body_mass[1:] = value
        elif field == "body_inertia":
            model.body_inertia[1:] = value
        elif field == "dof_damping":
            model.dof_damping[:] = value
        elif field == "geom_friction":
            model.geom_friction[:] = value
        elif field == "actuator_gear":
            model.actuator_gear[:, 0] = value
        else:
            setattr(model.opt, field, float(value))


@dataclasses.dataclass(frozen=True)
class PhysicsLayout:
    """The physics fields of one family on one robot: names, defaults and the core's row."""

    robot: str
    fields: tuple[str, ...]

    def __post_init__(self) -> None:
        unknown = [f for f in self.fields if f not in PHYSICS_FIELDS]
        if unknown or len(set(self.fields)) != len(self.fields):
            raise ValueError(f"physics: expected distinct fields among {list(PHYSICS_FIELDS)}, got {list(self.fields)}")

    def names(self, field: str) -> tuple[str, ...]:
        """The element names of ``field`` (``()`` for the medium), in model order."""
        return _field_columns(self.robot, field)[0]

    def defaults(self, field: str) -> np.ndarray:
        """The asset's values of ``field`` (a copy): ``[n]``, ``[n, 3]`` per axis, ``[]`` (medium)."""
        return _field_columns(self.robot, field)[1].copy()

    @property
    def size(self) -> int:
        """Number of physics values in a task row."""
        return int(sum(self.defaults(f).size for f in self.fields))

    @property
    def labels(self) -> tuple[str, ...]:
        """One label per value of the row (the core's ``physics_columns``)."""
        return _core_columns(self.robot, self.fields)[0]

    def scales(self, task: Mapping[str, Any], where: str = "task") -> dict[str, np.ndarray]:
        """Check a task's physics keys and return every field's scales (medium: absolute values),
        in ``defaults``' shapes, 1 (medium: the default) where the task says nothing."""
        out: dict[str, np.ndarray] = {}
        for field in self.fields:
            default = self.defaults(field)
            if field in MEDIUM_FIELDS:
                if field in task:  # absolute, checked against the medium's limits
                    default = np.array(_medium(task[field], field, f"{where}[{field!r}]"))
                out[field] = default
                continue
            scales = np.ones_like(default)
            given = task.get(field, {})
            if not isinstance(given, Mapping):
                raise TypeError(
                    f"{where}[{field!r}]: expected a dict of {self.robot} element names to scales, "
                    f"got {type(given).__name__}"
                )
            names = self.names(field)
            for name, value in given.items():
                if name not in names:
                    raise ValueError(f"{where}[{field!r}]: unknown name {name!r} ({self.robot}'s: {', '.join(names)})")
                scales[names.index(name)] = _scale(value, field, f"{where}[{field!r}][{name!r}]")
            out[field] = scales
        return out

    def encode(self, task: Mapping[str, Any], where: str = "task") -> np.ndarray:
        """The core's physics row, absolute values float64 ``[size]`` (the asset's value x scale)."""
        scales = self.scales(task, where)
        return np.concatenate([self._absolute(f, scales[f]).ravel() for f in self.fields])

    def decode(self, values: np.ndarray) -> dict[str, np.ndarray]:
        """The inverse of ``encode``: a row of absolute values ``[size]`` as scales per field
        (``defaults``' shapes; medium: the absolute value). An element whose asset value is 0 has
        scale 1 while it stays 0, else inf."""
        out, start = {}, 0
        for field in self.fields:
            default = self.defaults(field)
            part = np.asarray(values[start : start + default.size], dtype=np.float64).reshape(default.shape)
            start += default.size
            if field in MEDIUM_FIELDS:
                out[field] = part
            else:
                with np.errstate(divide="ignore", invalid="ignore"):
                    out[field] = np.where(default == 0, np.where(part == 0, 1.0, np.inf), part / default)
        return out

    def named(self, field: str, scales: np.ndarray) -> dict[str, Any]:
        """``{element name: scale}`` (a 3-list per axis) for one field's ``[n]`` or ``[n, 3]`` scales."""
        return {n: s.tolist() if np.ndim(s) else float(s) for n, s in zip(self.names(field), scales)}

    def canonical(self, task: Mapping[str, Any]) -> dict[str, Any]:
        """``task`` with every element of every field, as plain floats (and 3-lists per axis):
        what ``sample_tasks`` returns and an exported policy's metadata records."""
        scales = self.scales(task)
        return {f: float(scales[f]) if f in MEDIUM_FIELDS else self.named(f, scales[f]) for f in self.fields}

    def absolute(self, task: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The task's absolute values per field (``defaults``' shapes)."""
        scales = self.scales(task)
        return {f: self._absolute(f, scales[f]) for f in self.fields}

    def apply(self, model: mujoco.MjModel, task: Mapping[str, Any]) -> None:
        """Write ``task``'s physics into a MuJoCo model of this robot (rendering, replay)."""
        write_fields(model, self.absolute(task))

    def _absolute(self, field: str, scales: np.ndarray) -> np.ndarray:
        return scales if field in MEDIUM_FIELDS else self.defaults(field) * scales


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
    number = float(value)
    if not np.isfinite(number):
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    return number


def _scale(value: Any, field: str, where: str) -> float | np.ndarray:
    positive = field in ("body_mass", "body_inertia")
    bound = "> 0" if positive else ">= 0"
    axes = _AXES.get(field)
    if axes and isinstance(value, (list, tuple, np.ndarray)):
        if len(value) != axes:
            raise ValueError(f"{where}: expected one scale or {axes} (one per axis), got {len(value)}: {value!r}")
        return np.array([_scale(v, field, f"{where}[{k}]") for k, v in enumerate(value)])
    scale = _number(value, where)
    if scale < 0 or (positive and scale == 0) or scale > SCALE_LIMIT:
        raise ValueError(f"{where}: expected a scale {bound} and <= {SCALE_LIMIT:g}, got {value!r}")
    return scale


def _medium(value: Any, field: str, where: str) -> float:
    number = _number(value, where)
    if not 0 <= number <= MEDIUM_LIMITS[field]:
        limit = MEDIUM_LIMITS[field]
        raise ValueError(f"{where}: expected a value in [0, {limit:g}] {MEDIUM_UNITS[field]}, got {value!r}")
    return number


#: Colour of the bodies whose motor a task disabled, in frames and videos.
DISABLED_RGBA = (0.9, 0.1, 0.1, 1.0)


def show_task(model: mujoco.MjModel, layout: PhysicsLayout, task: Mapping[str, Any], base_rgba: np.ndarray) -> None:
    """Make ``model`` (a model of ``layout.robot`` for rendering or replay) simulate ``task``'s
    physics, and paint the bodies of disabled motors (gear 0) red; ``base_rgba`` is the asset's
    ``geom_rgba``, restored first."""
    values = layout.absolute(task)
    write_fields(model, values)
    model.geom_rgba[:] = base_rgba
    gear = values.get("actuator_gear")
    if gear is None:
        return
    for actuator in np.flatnonzero(gear == 0):
        if model.actuator_trntype[actuator] == mujoco.mjtTrn.mjTRN_JOINT:
            body = model.jnt_bodyid[model.actuator_trnid[actuator, 0]]
            model.geom_rgba[model.geom_bodyid == body] = DISABLED_RGBA


def describe(layout: PhysicsLayout, task: Mapping[str, Any]) -> str:
    """One line for a frame's label: what the task changed (``""`` if nothing)."""
    scales = layout.scales(task)
    parts = []
    for field in layout.fields:
        value = scales[field]
        if field in MEDIUM_FIELDS:
            parts.append(f"{field} {float(value):.3g} {MEDIUM_UNITS[field]}")
        elif field == "actuator_gear" and np.all((value == 0) | (value == 1)):
            dead = [n for n, s in zip(layout.names(field), value) if s == 0]
            parts.append("disabled: " + ", ".join(dead) if dead else "all motors")
        elif np.any(value != 1):
            parts.append(f"{field} x{value.min():.2g}-{value.max():.2g}" if value.min() != value.max()
                         else f"{field} x{value.min():.2g}")
    return "; ".join(parts)
