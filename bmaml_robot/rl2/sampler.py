"""The RL^2 sampler: one trial per task, ``episodes_per_trial`` episodes with the state carried.

A trial is ``E = episodes_per_trial`` consecutive episodes of one task on one env. The env resets
itself when an episode ends (SAME_STEP autoreset), the policy's hidden state is *not* reset (only
at the trial's start), and its input at every step is ``[obs, previous action, previous reward,
episode start]`` (``rl2/policy.py``). The trial's steps are a prefix of the time axis: an env whose
episodes ended early (a robot that fell) is done sooner, and its remaining steps are masked. So a
trial runs from the zero state through its valid steps only, and training replays it with one
call over the whole time axis (masked steps come after every valid one and change nothing before).

Randomness is per task, as in MAML's sampler (``meta.sampler.task_seeds``): task ``k``'s env is
reset from stream 0 of its reset seed and continues its own stream through its autoresets; its
action noise comes from its own generator (standard normal, or uniform for the Gumbel-max draw of
a discrete action). A trial depends only on (seed, task index, task, parameters), not on the thread
count nor on the other tasks of the batch; the policy runs with per-task parameter copies on a
padded batch (``meta.sampler``'s ``_run_shape``) for the same reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from torch import Tensor

from bmaml_robot.envs.discrete import DISCRETE_FAMILIES, BatchedDiscreteEnv
from bmaml_robot.envs.vector_env import BatchedRobotEnv
from bmaml_robot.meta.sampler import _per_task_params, _run_shape, task_seeds
from bmaml_robot.rl2.policy import RL2Policy
from bmaml_robot.torch_threads import one_torch_thread


class Trials(NamedTuple):
    """A batch of trials, time first: ``L = episodes_per_trial * horizon`` steps, ``K`` tasks.

    Steps of a trial are the prefix ``mask == 1``; values at masked steps are zeros.
    """

    inputs: Tensor
    """float32 ``[L, K, input_dim]``: what the policy saw (obs, previous action, previous reward, start flag)."""
    actions: Tensor
    """float32 ``[L, K, act_dim]`` (the policy's own actions) or ``[L, K, 1]`` action indices (discrete)."""
    rewards: Tensor
    """float32 ``[L, K]``."""
    mask: Tensor
    """float32 ``[L, K]``: 1 on the trial's steps."""
    episode: Tensor
    """int64 ``[L, K]``: which episode of the trial each step belongs to (``E`` on masked steps)."""
    log_probs: Tensor
    """float32 ``[L, K]``: log-probabilities of the actions under the sampling policy."""

    @property
    def num_tasks(self) -> int:
        return self.mask.shape[1]

    def episode_returns(self, episodes_per_trial: int) -> Tensor:
        """Undiscounted return of every episode of every trial, float32 ``[E, K]``."""
        one_hot = torch.nn.functional.one_hot(self.episode, episodes_per_trial + 1)[..., :episodes_per_trial]
        return (one_hot * (self.rewards * self.mask).unsqueeze(-1)).sum(0).transpose(0, 1)

    def select_tasks(self, indices: Tensor) -> Trials:
        """The trials of tasks ``indices`` (int64 ``[n]``), in that order."""
        return Trials(*(field.index_select(1, indices) for field in self))


class TrialSource(Protocol):
    """What samples RL^2's trials: ``TrialSampler`` here, ``meta.ray_sampler.RayTrialSampler`` on Ray."""

    env_steps: int
    obs_dim: int
    act_dim: int

    @property
    def workers_restarted(self) -> int: ...

    def set_tasks(self, tasks: Sequence[Mapping[str, Any]]) -> None: ...

    def sample(self, policy: RL2Policy, seed: int) -> Trials: ...

    def close(self) -> None: ...


def make_trial_env(family: str, num_envs: int, horizon: int, num_threads: int = 1) -> Any:
    """The batched env of ``family``, episodes of at most ``horizon`` steps: the discrete tasks of
    the PFC paper (``BatchedDiscreteEnv`` for a name in ``DISCRETE_FAMILIES``: bandits, two-step;
    anything with ``num_actions`` is sampled with a categorical policy) or MuJoCo robots
    (``BatchedRobotEnv``)."""
    if isinstance(family, str) and family in DISCRETE_FAMILIES:
        return BatchedDiscreteEnv(family, num_envs, max_episode_steps=horizon, num_threads=num_threads)
    return BatchedRobotEnv(family, num_envs, num_threads=num_threads, max_episode_steps=horizon)


#: ``on_step(t, qpos [K, nq], qvel [K, nv], info)`` of ``TrialSampler.sample``.
StepHook = Callable[[int, np.ndarray, np.ndarray, dict[str, Any]], None]


class TrialSampler:
    """``num_tasks`` trials (one per task) of ``episodes_per_trial`` episodes per ``sample`` call.

    Attributes:
        env: the batched env, one env per task.
        obs_dim, act_dim: observation size; action size (continuous) or number of actions.
        discrete: whether actions are discrete.
        horizon: the longest episode (``max_episode_steps`` of the env).
        action_scale: the policy's action half-width (continuous; 1 when discrete).
        env_steps: env steps taken so far (valid ones).
    """

    def __init__(
        self, family: str, num_tasks: int, episodes_per_trial: int, horizon: int, *, num_threads: int = 1,
        action_scale: float | None = None,
    ) -> None:
        self.num_tasks = num_tasks
        self.episodes_per_trial = episodes_per_trial
        self.env = make_trial_env(family, num_tasks, horizon, num_threads)
        self.discrete = hasattr(self.env, "num_actions")
        self.horizon: int = self.env.max_episode_steps
        self.obs_dim: int = self.env.obs_dim
        if self.discrete:
            self.act_dim: int = self.env.num_actions
            self.action_scale = 1.0
            self.action_map = None
        else:
            self.act_dim = self.env.act_dim
            self.action_map = self.env.action_map(action_scale)
            self.action_scale = float(self.action_map.scale)
        self.env_steps = 0
        self.workers_restarted = 0

    @property
    def trial_steps(self) -> int:
        """``L``: the longest trial."""
        return self.episodes_per_trial * self.horizon

    def set_tasks(self, tasks: Sequence[Mapping[str, Any]]) -> None:
        """One task dict per trial (``num_tasks`` of them)."""
        if len(tasks) != self.num_tasks:
            raise ValueError(f"tasks: expected {self.num_tasks} tasks, got {len(tasks)}")
        self.env.set_tasks(list(tasks))

    def close(self) -> None:
        self.env.close()

    @torch.no_grad()
    def sample(self, policy: RL2Policy, seed: int, *, first_task: int = 0, mean_actions: bool = False,
               on_step: StepHook | None = None) -> Trials:
        """One trial per task with the policy's own parameters; ``seed`` fixes every random draw,
        stream by task (this sampler's task ``k`` is task ``first_task + k`` of the batch).

        ``mean_actions``: act with the Gaussian means (the same draws are made and left unused);
        ``on_step(t, qpos, qvel, info)``: after step t, with every env's MuJoCo state before it
        (robot envs only: what ``render.record_trial`` draws)."""
        K, E, L = self.num_tasks, self.episodes_per_trial, self.trial_steps
        in_dim, act_dim = policy.input_dim, self.act_dim
        if policy.obs_dim != self.obs_dim or policy.act_dim != act_dim or policy.discrete != self.discrete:
            raise ValueError(
                f"policy: expected an RL2Policy for obs_dim={self.obs_dim}, act_dim={act_dim}, "
                f"discrete={self.discrete}, got obs_dim={policy.obs_dim}, act_dim={policy.act_dim}, "
                f"discrete={policy.discrete}")
        reset_seeds, noise_seeds = task_seeds(seed, first_task, K)
        K_run, B_run = _run_shape(K, 1)
        run_params = _per_task_params(policy.core, None, K, K_run)
        noise = torch.zeros(L, K_run, B_run, act_dim)
        for k, noise_seed in enumerate(noise_seeds):
            generator = torch.Generator().manual_seed(int(noise_seed))
            draw = torch.rand if self.discrete else torch.randn
            noise[:, k, :1] = draw((L, 1, act_dim), generator=generator)
        if self.discrete:  # Gumbel(noise) needs noise in (0, 1); the padding rows too
            noise.clamp_(min=torch.finfo(torch.float32).tiny)
            noise[:, K:] = 0.5
            noise[:, :, 1:] = 0.5

        inputs = torch.zeros(L, K, in_dim)
        actions = torch.zeros(L, K, 1 if self.discrete else act_dim)
        rewards = torch.zeros(L, K)
        mask = torch.zeros(L, K)
        episode = torch.full((L, K), E, dtype=torch.int64)
        log_probs = torch.zeros(L, K)
        with one_torch_thread():
            obs_np = self.env.reset_streams(np.asarray(reset_seeds, np.uint64), np.zeros(K, np.uint64))
            x_run = torch.zeros(K_run, B_run, in_dim)
            x = x_run[:K, 0]  # [K, in_dim], a view
            prev_action = torch.zeros(K, act_dim)
            prev_reward = torch.zeros(K)
            start = torch.ones(K)
            done_episodes = np.zeros(K, dtype=np.int64)
            alive = np.ones(K, dtype=bool)
            state = policy.initial_state((K_run, B_run))
            for t in range(L):
                x[:, : self.obs_dim] = torch.from_numpy(obs_np)
                x[:, self.obs_dim : self.obs_dim + act_dim] = prev_action
                x[:, -2] = prev_reward
                x[:, -1] = start
                out, log_std, state = policy.step(x_run, state, run_params)
                action_run = out if mean_actions else policy.act(out, log_std, noise[t])
                if not bool(torch.isfinite(action_run).all()):
                    raise FloatingPointError(f"sampling: the policy's actions are not finite at step {t}")
                action = action_run[:K, 0]
                log_prob = policy.log_prob(out, log_std, action_run)[:K, 0]
                alive_t = torch.from_numpy(alive)
                inputs[t] = x * alive_t.unsqueeze(-1)
                actions[t] = action * alive_t.unsqueeze(-1)
                log_probs[t] = log_prob * alive_t
                mask[t] = alive_t.float()
                episode[t] = torch.where(alive_t, torch.from_numpy(done_episodes), E)

                before = self.env.get_state() if on_step is not None else None
                obs_np, reward, term, trunc, info = self.env.step(self._to_env(action))
                if on_step is not None and before is not None:
                    on_step(t, before[0], before[1], info)
                reward_t = torch.from_numpy(np.where(alive, reward, 0.0)).float()
                rewards[t] = reward_t
                self.env_steps += int(alive.sum())
                ended = term | trunc
                done_episodes += ended & alive
                alive &= done_episodes < E
                if not alive.any():
                    break
                prev_action = policy.previous_action_input(action, self.action_scale)
                prev_reward = reward_t
                start = torch.from_numpy(ended).float()
        return Trials(inputs, actions, rewards, mask, episode, log_probs)

    def _to_env(self, action: Tensor) -> np.ndarray:
        """The policy's actions ``[K, act_dim]`` (indices ``[K, 1]``) -> the env's."""
        if self.action_map is None:  # discrete
            return action[:, 0].to(torch.int64).numpy()
        return self.action_map.to_robot(action.numpy())
