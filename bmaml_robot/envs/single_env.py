"""One robot with one task as a plain ``gymnasium.Env`` (registered as ``bmaml_robot/<Family>-v0``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import gymnasium
import mujoco
import numpy as np

from bmaml_robot.envs.assets import load_model
from bmaml_robot.envs.families import get_family
from bmaml_robot.envs.physics import show_task
from bmaml_robot.envs.rendering import OffscreenRenderer, draw_navigation
from bmaml_robot.envs.vector_env import _MAX_COUNT, BatchedRobotEnv
from bmaml_robot_deploy.checks import check_int

RENDER_MODES = ("human", "rgb_array")
#: Navigation2D's frames per second (its step is a move, not a time): as ``bmaml-render``'s default.
NAVIGATION_FPS = 10
_MAX_SIZE = 4096


class RobotTaskEnv(gymnasium.Env):
    """``gymnasium.make("bmaml_robot/HalfCheetahDir-v0", task={"direction": -1.0})``.

    Without ``task``, one is drawn from the family at each ``reset``, seeded by its ``seed``.
    Actions of any float dtype are accepted (float16 to longdouble; converted to float64, values
    beyond float64's range are a ``ValueError``). ``close()`` frees the robot (again: nothing);
    after it ``reset`` and ``step`` raise ``RuntimeError("env is closed: step() after close()")``.

    Time limit: ``gymnasium.make`` wraps the env in Gymnasium's ``TimeLimit`` with the spec's
    ``max_episode_steps`` (100) or the caller's (``gymnasium.make(..., max_episode_steps=N)``;
    ``-1``: none), and that wrapper is the only limit: the env made by ``make`` has none of its own
    (``max_episode_steps=None``). Made directly, ``max_episode_steps=N`` truncates it after N steps.

    Seeds: ``reset(seed=s)`` starts the robot as env 0 of a ``BatchedRobotEnv`` reset with
    ``seed=s`` (= env ``i`` of one reset with a seed list holding ``s`` at ``i``); ``reset()``
    continues the reset-noise stream (a first ``reset()`` draws its seed from ``np_random``).

    Rendering (``render_mode``; ``width``, ``height``: pixels, 480 as Gymnasium's MuJoCo envs):
    ``"rgb_array"``: ``render()`` returns uint8 ``[height, width, 3]``
    (MuJoCo robots: offscreen, from the model's ``track`` camera, on EGL or OSMesa; without a
    working backend ``render()`` raises ``GLUnavailableError`` naming the packages to install;
    Navigation2D is drawn with numpy: the square of goals, the goal, the path and the robot).
    ``"human"`` shows those frames in a pygame window at ``metadata["render_fps"]`` (``1 / dt``:
    20 for HalfCheetah and Ant, 25 for Swimmer; 10 for Navigation2D): it needs a display (and
    pygame), and is an error at construction without one; ``metadata["render_modes"]`` lists it only
    where a display exists. The frame after a step that ended an episode shows its last state.
    """

    metadata = {"render_modes": list(RENDER_MODES)}

    def __init__(
        self,
        family: str,
        task: Mapping[str, Any] | None = None,
        max_episode_steps: int | None = None,
        render_mode: str | None = None,
        width: int = 480,
        height: int = 480,
    ) -> None:
        if render_mode is not None and render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode: expected None or one of {list(RENDER_MODES)}, got {render_mode!r}")
        for name, value in (("width", width), ("height", height)):
            check_int(value, name, minimum=1, maximum=_MAX_SIZE, note=" (pixels)")
        if max_episode_steps is None:
            max_episode_steps = _MAX_COUNT  # no limit of its own: TimeLimit's is the one
        if task is not None:  # before any resource is made; errors name `task`, not the batch's `tasks[0]`
            get_family(family).encode(task, "task")
        self._window = _Window() if render_mode == "human" else None  # fails early without a display
        self._vec = BatchedRobotEnv(family, 1, max_episode_steps=max_episode_steps)
        self.family = self._vec.family
        self.observation_space = self._vec.single_observation_space
        self.action_space = self._vec.single_action_space
        self.render_mode = render_mode
        self.width, self.height = int(width), int(height)
        navigation = self.family.robot == "Navigation2D"
        fps = NAVIGATION_FPS if navigation else int(round(1.0 / self._vec.dt))
        modes = [mode for mode in RENDER_MODES if mode != "human" or _display_problem() is None]
        self.metadata = {"render_modes": modes, "render_fps": fps}
        self._fixed_task = None
        if task is not None:
            self._fixed_task = dict(task)
            self._vec.set_tasks([self._fixed_task])
        self.task: dict[str, Any] | None = self._fixed_task
        self._seeded = False
        # The first observation of the next episode when the core already started it (the episode
        # ended by termination or the core's own limit: the core resets in the same step).
        self._next_obs: np.ndarray | None = None
        self._renderer: OffscreenRenderer | None = None
        self._model: mujoco.MjModel | None = None
        self._base_rgba: np.ndarray | None = None  # the asset's geom colours
        self._shown_task: dict[str, Any] | None = None  # the task _model holds
        self._last_state: tuple[np.ndarray, np.ndarray] | None = None  # what the frame shows, if not now
        self._path: list[np.ndarray] = []  # Navigation2D: positions this episode

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        self._vec._live("reset")  # before the task is drawn: the error names this call
        if options:
            raise ValueError(f"options: this env takes no reset options, got {sorted(options)}")
        super().reset(seed=seed)
        if self._fixed_task is None:
            self.task = self.family.sample_tasks(1, self.np_random)[0]
            self._vec.set_tasks([self.task])
        if seed is not None:
            obs = self._vec.reset(seed=seed)[0][0]
        elif self._next_obs is not None:
            obs = self._next_obs  # the core started this episode with its stream's next draw
        elif not self._seeded:  # a first reset without a seed: a random one, as Gymnasium's envs
            obs = self._vec.reset(seed=int(self.np_random.integers(2**63)))[0][0]
        else:
            obs = self._vec.reset()[0][0]
        self._seeded, self._next_obs, self._last_state = True, None, None
        self._path = [obs.copy()]
        if self.render_mode == "human":
            self.render()
        assert self.task is not None  # the fixed task, or the one drawn above
        return obs, {"task": dict(self.task)}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        before = self._vec.get_state() if self.render_mode is not None and self._model_needed() else None
        obs, reward, terminated, truncated, info = self._vec.step(np.asarray(action)[None])
        done = bool(terminated[0] or truncated[0])
        one = {k: v[0] for k, v in info.items() if not k.startswith("_") and k != "final_obs"}
        observation = info["final_obs"][0] if done else obs[0]
        self._next_obs = obs[0] if done else None
        self._last_state = None
        if done and before is not None:  # the core reset the robot: the frame replays the last step
            self._last_state = self._replay(before, np.asarray(action, dtype=np.float64), bool(one["unstable"]))
        self._path.append(observation.copy())
        if self.render_mode == "human":
            self.render()
        return observation, float(reward[0]), bool(terminated[0]), bool(truncated[0]), one

    def render(self) -> np.ndarray | None:
        """The current frame, uint8 ``[height, width, 3]`` (``"rgb_array"``), or shown (``"human"``)."""
        if self.render_mode is None:
            gymnasium.logger.warn("render: render_mode is None; make the env with render_mode=\"rgb_array\" "
                                  "(e.g. gymnasium.make(..., render_mode=\"rgb_array\"))")
            return None
        frame = self._frame()
        if self.render_mode == "human":
            assert self._window is not None
            self._window.show(frame, self.metadata["render_fps"])
            return None
        return frame

    def _frame(self) -> np.ndarray:
        if self.family.robot == "Navigation2D":
            goal = self.task["goal"] if self.task is not None else (0.0, 0.0)
            path = np.array(self._path) if self._path else np.zeros((1, 2))
            return draw_navigation(path[-1], goal, path, self.width, self.height)
        qpos, qvel = self._last_state if self._last_state is not None else (
            state[0] for state in self._vec.get_state())
        model = self._robot_model()  # the current task's physics and colours, changed in place
        if self._renderer is None:
            self._renderer = OffscreenRenderer(model, self.width, self.height)
        return self._renderer.render(qpos, qvel)

    def _model_needed(self) -> bool:
        return self.family.robot != "Navigation2D"

    def _robot_model(self) -> mujoco.MjModel:
        """The robot's model for frames and replays, with the current task's physics."""
        if self._model is None:
            self._model = load_model(self.family.robot)
            self._base_rgba = self._model.geom_rgba.copy()
        layout = self.family.layout
        if layout is not None and self.task is not None and self._shown_task != self.task:
            assert self._base_rgba is not None
            show_task(self._model, layout, self.task, self._base_rgba)
            self._shown_task = dict(self.task)
        return self._model

    def _replay(self, before: tuple[np.ndarray, np.ndarray], action: np.ndarray,
                unstable: bool) -> tuple[np.ndarray, np.ndarray]:
        """The state after the step that ended the episode (qpos ``[nq]``, qvel ``[nv]``), for its
        frame: the step again in a Python ``MjData`` (the core has already reset the robot). The
        same physics up to the solver's warm start: the same picture. Unstable: the state before."""
        qpos, qvel = before[0][0], before[1][0]
        if unstable:
            return qpos, qvel
        model = self._robot_model()
        data = mujoco.MjData(model)
        data.qpos[:], data.qvel[:] = qpos, qvel
        data.ctrl[:] = np.clip(action, self._vec.single_action_space.low, self._vec.single_action_space.high)
        mujoco.mj_step(model, data, nstep=max(1, int(round(self._vec.dt / model.opt.timestep))))
        return data.qpos.copy(), data.qvel.copy()

    def close(self) -> None:
        self._vec.close()
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        if self._window is not None:
            self._window.close()


def _display_problem() -> str | None:
    """Why ``render_mode="human"`` cannot open a window here, or None."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return ("render_mode: 'human' needs a display, and there is none here (DISPLAY and WAYLAND_DISPLAY "
                "are unset); use render_mode='rgb_array' (e.g. with gymnasium.wrappers.RecordVideo) instead")
    return None


class _Window:
    """A pygame window showing frames (``render_mode="human"``), as Gymnasium's HumanRendering."""

    def __init__(self) -> None:
        problem = _display_problem()
        if problem is not None:
            raise RuntimeError(problem)
        try:
            import pygame
        except ImportError as error:
            raise gymnasium.error.DependencyNotInstalled(
                "render_mode: 'human' shows the frames with pygame, which is not installed: pip install pygame "
                "(or use render_mode='rgb_array')") from error
        self._pygame = pygame
        self._screen: Any = None
        self._clock: Any = None

    def show(self, frame: np.ndarray, fps: float) -> None:
        pygame = self._pygame
        if self._screen is None:
            pygame.init()
            pygame.display.init()
            self._screen = pygame.display.set_mode((frame.shape[1], frame.shape[0]))
            self._clock = pygame.time.Clock()
        surface = pygame.surfarray.make_surface(np.transpose(frame, (1, 0, 2)))
        self._screen.blit(surface, (0, 0))
        pygame.event.pump()
        self._clock.tick(fps)
        pygame.display.flip()

    def close(self) -> None:
        if self._screen is not None:
            self._pygame.display.quit()
            self._pygame.quit()
            self._screen = None
