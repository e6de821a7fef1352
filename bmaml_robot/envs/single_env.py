"""One robot with one task as a plain ``gymnasium.Env`` (registered as ``bmaml_robot/<Family>-v0``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium
import numpy as np

from bmaml_robot.envs.vector_env import BatchedRobotEnv


class RobotTaskEnv(gymnasium.Env):
    """``gymnasium.make("bmaml_robot/HalfCheetahDir-v0", task={"direction": -1.0})``.

    Without ``task``, one is drawn from the family at each ``reset``, seeded by its ``seed``.
    Actions of any float dtype are accepted (float16 to longdouble; converted to float64, values
    beyond float64's range are a ``ValueError``). ``close()`` frees the robot (again: nothing);
    after it ``reset`` and ``step`` raise ``RuntimeError("env is closed: step() after close()")``.
    """

    metadata = {"render_modes": []}

    def __init__(self, family: str, task: Mapping[str, Any] | None = None, max_episode_steps: int = 100) -> None:
        self._vec = BatchedRobotEnv(family, 1, max_episode_steps=max_episode_steps)
        self.family = self._vec.family
        self.observation_space = self._vec.single_observation_space
        self.action_space = self._vec.single_action_space
        self._fixed_task = None
        if task is not None:
            self.family.encode(task, "task")  # errors name `task`, not the batch's `tasks[0]`
            self._fixed_task = dict(task)
            self._vec.set_tasks([self._fixed_task])
        self.task: dict[str, Any] | None = self._fixed_task

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        self._vec._live("reset")  # before the task is drawn: the error names this call
        super().reset(seed=seed)
        if self._fixed_task is None:
            self.task = self.family.sample_tasks(1, self.np_random)[0]
            self._vec.set_tasks([self.task])
        env_seed = int(self.np_random.integers(2**63))
        obs, _ = self._vec.reset(seed=env_seed, options=options)
        return obs[0], {"task": dict(self.task)}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self._vec.step(np.asarray(action)[None])
        done = bool(terminated[0] or truncated[0])
        one = {k: v[0] for k, v in info.items() if not k.startswith("_") and k != "final_obs"}
        return (info["final_obs"][0] if done else obs[0]), float(reward[0]), bool(terminated[0]), bool(truncated[0]), one

    def close(self) -> None:
        self._vec.close()
