"""The MuJoCo simulator as a :class:`~bmaml_robot_deploy.loop.Robot`: the training robots.

Needs the main package ``bmaml_robot`` (MuJoCo and the C++ core), imported only when a
``SimulatedRobot`` is made; the rest of the deploy runtime works without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bmaml_robot_deploy.metadata import PolicyMetadata

#: What to install when the simulator is asked for without the main package.
INSTALL_HINT = "pip install bmaml-robot"

#: Episode time limit (steps) of a simulated robot when none is given and the policy file does
#: not say its training horizon (``bmaml.horizon``; files exported before it existed).
DEFAULT_MAX_EPISODE_STEPS = 1000


def import_main_package() -> Any:
    """``import bmaml_robot``, or an ``ImportError`` that says to ``pip install bmaml-robot``."""
    try:
        import bmaml_robot
    except ImportError as error:
        raise ImportError(
            "the simulated robot needs the main package bmaml_robot (MuJoCo robots and the C++ core), "
            f"which could not be imported ({error}); install it with: {INSTALL_HINT}"
        ) from error
    return bmaml_robot


def default_episode_steps(metadata: PolicyMetadata) -> int:
    """The simulated episode length for a policy file: its training horizon (``metadata.horizon``),
    or :data:`DEFAULT_MAX_EPISODE_STEPS` for a file exported without one."""
    return DEFAULT_MAX_EPISODE_STEPS if metadata.horizon is None else metadata.horizon


class SimulatedRobot:
    """One robot of a task family, simulated by ``bmaml_robot.make_vec(family, 1)`` with a fixed task.

    Observations are float64 ``[obs_dim]``; actions ``[act_dim]`` are clipped to the robot's
    action space by the simulator. Episodes end by termination (Ant falls) or at
    ``max_episode_steps``; the robot then starts the next one at once (``new_episode`` is True
    for its first observation) and appends the finished episode's return to ``episode_returns``.
    Real-time pacing is the control loop's job (``run_control_loop(..., realtime=True)``).
    After each ``send_action``, ``last_reward``, ``last_terminated`` and ``last_truncated``
    describe that step: ``last_reward`` is the reward of the step that led to the current
    observation (0 before the first step), what an RL^2 policy reads (a
    :class:`~bmaml_robot_deploy.loop.RewardRobot`).

    Args:
        family: task family, e.g. ``"HalfCheetahDir"``.
        task: the task dict, e.g. ``{"direction": -1.0}``.
        seed: seed of the reset noise (same seed, same episodes).
        max_episode_steps: time limit of an episode (``for_policy``: the file's training horizon).

    Raises:
        ImportError: bmaml_robot is not installed (``pip install bmaml-robot``).
        ValueError: unknown family, malformed task, bad numbers (from bmaml_robot).
    """

    def __init__(
        self,
        family: str,
        task: Mapping[str, Any],
        *,
        seed: int = 0,
        max_episode_steps: int = DEFAULT_MAX_EPISODE_STEPS,
    ) -> None:
        bm = import_main_package()
        self.family = family
        self.task = dict(task)
        self.env = bm.make_vec(family, 1, seed=seed, max_episode_steps=max_episode_steps)
        self.max_episode_steps: int = int(max_episode_steps)
        self.env.set_tasks([self.task])
        self.robot = self.env.family.robot
        self.obs_dim: int = self.env.obs_dim
        self.act_dim: int = self.env.act_dim
        self.dt: float = self.env.dt
        self.action_low = np.asarray(self.env.single_action_space.low)
        self.action_high = np.asarray(self.env.single_action_space.high)
        self._actions = np.zeros((1, self.act_dim), np.float32)
        obs, _ = self.env.reset(seed=seed)
        self._obs: np.ndarray = obs[0]
        self.new_episode = True
        self.last_reward = 0.0
        self.last_terminated = False
        self.last_truncated = False
        self._episode_return = 0.0
        self._episode_length = 0
        self.episode_returns: list[float] = []
        self.episode_lengths: list[int] = []
        self.episode_terminated: list[bool] = []
        self.steps = 0

    @classmethod
    def for_policy(
        cls, metadata: PolicyMetadata, *, max_episode_steps: int | None = None, **kwargs: Any
    ) -> SimulatedRobot:
        """The robot and task a policy file was exported for (its metadata's ``family`` and
        ``task``); checks that robot, observation and action sizes agree with the metadata.

        ``max_episode_steps`` (None: the file's training horizon, ``metadata.horizon``, or
        :data:`DEFAULT_MAX_EPISODE_STEPS` for a file without one) and ``kwargs`` as in the
        constructor."""
        if max_episode_steps is None:
            max_episode_steps = default_episode_steps(metadata)
        robot = cls(metadata.family, metadata.task, max_episode_steps=max_episode_steps, **kwargs)
        problems = []
        if robot.robot != metadata.robot:
            problems.append(f"robot {robot.robot!r} (metadata says {metadata.robot!r})")
        if robot.obs_dim != metadata.obs_dim:
            problems.append(f"obs_dim {robot.obs_dim} (metadata says {metadata.obs_dim})")
        if robot.act_dim != metadata.act_dim:
            problems.append(f"act_dim {robot.act_dim} (metadata says {metadata.act_dim})")
        if problems:
            robot.close()
            raise ValueError(f"metadata: the simulated {metadata.family} has " + ", ".join(problems))
        return robot

    def read_observation(self) -> np.ndarray:
        """The current observation, float64 ``[obs_dim]`` (always available)."""
        return self._obs

    def send_action(self, action: np.ndarray) -> None:
        """Step the simulation one control step (``dt`` seconds of simulated time) with ``action``."""
        self._actions[0] = action
        obs, reward, terminated, truncated, _ = self.env.step(self._actions)
        self.steps += 1
        self.last_reward = float(reward[0])
        self.last_terminated = bool(terminated[0])
        self.last_truncated = bool(truncated[0])
        self._episode_return += self.last_reward
        self._episode_length += 1
        self._obs = obs[0]
        self.new_episode = bool(terminated[0] or truncated[0])
        if self.new_episode:
            self.episode_returns.append(self._episode_return)
            self.episode_lengths.append(self._episode_length)
            self.episode_terminated.append(bool(terminated[0]))
            self._episode_return = 0.0
            self._episode_length = 0

    @property
    def episode_return(self) -> float:
        """Return of the episode in progress so far."""
        return self._episode_return

    @property
    def episode_length(self) -> int:
        """Steps of the episode in progress so far (0 right after an episode ended)."""
        return self._episode_length

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> SimulatedRobot:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
