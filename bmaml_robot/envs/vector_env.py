"""The batched robot environment: a ``gymnasium.vector.VectorEnv`` over the C++ core.

All physics, observations, rewards, terminations, time limits and resets happen in C++ with
the GIL released; this class validates tasks, exposes Gymnasium's API and packs ``info``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from bmaml_robot import _core
from bmaml_robot.envs.action_map import ActionMap
from bmaml_robot.envs.assets import asset_path
from bmaml_robot.envs.families import Task, TaskFamily, encode_tasks, get_family

REWARD_TERMS: tuple[str, ...] = tuple(_core.REWARD_TERMS)

_MAX_COUNT = 2**30  # the core's bound on num_envs and max_episode_steps
#: The most threads one env may use (the core's bound): results never depend on the thread count,
#: and more threads than cores only add switching; at most ``num_envs`` of them are started.
MAX_THREADS: int = _core.MAX_THREADS


class BatchedRobotEnv(VectorEnv):
    """``num_envs`` robots of one task family, each with its own task, stepped in lockstep.

    Observations are float64 ``[num_envs, obs_dim]``; actions ``[num_envs, act_dim]`` (any float
    dtype) are clipped to the action space before they are applied. Episodes that end are reset
    in the same step (``AutoresetMode.SAME_STEP``): the returned observation starts the next
    episode and ``info["final_obs"]`` (float64 ``[num_envs, obs_dim]``, rows valid where
    ``info["_final_obs"]``) holds the last observation of the episode that ended.

    ``info`` always has ``x_velocity`` and the reward terms (``reward_task``, ``reward_ctrl``,
    ``reward_contact``, ``reward_survive``; they sum to the reward), all ``[num_envs]``, and
    ``unstable`` (bool ``[num_envs]``). An env whose simulation became unstable (NaN, divergence)
    ends its episode as truncated with zero reward and is reset; the others are not affected,
    and ``info["unstable_reason"]`` (object ``[num_envs]``) says why.

    Until ``set_tasks`` is called, env tasks are drawn from the family with ``seed``.
    ``final_obs`` is one float array (NaN rows where no episode ended), not Gymnasium's object
    array of per-env observations: it is what batched samplers want.

    ``num_threads`` is an integer in ``[1, MAX_THREADS]`` (256): ``min(num_threads, num_envs)``
    threads step the envs (the calling thread is one of them), and results are bit-identical for
    any count. A larger ``num_threads`` is a ``ValueError``; if the OS refuses a thread (a process
    or memory limit, ``ulimit -u`` / ``ulimit -v``), the threads already started are joined and a
    ``RuntimeError`` says so.

    Closing: ``close()`` frees the robots and joins the threads; calling it again does nothing.
    After it every method (``step``, ``reset``, ``reset_streams``, ``set_state``, ``get_state``,
    ``set_tasks``, ``sample_tasks``, ``action_map``) raises ``RuntimeError("env is closed:
    step() after close()")``, naming the method; attributes (spaces, ``tasks``, ``num_envs``)
    stay readable. A call already running in another thread when ``close()`` comes finishes
    normally and returns its result; the robots are freed when it returns.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self,
        family: str | TaskFamily,
        num_envs: int,
        *,
        num_threads: int = 1,
        seed: int = 0,
        max_episode_steps: int = 100,
    ) -> None:
        self.family = family if isinstance(family, TaskFamily) else get_family(family)
        for name, value in (("num_envs", num_envs), ("max_episode_steps", max_episode_steps)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= _MAX_COUNT:
                raise ValueError(f"{name}: expected an integer in [1, 2**30], got {value!r}")
        if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) or not 1 <= num_threads <= MAX_THREADS:
            raise ValueError(f"num_threads: expected an integer in [1, {MAX_THREADS}] (at most {MAX_THREADS} threads, and "
                             f"at most num_envs of them are started; results do not depend on num_threads), got {num_threads!r}")
        _check_seed(seed, "seed")
        self._core = _core.VecEnvCore(
            self.family.robot, self.family.objective, asset_path(self.family.robot),
            int(num_envs), int(num_threads), int(max_episode_steps), int(seed),
        )
        self.num_envs = int(num_envs)
        self.num_threads = self._core.num_threads
        self.max_episode_steps = int(max_episode_steps)
        self.obs_dim: int = self._core.obs_dim
        self.act_dim: int = self._core.act_dim
        self.dt: float = self._core.dt
        self.single_observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (self.obs_dim,), np.float64)
        self.single_action_space = gymnasium.spaces.Box(
            np.array(self._core.action_low, np.float32), np.array(self._core.action_high, np.float32), dtype=np.float32
        )
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        # Until set_tasks is called, each env has a task drawn from the family with `seed`
        # (never an all-zeros task that would mean "no direction" or "goal at the origin").
        self.tasks: list[Task] = []
        self.set_tasks(self.family.sample_tasks(self.num_envs, np.random.default_rng(seed)))

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator) -> list[Task]:
        """Draw tasks from this env's family, e.g. ``[{"direction": -1.0}, ...]``."""
        self._live("sample_tasks")
        return self.family.sample_tasks(num_tasks, rng)

    def action_map(self, scale: float | None = None) -> ActionMap:
        """The map from a policy's normalised actions in ``[-scale, scale]`` onto this robot's bounds
        (float64, as the core clips); ``scale=None``: the family's default (``TaskFamily.action_scale``)."""
        core = self._live("action_map")
        scale = self.family.action_scale if scale is None else scale
        return ActionMap(scale, np.array(core.action_low, np.float64), np.array(core.action_high, np.float64))

    def set_tasks(self, tasks: Sequence[Mapping[str, Any]]) -> None:
        """One task dict per env (``len(tasks) == num_envs``); used from the next step on."""
        core = self._live("set_tasks")
        core.set_tasks(encode_tasks(self.family, tasks, self.num_envs))
        self.tasks = [dict(t) for t in tasks]

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """Start a new episode in every env. With ``seed``, each env's reset-noise stream is
        reseeded from ``(seed, env index)``. Returns obs float64 ``[num_envs, obs_dim]``."""
        core = self._live("reset")
        if options:
            raise ValueError(f"options: this env takes no reset options, got {sorted(options)}")
        if seed is not None:
            _check_seed(seed, "seed")
        return core.reset(seed), {}

    def reset_streams(self, seeds: Any, streams: Any) -> np.ndarray:
        """Start a new episode in every env, env ``i``'s reset noise from stream ``streams[i]`` of
        ``seeds[i]``: it starts exactly as env ``streams[i]`` of an env reset with
        ``seed=seeds[i]``. seeds, streams: integers in [0, 2**64), ``[num_envs]``.
        Returns obs float64 ``[num_envs, obs_dim]``."""
        core = self._live("reset_streams")
        arrays = [_uint64_array(value, name, self.num_envs) for value, name in ((seeds, "seeds"), (streams, "streams"))]
        return core.reset_streams(*arrays)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Advance every env one control step with ``actions`` ``[num_envs, act_dim]``."""
        # One reference for the whole call: a close() from another thread meanwhile drops
        # self._core, not this step's core, which lives until the step has packed its info.
        core = self._live("step")
        obs, reward, terminated, truncated, x_velocity, terms, final_obs, instability = core.step(actions)
        unstable = instability != 0
        info: dict[str, Any] = {"x_velocity": x_velocity}
        for k, name in enumerate(REWARD_TERMS):
            info[name] = terms[:, k]
        info["final_obs"] = final_obs
        info["_final_obs"] = terminated | truncated
        info["unstable"] = unstable
        if unstable.any():
            reasons = np.full(self.num_envs, "", dtype=object)
            for i in np.flatnonzero(unstable):
                message = core.warning(int(i))
                reasons[i] = _core.INSTABILITY_REASONS[instability[i]] + (f": {message}" if message else "")
            info["unstable_reason"] = reasons
        return obs, reward, terminated, truncated, info

    def set_state(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Set every env's state (qpos ``[num_envs, nq]``, qvel ``[num_envs, nv]``) as
        Gymnasium's ``MujocoEnv.set_state`` after ``mj_resetData``; starts new episodes.
        Returns obs float64 ``[num_envs, obs_dim]``."""
        return self._live("set_state").set_state(qpos, qvel)

    def get_state(self) -> tuple[np.ndarray, np.ndarray]:
        """Every env's (qpos ``[num_envs, nq]``, qvel ``[num_envs, nv]``)."""
        return self._live("get_state").get_state()

    def close_extras(self, **kwargs: Any) -> None:
        # Frees the robots and joins the threads, now or, if a call is running in another
        # thread, when it returns (it holds its own reference to the core).
        self._core = None

    def _live(self, method: str) -> Any:
        """The core, or the documented error for a call after ``close()``."""
        core = getattr(self, "_core", None)  # read once: close() may run in another thread
        if core is None:
            raise RuntimeError(f"env is closed: {method}() after close()")
        return core


def _check_seed(seed: Any, name: str) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise ValueError(f"{name}: expected an integer in [0, 2**64), got {seed!r}")


def _uint64_array(value: Any, name: str, length: int) -> np.ndarray:
    """``value`` as a uint64 array ``[length]``, or a ValueError naming ``name``."""
    array = np.asarray(value)
    if array.shape != (length,):
        raise ValueError(f"{name}: expected {length} integers (shape [{length}]), got shape {list(array.shape)}")
    if array.dtype.kind not in "iu" or (array.dtype.kind == "i" and (array < 0).any()):
        raise ValueError(f"{name}: expected integers in [0, 2**64), got dtype {array.dtype}"
                         + (" with negative values" if array.dtype.kind == "i" else ""))
    return np.ascontiguousarray(array, dtype=np.uint64)


def make_vec(
    family: str,
    num_envs: int,
    *,
    num_threads: int = 1,
    seed: int = 0,
    max_episode_steps: int = 100,
) -> BatchedRobotEnv:
    """Make ``num_envs`` robots of the task ``family`` (see ``bmaml_robot.FAMILIES``), stepped on
    ``min(num_threads, num_envs)`` threads; ``num_threads`` is at most ``MAX_THREADS`` (256), and
    results do not depend on it.

    Example::

        env = bm.make_vec("HalfCheetahDir", num_envs=800, num_threads=2, seed=0, max_episode_steps=100)
        tasks = env.sample_tasks(40, rng=np.random.default_rng(0))
        env.set_tasks([t for t in tasks for _ in range(20)])
        obs, info = env.reset(seed=0)
    """
    return BatchedRobotEnv(family, num_envs, num_threads=num_threads, seed=seed, max_episode_steps=max_episode_steps)
