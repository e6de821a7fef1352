"""The discrete-action tasks of Wang et al. (2018), "Prefrontal cortex as a meta-reinforcement
learning system": two-armed bandits and the two-step task, as batched numpy envs.

Families (``DISCRETE_FAMILIES``; a task is a small dict, as for the robots):

- ``BanditIndependent``: two arms, ``{"probs": [p0, p1]}`` with ``p_i ~ U[0, 1]`` independent;
  ``BanditCorrelated``: ``p0 ~ U[0, 1]``, ``p1 = 1 - p0``. One step is one pull: reward 1 with
  probability ``p_action``, else 0. The observation is the constant ``[1.0]``: the agent learns from
  its previous action and reward (the RL^2 policy's inputs). An episode is ``max_episode_steps``
  pulls, then truncated (never terminated).
- ``TwoStep`` (Wang et al. 2018 Fig. 4, after Daw et al. 2011; ``TwoStepDaw``: Daw's common
  probability 0.7 instead of 0.8): an episode is one trial of two steps. Step 1 in ``S0``: action 0
  leads to ``S1`` with probability ``common_prob`` (else ``S2``), action 1 to ``S2`` with
  ``common_prob`` (else ``S1``); reward 0. Step 2 in ``S1`` or ``S2`` (any action): reward 1 with
  probability 0.9 in the second-stage state that is currently "high", 0.1 in the other; the episode
  terminates. Observations are one-hot ``[S0, S1, S2]``; the last observation of an episode (its
  ``final_obs``) is all zeros: the terminal state. Which state is high switches with probability
  ``switch_prob`` at the end of every episode, and persists across the env's autoresets and
  ``reset()`` (the task's state within a trial); ``reset_streams``, a seeded ``reset`` and
  ``set_tasks`` start it again at the task's ``first_high`` (0: ``S1`` high, 1: ``S2`` high).

Randomness (what makes agents comparable on "the same draws"): env ``i`` holds a 64-bit key, the
first word of ``numpy.random.SeedSequence([seed, stream]).generate_state(1, uint64)`` for the
(seed, stream) of its last ``reset_streams`` (or seeded ``reset``), and a counter ``n_i`` of its
steps since then (across autoresets). Step ``n`` draws ``NUM_DRAWS = 3`` uniforms in ``[0, 1)``::

    u_d = top 53 bits of SplitMix64(key_i) output number NUM_DRAWS * n + d + 1,  / 2**53
        = mix(key_i + (NUM_DRAWS * n + d + 1) * 0x9E3779B97F4A7C15) >> 11,  / 2**53

(``mix``: SplitMix64's finaliser, in numpy uint64 arithmetic: a counter-based generator, so the
batch draws in one vectorised call). Draw ``d = 0`` (``REWARD_DRAW``) decides the reward
(``reward = u_0 < p``, ``p`` the probability of the action taken or the state reached), ``d = 1``
(``TRANSITION_DRAW``) the transition (common if ``u_1 < common_prob``), ``d = 2``
(``SWITCH_DRAW``) the switch (``u_2 < switch_prob``). Every step draws all three whatever the family
and the action, so env ``i``'s draws depend only on its (seed, stream) and its step count: not on
the other envs, the batch size nor the actions taken. Two agents reset with the same (seed, stream)
meet the same draws (a bandit agent that pulls the arm another pulled at step ``n`` gets the same
reward).

Autoreset is Gymnasium's ``SAME_STEP``: the step that ends an episode returns the next episode's
first observation, and ``info["final_obs"]`` the last one of the episode that ended. numpy only: no
compiled core, no torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from bmaml_robot.envs.families import FAMILIES, TaskFamily, get_family, sample_checked
from bmaml_robot.envs.seed_args import seed_list, uint64_array
from bmaml_robot_deploy.checks import check_choice, check_float, check_int

Task = dict[str, Any]

#: Uniforms drawn per env and step, and what each decides (module docstring).
NUM_DRAWS = 3
REWARD_DRAW, TRANSITION_DRAW, SWITCH_DRAW = 0, 1, 2

#: TwoStep's reward probabilities in the high and the low second-stage state (Wang et al. 2018).
HIGH_REWARD_PROB = 0.9
LOW_REWARD_PROB = 0.1

#: The kinds of discrete family: what ``BatchedDiscreteEnv.step`` simulates.
KINDS = ("bandit", "two_step")

_MAX_COUNT = 2**30  # bounds on num_envs and max_episode_steps, as the robots'
_MAX_THREADS = 256  # as BatchedRobotEnv's bound; unused here (numpy steps every env in one call)

# SplitMix64 (Steele, Lea & Flood 2014): the increment and the finaliser's multipliers.
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)

# TwoStep states: S0 (first stage), S1, S2 (second stage), and the terminal state after step 2.
_S0, _S1, _S2, _TERMINAL = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class DiscreteTaskFamily:
    """One family of discrete-action tasks (see the module docstring)."""

    name: str
    """Registered name, e.g. ``"BanditCorrelated"``."""
    kind: str
    """``"bandit"`` or ``"two_step"``: what a step simulates."""
    num_actions: int
    """The number of actions (indices ``0 .. num_actions - 1``)."""
    obs_dim: int
    """The observation size: 1 (bandits: a constant) or 3 (TwoStep: one-hot state)."""
    task_keys: tuple[str, ...]
    """The keys of a task dict, exactly."""
    reward: str
    """The reward in words, for documentation."""
    task_distribution: str
    """How tasks are drawn, for documentation."""
    default_episode_steps: int
    """``max_episode_steps`` unless one is given."""
    _sample: Callable[[int, np.random.Generator], list[Task]]
    _support: Callable[[np.ndarray], bool]
    """Whether an encoded task (``encode``'s output) lies in the family's distribution."""

    @property
    def min_episode_steps(self) -> int:
        """The smallest ``max_episode_steps``: 2 for TwoStep (an episode is two steps), else 1."""
        return 2 if self.kind == "two_step" else 1

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator) -> list[Task]:
        """Draw ``num_tasks`` tasks from the family's distribution with ``rng``."""
        return sample_checked(self._sample, num_tasks, rng)

    def in_distribution(self, task: Mapping[str, Any]) -> bool:
        """Whether ``task`` (checked as ``encode`` does) is one the family's distribution can draw;
        others are allowed (to test generalisation)."""
        return bool(self._support(self.encode(task)))

    def encode(self, task: Mapping[str, Any], where: str = "task") -> np.ndarray:
        """Check a task dict and return its numbers, float64: bandits ``[num_actions]`` (the arms'
        reward probabilities), TwoStep ``[3]`` (``common_prob``, ``first_high``, ``switch_prob``).

        Raises:
            TypeError: not a dict, or a value that is not a number (``where['key']`` named).
            ValueError: missing or unknown keys; a value that is not finite or out of its range.
        """
        if not isinstance(task, Mapping):
            raise TypeError(f"{where}: expected a dict with keys {list(self.task_keys)}, got {type(task).__name__}")
        keys = set(task)
        if keys != set(self.task_keys):
            missing = sorted(set(self.task_keys) - keys)
            unknown = sorted(keys - set(self.task_keys), key=repr)
            raise ValueError(f"{where}: {self.name} tasks have exactly the keys {list(self.task_keys)}; "
                             f"missing {missing}, unknown {unknown}")
        if self.kind == "bandit":
            return _probabilities(task["probs"], f"{where}['probs']", self.num_actions)
        common = check_float(task["common_prob"], f"{where}['common_prob']", low=0.5, high=1.0, low_open=True,
                             high_open=True, note=" (the common transition's probability)", type_error=TypeError)
        first_high = check_int(task["first_high"], f"{where}['first_high']", minimum=0, maximum=1,
                               note=" (0: S1 starts high, 1: S2)", type_error=TypeError)
        switch = check_float(task["switch_prob"], f"{where}['switch_prob']", low=0.0, high=1.0,
                             note=" (the probability of a switch at each episode's end)", type_error=TypeError)
        return np.array([common, first_high, switch], dtype=np.float64)


def _probabilities(value: Any, name: str, count: int) -> np.ndarray:
    """``value`` as float64 ``[count]`` probabilities in [0, 1], or an error naming ``name``."""
    message = f"{name}: expected {count} probabilities in [0, 1], got {value!r}"
    if isinstance(value, (str, bytes, Mapping)):
        raise TypeError(message)
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):  # ragged
        raise TypeError(message) from None
    if array.dtype.kind not in "iuf":  # no bools, strings, objects
        raise TypeError(message)
    array = array.astype(np.float64)
    if array.shape != (count,) or not np.all((array >= 0.0) & (array <= 1.0)):  # NaN fails the bounds
        raise ValueError(message)
    return array


def _independent_arms(n: int, rng: np.random.Generator) -> list[Task]:
    return [{"probs": [float(p0), float(p1)]} for p0, p1 in rng.uniform(0.0, 1.0, size=(n, 2))]


def _correlated_arms(n: int, rng: np.random.Generator) -> list[Task]:
    return [{"probs": [float(p0), 1.0 - float(p0)]} for p0 in rng.uniform(0.0, 1.0, size=n)]


def _two_step_tasks(common_prob: float) -> Callable[[int, np.random.Generator], list[Task]]:
    return lambda n, rng: [{"common_prob": common_prob, "first_high": int(h), "switch_prob": 0.025}
                           for h in rng.integers(0, 2, size=n)]


def _two_step_support(common_prob: float) -> Callable[[np.ndarray], bool]:
    return lambda params: bool(params[0] == common_prob and params[2] == 0.025)


_BANDIT_REWARD = "1 with probability probs[action], else 0"
_TWO_STEP_REWARD = (f"step 1: 0; step 2: 1 with probability {HIGH_REWARD_PROB} in the high second-stage state, "
                    f"{LOW_REWARD_PROB} in the other")
_TWO_STEP_KEYS = ("common_prob", "first_high", "switch_prob")

DISCRETE_FAMILIES: dict[str, DiscreteTaskFamily] = {
    f.name: f
    for f in [
        DiscreteTaskFamily("BanditIndependent", "bandit", 2, 1, ("probs",), _BANDIT_REWARD,
                           "probs[i] ~ U[0, 1] independent", 100, _independent_arms, lambda params: True),
        DiscreteTaskFamily("BanditCorrelated", "bandit", 2, 1, ("probs",), _BANDIT_REWARD,
                           "probs[0] ~ U[0, 1], probs[1] = 1 - probs[0]", 100, _correlated_arms,
                           lambda params: bool(abs(params[0] + params[1] - 1.0) <= 1e-12)),
        DiscreteTaskFamily("TwoStep", "two_step", 2, 3, _TWO_STEP_KEYS, _TWO_STEP_REWARD,
                           "common_prob 0.8, first_high uniform in {0, 1}, switch_prob 0.025", 2,
                           _two_step_tasks(0.8), _two_step_support(0.8)),
        DiscreteTaskFamily("TwoStepDaw", "two_step", 2, 3, _TWO_STEP_KEYS, _TWO_STEP_REWARD,
                           "common_prob 0.7 (Daw et al. 2011), first_high uniform in {0, 1}, switch_prob 0.025", 2,
                           _two_step_tasks(0.7), _two_step_support(0.7)),
    ]
}


def get_task_family(name: str) -> TaskFamily | DiscreteTaskFamily:
    """Any family called ``name``: a robot family (``FAMILIES``) or a discrete task
    (``DISCRETE_FAMILIES``); a ValueError lists the valid names otherwise."""
    if isinstance(name, str) and name in DISCRETE_FAMILIES:
        return DISCRETE_FAMILIES[name]
    if not isinstance(name, str) or name not in FAMILIES:
        check_choice(name, "family", sorted(FAMILIES) + sorted(DISCRETE_FAMILIES))
    return get_family(name)


def get_discrete_family(name: str) -> DiscreteTaskFamily:
    """The discrete family called ``name``; a ValueError lists the valid names otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"family: expected a discrete family name, one of {sorted(DISCRETE_FAMILIES)}, "
                        f"got {type(name).__name__} {name!r}")
    check_choice(name, "family", sorted(DISCRETE_FAMILIES))
    return DISCRETE_FAMILIES[name]


def stream_keys(seeds: np.ndarray, streams: np.ndarray) -> np.ndarray:
    """The key of each (seed, stream): uint64 ``[n]`` for uint64 ``seeds``, ``streams`` ``[n]``."""
    return np.array([np.random.SeedSequence([int(seed), int(stream)]).generate_state(1, np.uint64)[0]
                     for seed, stream in zip(seeds, streams, strict=True)], dtype=np.uint64).reshape(len(seeds))


def uniforms(keys: np.ndarray, counters: np.ndarray) -> np.ndarray:
    """The draws of step ``counters[i]`` of each env (module docstring): float64 ``[n, NUM_DRAWS]`` in
    [0, 1), for uint64 ``keys`` and ``counters`` ``[n]``. Array arithmetic in uint64 wraps modulo
    2**64 (as SplitMix64's), silently."""
    index = counters[:, None] * np.uint64(NUM_DRAWS) + np.arange(1, NUM_DRAWS + 1, dtype=np.uint64)
    # (numpy's stubs type uint64 * uint64 arrays as float64 ones; the values are uint64)
    z = cast("np.ndarray[Any, np.dtype[np.uint64]]", keys[:, None] + index * _GAMMA)
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


class BatchedDiscreteEnv(VectorEnv):
    """``num_envs`` discrete-action tasks of one family (``DISCRETE_FAMILIES``), each with its own
    task, stepped in lockstep (numpy, one vectorised call per step).

    Observations are float64 ``[num_envs, obs_dim]``; actions integer indices ``[num_envs]`` in
    ``[0, num_actions)`` (any integer dtype, or floats that are whole numbers). ``set_tasks`` must
    come before the first ``reset`` (a new task starts with a reset). Autoreset is ``SAME_STEP``:
    the step that ends an episode returns the next episode's first observation and
    ``info["final_obs"]`` (float64 ``[num_envs, obs_dim]``, NaN rows where no episode ended;
    ``info["_final_obs"]`` bool ``[num_envs]`` marks the rows) holds the last one of the episode that
    ended (TwoStep: zeros, the terminal state).

    ``info`` always has ``expected_reward`` (float64 ``[num_envs]``: the reward probability of the
    step just taken: ``probs[action]`` for bandits; 0 at TwoStep's first step, 0.9 or 0.1 at its
    second); TwoStep adds ``stage`` (int64: 1 or 2, the stage of the step just taken), ``common``
    (bool: the step was a first-stage step whose transition was the common one) and ``high``
    (int64: the second-stage state that was high during the step, 0 for S1, 1 for S2; a switch
    drawn at the end of the episode shows from the next episode on).

    Randomness (module docstring): env ``i``'s draws depend only on the (seed, stream) of its last
    seeded reset and its step count since, never on the other envs or the actions.
    ``num_threads`` is accepted for the robots' API (an integer in [1, 256]) and unused.

    Closing: ``close()`` frees nothing that matters (numpy arrays), and calling it again does
    nothing; after it ``step``, ``reset``, ``reset_streams``, ``set_tasks`` and ``sample_tasks``
    raise ``RuntimeError("env is closed: step() after close()")``, naming the method.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self,
        family: str | DiscreteTaskFamily,
        num_envs: int,
        *,
        max_episode_steps: int | None = None,
        num_threads: int = 1,
    ) -> None:
        self.family = family if isinstance(family, DiscreteTaskFamily) else get_discrete_family(family)
        check_int(num_envs, "num_envs", minimum=1, maximum=_MAX_COUNT)
        minimum = self.family.min_episode_steps
        check_int(max_episode_steps, "max_episode_steps", minimum=minimum, maximum=_MAX_COUNT, allow_none=True,
                  note=" (a TwoStep episode is two steps)" if minimum == 2 else "")
        check_int(num_threads, "num_threads", minimum=1, maximum=_MAX_THREADS,
                  note=" (unused: numpy steps every env in one call)")
        self.num_envs = int(num_envs)
        self.num_threads = int(num_threads)
        self.max_episode_steps = int(self.family.default_episode_steps if max_episode_steps is None
                                     else max_episode_steps)
        self.num_actions = self.family.num_actions
        self.obs_dim = self.family.obs_dim
        self.single_observation_space = gymnasium.spaces.Box(0.0, 1.0, (self.obs_dim,), np.float64)
        self.single_action_space = gymnasium.spaces.Discrete(self.num_actions)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        # Observation of each state (rows): bandits' constant; TwoStep's one-hot S0, S1, S2, terminal.
        self._obs_of_state = (np.ones((1, 1)) if self.family.kind == "bandit"
                              else np.vstack([np.eye(3), np.zeros((1, 3))]))
        self.tasks: list[Task] = []
        self._params = np.zeros((0, 0))  # encoded tasks [num_envs, *]
        self._first_high = np.zeros(self.num_envs, dtype=np.int64)
        self._high = np.zeros(self.num_envs, dtype=np.int64)  # TwoStep: which second-stage state is high now
        self._state = np.zeros(self.num_envs, dtype=np.int64)  # TwoStep: S0, S1 or S2; bandits: 0
        self._episode_steps = np.zeros(self.num_envs, dtype=np.int64)
        # Until a seeded reset: env i on stream i of seed 0 (as reset(seed=0)).
        self._keys = stream_keys(np.zeros(self.num_envs, np.uint64), np.arange(self.num_envs, dtype=np.uint64))
        self._counters = np.zeros(self.num_envs, dtype=np.uint64)
        self._started = False

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator) -> list[Task]:
        """Draw tasks from this env's family, e.g. ``[{"probs": [0.3, 0.7]}, ...]``."""
        self._live("sample_tasks")
        return self.family.sample_tasks(num_tasks, rng)

    def set_tasks(self, tasks: Sequence[Mapping[str, Any]]) -> None:
        """One task dict per env (``len(tasks) == num_envs``). They start with the next ``reset`` or
        ``reset_streams`` (required before the next step); TwoStep's high state starts again at
        each task's ``first_high``."""
        self._live("set_tasks")
        if isinstance(tasks, Mapping) or not isinstance(tasks, Sequence):
            raise TypeError(f"tasks: expected a list of {self.num_envs} task dicts, got {type(tasks).__name__}")
        if len(tasks) != self.num_envs:
            raise ValueError(f"tasks: expected one task per env ({self.num_envs}), got {len(tasks)}")
        params = np.stack([self.family.encode(task, f"tasks[{i}]") for i, task in enumerate(tasks)])
        self._params = params
        self.tasks = [dict(task) for task in tasks]
        if self.family.kind == "two_step":
            self._first_high = params[:, 1].astype(np.int64)
        self._high = self._first_high.copy()
        self._started = False

    def reset(self, *, seed: int | Sequence[int] | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """Start a new episode in every env. Returns obs float64 ``[num_envs, obs_dim]`` and ``{}``.

        ``seed``: None continues each env's stream (and TwoStep's high state); an integer ``s``
        puts env ``i`` on stream ``i`` of ``s``; a list of ``num_envs`` integers (as
        ``SyncVectorEnv`` takes) puts env ``i`` on stream 0 of ``seed[i]`` (as the single env
        ``gymnasium.make("bmaml_robot/<Family>-v0")`` reset with ``seed=seed[i]``). A seeded reset
        starts TwoStep's high state again at the tasks' ``first_high``."""
        self._live("reset")
        if options:
            raise ValueError(f"options: this env takes no reset options, got {sorted(options)}")
        if isinstance(seed, (list, tuple)) and len(seed) == self.num_envs and all(value is None for value in seed):
            seed = None  # SyncVectorEnv's spelling of "no seed"
        self._check_tasks("reset")
        if seed is None:
            return self._start_episodes(), {}
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_)):
            check_int(seed, "seed", minimum=0, below=2**64)
            seeds = np.full(self.num_envs, int(seed), dtype=np.uint64)
            streams = np.arange(self.num_envs, dtype=np.uint64)
        else:
            seeds, streams = seed_list(seed, self.num_envs), np.zeros(self.num_envs, dtype=np.uint64)
        return self._restart_streams(seeds, streams), {}

    def reset_streams(self, seeds: Any, streams: Any) -> np.ndarray:
        """Start a new episode in every env, env ``i`` on stream ``streams[i]`` of ``seeds[i]`` (its
        draws from step 0 of that stream: as env ``streams[i]`` of a batch reset with
        ``seed=seeds[i]``); TwoStep's high state starts again at the tasks' ``first_high``.
        seeds, streams: integers in [0, 2**64), ``[num_envs]``. Returns obs float64
        ``[num_envs, obs_dim]``."""
        self._live("reset_streams")
        arrays = [uint64_array(value, name, self.num_envs) for value, name in ((seeds, "seeds"), (streams, "streams"))]
        self._check_tasks("reset_streams")
        return self._restart_streams(*arrays)

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Advance every env one step with ``actions``: integer indices ``[num_envs]``.

        Returns:
            ``(obs, reward, terminated, truncated, info)``: obs float64 ``[num_envs, obs_dim]`` (the
            next episode's first where one ended), reward float64 ``[num_envs]`` (0 or 1),
            terminated and truncated bool ``[num_envs]``, info (class docstring).
        """
        self._live("step")
        if not self._started:
            raise gymnasium.error.ResetNeeded("step: call reset() or reset_streams() before step() "
                                              "(after set_tasks(), a reset starts the new tasks)")
        action = action_indices(actions, (self.num_envs,), self.num_actions, "actions")
        u = uniforms(self._keys, self._counters)
        self._counters += np.uint64(1)
        info: dict[str, Any] = {}
        if self.family.kind == "bandit":
            prob = self._params[np.arange(self.num_envs), action]
            terminated = np.zeros(self.num_envs, dtype=bool)
            next_state = self._state
        else:
            first_stage = self._state == _S0
            common = first_stage & (u[:, TRANSITION_DRAW] < self._params[:, 0])
            # Action 0's common transition leads to S1, action 1's rare one too.
            to_s1 = (action == 0) == common
            in_high = self._state - _S1 == self._high
            prob = np.where(first_stage, 0.0, np.where(in_high, HIGH_REWARD_PROB, LOW_REWARD_PROB))
            terminated = ~first_stage
            next_state = np.where(first_stage, np.where(to_s1, _S1, _S2), _TERMINAL)
            info["stage"] = np.where(first_stage, 1, 2).astype(np.int64)
            info["common"] = common
            info["high"] = self._high.copy()
            switch = terminated & (u[:, SWITCH_DRAW] < self._params[:, 2])
            self._high = np.where(switch, 1 - self._high, self._high)
        reward = (u[:, REWARD_DRAW] < prob).astype(np.float64)  # p = 0: never; p = 1: always (u < 1)
        info["expected_reward"] = np.asarray(prob, dtype=np.float64)
        self._episode_steps += 1
        truncated = ~terminated & (self._episode_steps >= self.max_episode_steps)
        ended = terminated | truncated
        final_obs = np.full((self.num_envs, self.obs_dim), np.nan)
        final_obs[ended] = self._obs_of_state[next_state[ended]]
        self._state = np.where(ended, _S0, next_state)
        self._episode_steps[ended] = 0
        info["final_obs"] = final_obs
        info["_final_obs"] = ended
        return self._obs_of_state[self._state], reward, terminated, truncated, info

    def _restart_streams(self, seeds: np.ndarray, streams: np.ndarray) -> np.ndarray:
        """Env ``i`` on stream ``streams[i]`` of ``seeds[i]`` from its first draw; new episodes."""
        self._keys = stream_keys(seeds, streams)
        self._counters = np.zeros(self.num_envs, dtype=np.uint64)
        self._high = self._first_high.copy()
        return self._start_episodes()

    def _start_episodes(self) -> np.ndarray:
        self._state = np.zeros(self.num_envs, dtype=np.int64)
        self._episode_steps = np.zeros(self.num_envs, dtype=np.int64)
        self._started = True
        return self._obs_of_state[self._state]

    def _check_tasks(self, method: str) -> None:
        if not self.tasks:
            raise RuntimeError(f"{method}: no tasks yet: call set_tasks(tasks) (one per env, e.g. from "
                               f"sample_tasks({self.num_envs}, rng)) before {method}()")

    def close_extras(self, **kwargs: Any) -> None:
        self._started = False

    def _live(self, method: str) -> None:
        """The documented error for a call after ``close()``."""
        if self.closed:
            raise RuntimeError(f"env is closed: {method}() after close()")


def action_indices(actions: Any, shape: tuple[int, ...], num_actions: int, name: str) -> np.ndarray:
    """``actions`` as int64 indices of ``shape``, each in ``[0, num_actions)``: any integer dtype, or
    floats that are whole numbers; bools, NaN, fractions, other shapes and values out of range are
    errors naming ``name``.

    Raises:
        TypeError: not numbers (bools, strings, objects, complex).
        ValueError: the wrong shape; a float that is not a whole number; a value out of range.
    """
    expected = f"integer action indices in [0, {num_actions - 1}]"
    if isinstance(actions, (str, bytes)):
        raise TypeError(f"{name}: expected {expected}, got {actions!r}")
    try:
        array = np.asarray(actions)
    except (TypeError, ValueError):  # ragged
        raise TypeError(f"{name}: expected {expected} of shape {list(shape)}, got {actions!r}") from None
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{name}: expected {expected}, got dtype {array.dtype}")
    if array.shape != shape:
        raise ValueError(f"{name}: expected {expected} of shape {list(shape)}, got shape {list(array.shape)}")
    if array.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(array) | (array != np.floor(array))
        if bad.any():
            where = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name}: expected {expected} (floats must be whole numbers), got "
                             f"{array.flat[where].item()!r} at index {where}")
    bad = (array < 0) | (array >= num_actions)
    if bad.any():
        where = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}: expected {expected}, got {array.flat[where].item()!r} at index {where}")
    return array.astype(np.int64)


class DiscreteTaskEnv(gymnasium.Env):
    """``gymnasium.make("bmaml_robot/BanditCorrelated-v0", task={"probs": [0.2, 0.8]})``: one task
    as a plain ``gymnasium.Env`` (a one-env ``BatchedDiscreteEnv``), action space ``Discrete``.

    Without ``task``, one is drawn from the family at each ``reset``, seeded by its ``seed``.
    ``max_episode_steps``: the env's own limit (the family's default unless given; no
    ``TimeLimit`` wrapper). ``reset(seed=s)`` puts the env on stream 0 of ``s`` (as env ``i`` of a
    batch reset with a seed list holding ``s`` at ``i``); ``reset()`` continues the stream (and
    TwoStep's high state; a first ``reset()`` draws its seed from ``np_random``). The step that
    ends an episode returns its last observation; ``reset()`` then starts the next one.
    ``close()``: afterwards ``reset`` and ``step`` raise ``RuntimeError``.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        family: str,
        task: Mapping[str, Any] | None = None,
        max_episode_steps: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None:
            raise ValueError(f"render_mode: the discrete tasks do not render (expected None), got {render_mode!r}")
        found = get_discrete_family(family)
        if task is not None:  # errors name `task`, not the batch's `tasks[0]`
            found.encode(task, "task")
        self._vec = BatchedDiscreteEnv(found, 1, max_episode_steps=max_episode_steps)
        self.family = found
        self.max_episode_steps = self._vec.max_episode_steps
        self.observation_space = self._vec.single_observation_space
        self.action_space = self._vec.single_action_space
        self.render_mode = None
        self._fixed_task = None if task is None else dict(task)
        if self._fixed_task is not None:
            self._vec.set_tasks([self._fixed_task])
        self.task: Task | None = self._fixed_task
        self._seeded = False

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        self._vec._live("reset")  # before the task is drawn: the error names this call
        if options:
            raise ValueError(f"options: this env takes no reset options, got {sorted(options)}")
        if seed is not None:
            check_int(seed, "seed", minimum=0, below=2**64)
        super().reset(seed=seed)
        if self._fixed_task is None:
            self.task = self.family.sample_tasks(1, self.np_random)[0]
            self._vec.set_tasks([self.task])
        if seed is None and not self._seeded:  # a first reset without a seed: a random one, as Gymnasium's envs
            seed = int(self.np_random.integers(2**63))
        obs = self._vec.reset(seed=None if seed is None else [seed])[0][0]
        self._seeded = True
        return obs, {"task": dict(self.task or {})}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        index = action_indices(action, (), self.family.num_actions, "action")
        obs, reward, terminated, truncated, info = self._vec.step(index.reshape(1))
        done = bool(info["_final_obs"][0])
        one = {k: v[0].item() for k, v in info.items() if not k.startswith("_") and k != "final_obs"}
        observation = info["final_obs"][0] if done else obs[0]
        return observation, float(reward[0]), bool(terminated[0]), bool(truncated[0]), one

    def close(self) -> None:
        self._vec.close()


def make_gymnasium_discrete_vec(
    family: str,
    num_envs: int = 1,
    *,
    max_episode_steps: int | None = None,
    task: Mapping[str, Any] | None = None,
    tasks: Sequence[Mapping[str, Any]] | None = None,
    seed: int = 0,
    num_threads: int = 1,
    render_mode: str | None = None,
) -> BatchedDiscreteEnv:
    """The ``vector_entry_point`` of ``bmaml_robot/<DiscreteFamily>-v0``:
    ``gymnasium.make_vec("bmaml_robot/BanditCorrelated-v0", num_envs=8)`` builds one
    ``BatchedDiscreteEnv`` (SAME_STEP autoreset), with ``task`` (one for every env), ``tasks`` (one
    per env) or, without either, tasks drawn from the family with ``seed``; ready for ``reset``.
    """
    if render_mode is not None:
        raise ValueError(f"render_mode: the discrete tasks do not render (expected None), got {render_mode!r}")
    if task is not None and tasks is not None:
        raise ValueError("task, tasks: expected at most one of them (task: one task for every env, "
                         "tasks: one per env), got both")
    env = BatchedDiscreteEnv(family, num_envs, max_episode_steps=max_episode_steps, num_threads=num_threads)
    try:
        if task is not None:
            env.family.encode(task, "task")
            env.set_tasks([dict(task) for _ in range(env.num_envs)])
        elif tasks is not None:
            env.set_tasks(tasks)
        else:
            check_int(seed, "seed", minimum=0, below=2**64)
            env.set_tasks(env.family.sample_tasks(env.num_envs, np.random.default_rng(seed)))
    except BaseException:
        env.close()
        raise
    return env
