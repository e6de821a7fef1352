"""The action convention: the policy acts in a normalised space, the robot in its own units.

The policy's Gaussian lives in ``[-scale, scale]^act_dim``; the robot receives
``clip(a, -scale, scale)`` mapped affinely onto its bounds ``[low, high]``. This is the convention
of the MAML reference implementations (pytorch-maml-rl's ``NormalizedActionWrapper`` with
``normalization_scale: 10`` on its MuJoCo robots; garage's ``normalize(env,
expected_action_scale=10.)``), and without it no MuJoCo family learns: with ``scale = 1`` on a
robot whose bounds are ``[-1, 1]`` a freshly initialised Gaussian (std 1, Xavier mean of rms 0.8)
saturates a third of its action components, the control cost of that noise (-15 per episode on
HalfCheetah) swamps the task reward, and the inner gradient step carries no information about the
task. With ``scale = 10`` the same policy moves the robot by ~0.1 of its range, as in the papers.

Rewards, the control cost included, are computed by the robot on the action it receives.
The sampler, the learner's log-probabilities (on the stored normalised actions), ``bmaml-eval``,
``bmaml-render`` and ``bmaml-export`` (whose ONNX graph ends in this map) all use ``ActionMap``;
the Gymnasium envs keep the robot's own action space.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from bmaml_robot_deploy.checks import check_float

#: The normalised scale of the MuJoCo robots (pytorch-maml-rl, garage).
MUJOCO_ACTION_SCALE = 10.0


@dataclasses.dataclass(frozen=True)
class ActionMap:
    """``to_robot(a) = offset + gain * clip(a, -scale, scale)``: ``[-scale, scale]`` onto ``[low, high]``."""

    scale: float
    """Half-width of the policy's action space (> 0)."""
    low: np.ndarray
    """float64 ``[act_dim]``: the robot's lower bounds."""
    high: np.ndarray
    """float64 ``[act_dim]``: the robot's upper bounds."""

    def __post_init__(self) -> None:
        scale = check_float(self.scale, "action_scale", low=0, low_open=True)
        low, high = np.asarray(self.low, np.float64), np.asarray(self.high, np.float64)
        if low.ndim != 1 or low.shape != high.shape or not (
            np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(high >= low)
        ):
            raise ValueError(f"action bounds: expected finite low <= high, each [act_dim], got {low!r} and {high!r}")
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @property
    def gain(self) -> np.ndarray:
        """float64 ``[act_dim]``: robot units per normalised unit, ``(high - low) / (2 scale)``."""
        return (self.high - self.low) / (2.0 * self.scale)

    @property
    def offset(self) -> np.ndarray:
        """float64 ``[act_dim]``: the robot's action at the normalised action 0, ``(low + high) / 2``."""
        return (self.low + self.high) / 2.0

    @property
    def is_identity(self) -> bool:
        """True when the policy already acts in the robot's units (bounds ``[-scale, scale]``)."""
        return bool(np.all(self.low == -self.scale) and np.all(self.high == self.scale))

    def to_robot(self, action: Any) -> Any:
        """The robot's action for the policy's ``action`` ``[..., act_dim]``.

        A numpy array (any float dtype) gives float64; a torch tensor gives a tensor of its own
        dtype (made of clamp, mul and add, so the ONNX export folds the map into its graph).
        """
        if isinstance(action, np.ndarray):
            clipped = np.clip(np.asarray(action, np.float64), -self.scale, self.scale)
            return clipped * self.gain + self.offset
        clipped = action.clamp(-self.scale, self.scale)  # torch.Tensor
        return clipped * action.new_tensor(self.gain) + action.new_tensor(self.offset)


def default_action_scale(family: str) -> float:
    """The scale a new run of ``family`` uses unless told otherwise (``TaskFamily.action_scale``;
    1 for the discrete tasks, where it means nothing)."""
    from bmaml_robot.envs.discrete import DISCRETE_FAMILIES
    from bmaml_robot.envs.families import get_family

    if family in DISCRETE_FAMILIES:
        return 1.0
    return get_family(family).action_scale


def legacy_action_scale(family: str) -> float:
    """The scale of a run made before the convention existed: its policy acted in the robot's own
    units (clipped to the bounds), i.e. the scale under which the map is the identity, the robot's
    bound (1 for the MuJoCo robots, 0.1 for Navigation2D)."""
    from bmaml_robot.envs.vector_env import BatchedRobotEnv

    env = BatchedRobotEnv(family, 1, max_episode_steps=1)
    try:
        bounds = env.action_map(1.0)
    finally:
        env.close()
    bound = float(bounds.high.max())
    if not (np.all(bounds.high == bound) and np.all(bounds.low == -bound)):
        raise ValueError(f"{family}: its robot's bounds are not symmetric, so no scale maps its actions unchanged")
    return bound
