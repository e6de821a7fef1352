"""The batched robot environment: a ``gymnasium.vector.VectorEnv`` over the C++ core.

All physics, observations, rewards, terminations, time limits and resets happen in C++ with
the GIL released; this class validates tasks, exposes Gymnasium's API and packs ``info``.
``gymnasium.make_vec("bmaml_robot/<Family>-v0", num_envs=...)`` builds it through
``make_gymnasium_vec`` (Gymnasium's ``NEXT_STEP`` autoreset by default).
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
from bmaml_robot.envs.seed_args import seed_list, uint64_array
from bmaml_robot_deploy.checks import check_int

REWARD_TERMS: tuple[str, ...] = tuple(_core.REWARD_TERMS)

_MAX_COUNT = 2**30  # the core's bound on num_envs and max_episode_steps
#: The most threads one env may use (the core's bound): results never depend on the thread count,
#: and more threads than cores only add switching; at most ``num_envs`` of them are started.
MAX_THREADS: int = _core.MAX_THREADS


class BatchedRobotEnv(VectorEnv):
    """``num_envs`` robots of one task family, each with its own task, stepped in lockstep.

    Observations are float64 ``[num_envs, obs_dim]``; actions ``[num_envs, act_dim]`` (any float
    dtype) are clipped to the action space before they are applied. An episode ends when its task
    terminates it, or truncated after ``max_episode_steps`` steps (a step that terminates is not
    also reported as truncated, where Gymnasium's ``TimeLimit`` would report both).

    Autoreset (``autoreset_mode``, also in ``metadata["autoreset_mode"]``):

    - ``AutoresetMode.SAME_STEP`` (default; what the samplers use): episodes that end are reset in
      the same step: the returned observation starts the next episode and ``info["final_obs"]``
      (float64 ``[num_envs, obs_dim]``, rows valid where ``info["_final_obs"]``) holds the last
      observation of the episode that ended.
    - ``AutoresetMode.NEXT_STEP`` (Gymnasium's default for vector envs, what ``SyncVectorEnv``,
      ``NormalizeObservation`` and CleanRL expect): the step where an episode ends returns its last
      observation; the next step ignores that env's action and returns its new episode's first
      observation with reward 0, terminated and truncated False (its ``info`` values are 0 and
      False). No ``final_obs`` in ``info``. The action of an env in its autoreset step is ignored:
      it may be anything, NaN included (the other envs' actions must be finite). Results equal
      SAME_STEP's bit for bit (same seeds and tasks; tested against ``SyncVectorEnv`` over the
      single envs) and do not depend on ``num_threads``: the same threaded core runs both modes
      (it resets an env in the step that ends its episode; this mode returns that step's final
      observation and holds the env out of the next step, which returns its current observation,
      the new episode's first). ``step()`` needs a ``reset()`` first, and the mode keeps state in
      Python: step it from one thread at a time.

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
        autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
    ) -> None:
        self.family = family if isinstance(family, TaskFamily) else get_family(family)
        for name, value in (("num_envs", num_envs), ("max_episode_steps", max_episode_steps)):
            check_int(value, name, minimum=1, maximum=_MAX_COUNT)
        check_int(num_threads, "num_threads", minimum=1, maximum=MAX_THREADS,
                  note=f" (at most {MAX_THREADS} threads, and at most num_envs of them are started; results do not "
                       f"depend on num_threads)")
        check_int(seed, "seed", minimum=0, below=2**64)
        self.autoreset_mode = _autoreset_mode(autoreset_mode)
        self._next_step = self.autoreset_mode is AutoresetMode.NEXT_STEP
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}  # per instance
        self._core: Any = _core.VecEnvCore(self.family.robot, self.family.core_objective, asset_path(self.family.robot),
                                           int(num_envs), int(num_threads), int(max_episode_steps), int(seed),
                                           physics=list(self.family.physics))
        # NEXT_STEP state: envs whose episode ended at the last step (the core already reset them:
        # the next step holds them), and whether reset() came yet.
        self._ended = np.zeros(int(num_envs), dtype=bool)
        self._started = False
        self.num_envs = int(num_envs)
        self.num_threads = self._core.num_threads
        self.max_episode_steps = int(max_episode_steps)
        self.obs_dim: int = self._core.obs_dim
        self.act_dim: int = self._core.act_dim
        self.dt: float = self._core.dt
        self.single_observation_space: gymnasium.spaces.Box = gymnasium.spaces.Box(
            -np.inf, np.inf, (self.obs_dim,), np.float64
        )
        self.single_action_space: gymnasium.spaces.Box = gymnasium.spaces.Box(
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

    def reset(self, *, seed: int | Sequence[int] | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """Start a new episode in every env. Returns obs float64 ``[num_envs, obs_dim]``.

        ``seed``: None continues each env's reset-noise stream; an integer ``s`` reseeds env ``i``'s
        stream from ``(s, i)`` (stream ``i`` of ``s``); a list of ``num_envs`` integers (as
        ``SyncVectorEnv`` takes) gives env ``i`` stream 0 of ``seed[i]``: it starts exactly as the
        single env ``gymnasium.make("bmaml_robot/<Family>-v0")`` reset with ``seed=seed[i]``, so
        ``reset(seed=[s, s + 1, ...])`` matches ``SyncVectorEnv.reset(seed=s)``."""
        core = self._live("reset")
        if options:
            raise ValueError(f"options: this env takes no reset options, got {sorted(options)}")
        if isinstance(seed, (list, tuple)) and all(value is None for value in seed) and len(seed) == self.num_envs:
            seed = None  # SyncVectorEnv's spelling of "no seed"
        if seed is not None and not isinstance(seed, (int, np.integer)):
            seeds = seed_list(seed, self.num_envs)
            obs = core.reset_streams(seeds, np.zeros(self.num_envs, dtype=np.uint64))
        else:
            if seed is not None:
                check_int(seed, "seed", minimum=0, below=2**64)
            obs = core.reset(seed)
        self._started_episodes()
        return obs, {}

    def reset_streams(self, seeds: Any, streams: Any) -> np.ndarray:
        """Start a new episode in every env, env ``i``'s reset noise from stream ``streams[i]`` of
        ``seeds[i]``: it starts exactly as env ``streams[i]`` of an env reset with
        ``seed=seeds[i]``. seeds, streams: integers in [0, 2**64), ``[num_envs]``.
        Returns obs float64 ``[num_envs, obs_dim]``."""
        core = self._live("reset_streams")
        arrays = [uint64_array(value, name, self.num_envs) for value, name in ((seeds, "seeds"), (streams, "streams"))]
        obs = core.reset_streams(*arrays)
        self._started_episodes()
        return obs

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Advance every env one control step with ``actions`` ``[num_envs, act_dim]``."""
        # One reference for the whole call: a close() from another thread meanwhile drops
        # self._core, not this step's core, which lives until the step has packed its info.
        core = self._live("step")
        if self._next_step:
            return self._step_next(core, actions)
        obs, reward, terminated, truncated, x_velocity, terms, final_obs, instability = core.step(actions)
        info = self._info(core, x_velocity, terms, instability)
        info["final_obs"] = final_obs
        info["_final_obs"] = terminated | truncated
        return obs, reward, terminated, truncated, info

    def _step_next(self, core: Any, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """NEXT_STEP over the core's SAME_STEP stepping. The core resets an env in the step that
        ends its episode (obs: the new episode's first observation, final_obs: the last one):
        that step returns final_obs, and the next one holds the env (its action ignored, reward 0,
        not done), so that the core returns its current observation, the new episode's first."""
        if not self._started:
            raise gymnasium.error.ResetNeeded("step: call reset() before step() (autoreset_mode NEXT_STEP)")
        held = self._ended
        obs, reward, terminated, truncated, x_velocity, terms, final_obs, instability = core.step(
            actions, held if held.any() else None)  # None: nothing held, the SAME_STEP loop
        ended = terminated | truncated
        if ended.any():
            obs[ended] = final_obs[ended]
        self._ended = ended
        return obs, reward, terminated, truncated, self._info(core, x_velocity, terms, instability)

    def _info(self, core: Any, x_velocity: np.ndarray, terms: np.ndarray, instability: np.ndarray) -> dict[str, Any]:
        """The ``info`` every step returns: x_velocity, the reward terms, unstable (and why)."""
        info: dict[str, Any] = {"x_velocity": x_velocity}
        for k, name in enumerate(REWARD_TERMS):
            info[name] = terms[:, k]
        info["unstable"] = instability != 0
        if info["unstable"].any():
            info["unstable_reason"] = self._unstable_reasons(core, instability)
        return info

    def _unstable_reasons(self, core: Any, instability: np.ndarray) -> np.ndarray:
        """object ``[num_envs]``: why each env became unstable ("" where it did not)."""
        reasons = np.full(self.num_envs, "", dtype=object)
        for i in np.flatnonzero(instability != 0):
            message = core.warning(int(i))
            reasons[i] = _core.INSTABILITY_REASONS[instability[i]] + (f": {message}" if message else "")
        return reasons

    def set_state(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Set every env's state (qpos ``[num_envs, nq]``, qvel ``[num_envs, nv]``) as
        Gymnasium's ``MujocoEnv.set_state`` after ``mj_resetData``; starts new episodes.
        Returns obs float64 ``[num_envs, obs_dim]``."""
        obs = self._live("set_state").set_state(qpos, qvel)
        self._started_episodes()
        return obs

    def get_state(self) -> tuple[np.ndarray, np.ndarray]:
        """Every env's (qpos ``[num_envs, nq]``, qvel ``[num_envs, nv]``). In NEXT_STEP, an env whose
        episode ended at the last step is already at its next episode's initial state."""
        return self._live("get_state").get_state()

    def _started_episodes(self) -> None:
        """Every env starts a new episode (reset, reset_streams, set_state): nothing is held."""
        self._ended[:] = False
        self._started = True

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


def _autoreset_mode(mode: Any) -> AutoresetMode:
    """``AutoresetMode.SAME_STEP`` or ``NEXT_STEP`` (or their values, "SameStep", "NextStep")."""
    supported = (AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP)
    try:
        mode = AutoresetMode(mode)
    except ValueError:
        pass
    if mode not in supported:
        raise ValueError(f"autoreset_mode: expected AutoresetMode.SAME_STEP or AutoresetMode.NEXT_STEP "
                         f"(or {[m.value for m in supported]}), got {mode!r}")
    return mode


def make_vec(
    family: str,
    num_envs: int,
    *,
    num_threads: int = 1,
    seed: int = 0,
    max_episode_steps: int = 100,
    autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
) -> BatchedRobotEnv:
    """Make ``num_envs`` robots of the task ``family`` (see ``bmaml_robot.FAMILIES``), stepped on
    ``min(num_threads, num_envs)`` threads; ``num_threads`` is at most ``MAX_THREADS`` (256), and
    results do not depend on it. ``autoreset_mode``: SAME_STEP (default) or NEXT_STEP
    (``BatchedRobotEnv``).

    Example::

        env = bm.make_vec("HalfCheetahDir", num_envs=800, num_threads=2, seed=0, max_episode_steps=100)
        tasks = env.sample_tasks(40, rng=np.random.default_rng(0))
        env.set_tasks([t for t in tasks for _ in range(20)])
        obs, info = env.reset(seed=0)
    """
    return BatchedRobotEnv(family, num_envs, num_threads=num_threads, seed=seed, max_episode_steps=max_episode_steps,
                           autoreset_mode=autoreset_mode)


def make_gymnasium_vec(
    family: str,
    num_envs: int = 1,
    *,
    max_episode_steps: int = 100,
    autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
    task: Mapping[str, Any] | None = None,
    tasks: Sequence[Mapping[str, Any]] | None = None,
    num_threads: int = 1,
    seed: int = 0,
    render_mode: str | None = None,
) -> BatchedRobotEnv:
    """The ``vector_entry_point`` of ``bmaml_robot/<Family>-v0``:
    ``gymnasium.make_vec("bmaml_robot/HalfCheetahDir-v0", num_envs=8)`` (its default
    ``vectorization_mode``) builds one ``BatchedRobotEnv`` with Gymnasium's default autoreset,
    ``NEXT_STEP`` (pass ``autoreset_mode=AutoresetMode.SAME_STEP`` for the samplers' mode).

    ``gymnasium.make_vec`` passes ``family`` (from the spec), ``num_envs`` and
    ``max_episode_steps`` (the spec's 100, or the caller's), and any other keyword: ``task`` (one
    task for every env, as the single envs' ``task``), or ``tasks`` (one per env); without either,
    env tasks are drawn from the family with ``seed``. ``render_mode``: only None (the batched env
    does not render: render a single env, ``gymnasium.make(..., render_mode="rgb_array")``).
    """
    if render_mode is not None:
        raise ValueError(f"render_mode: the batched env does not render (expected None), got {render_mode!r}; "
                         f"render a single env: gymnasium.make(\"bmaml_robot/{family}-v0\", render_mode=\"rgb_array\")")
    if task is not None and tasks is not None:
        raise ValueError("task, tasks: expected at most one of them (task: one task for every env, "
                         "tasks: one per env), got both")
    env = BatchedRobotEnv(family, num_envs, num_threads=num_threads, seed=seed, max_episode_steps=max_episode_steps,
                          autoreset_mode=autoreset_mode)
    try:
        if task is not None:
            env.family.encode(task, "task")  # errors name `task`, not the batch's `tasks[0]`
            env.set_tasks([dict(task) for _ in range(env.num_envs)])
        elif tasks is not None:
            env.set_tasks(tasks)
    except BaseException:
        env.close()
        raise
    return env
