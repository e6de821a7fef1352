"""The sampler: drives the C++ batched env with ``num_tasks x episodes_per_task`` robots in lockstep.

Every env runs exactly one episode of at most ``horizon`` steps, starting at ``t = 0``. The
policy acts for all tasks in one batched forward (each task with its own parameters) and
carries recurrent hidden states from step to step. Episodes that end early are masked
(``Episodes.mask``), never padded into the losses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from bmaml_robot.envs.vector_env import BatchedRobotEnv
from bmaml_robot.meta.episodes import Episodes


class MetaSampler:
    """``num_tasks`` tasks x ``episodes_per_task`` episodes of ``horizon`` steps per call."""

    def __init__(
        self, family: str, num_tasks: int, episodes_per_task: int, horizon: int, *, num_threads: int = 1
    ) -> None:
        self.num_tasks = num_tasks
        self.episodes_per_task = episodes_per_task
        self.horizon = horizon
        self.env = BatchedRobotEnv(
            family, num_tasks * episodes_per_task, num_threads=num_threads, max_episode_steps=horizon
        )
        self.env_steps = 0  # env steps taken so far (valid ones)

    def set_tasks(self, tasks: Sequence[Mapping[str, Any]]) -> None:
        """``num_tasks`` task dicts; each is given to its ``episodes_per_task`` envs."""
        if len(tasks) != self.num_tasks:
            raise ValueError(f"tasks: expected {self.num_tasks} tasks, got {len(tasks)}")
        self.env.set_tasks([task for task in tasks for _ in range(self.episodes_per_task)])

    @torch.no_grad()
    def sample(self, policy: Any, params: Mapping[str, torch.Tensor] | None, seed: int) -> Episodes:
        """One episode per env with ``params`` (``{name: [K, ...]}`` or None: the meta-policy).

        ``seed`` fixes both the reset noise and the action noise, so a batch depends only on the
        seed, the tasks and the parameters (never on thread counts).
        """
        K, B, T = self.num_tasks, self.episodes_per_task, self.horizon
        N = K * B
        env = self.env
        generator = torch.Generator().manual_seed(seed)
        obs_np, _ = env.reset(seed=seed)

        observations = torch.zeros(T, K, B, env.obs_dim)
        actions = torch.zeros(T, K, B, env.act_dim)
        rewards = torch.zeros(T, K, B)
        log_probs = torch.zeros(T, K, B)
        mask = torch.zeros(T, K, B)
        terminated = torch.zeros(T, K, B, dtype=torch.bool)
        last_observations = torch.zeros(K, B, env.obs_dim)
        alive = np.ones(N, dtype=bool)

        state = policy.initial_state((K, B))
        for t in range(T):
            obs = torch.from_numpy(obs_np).to(torch.float32).view(K, B, env.obs_dim)
            mean, log_std, state = policy.step(obs, state, params)
            std = log_std.exp().expand_as(mean)
            action = mean + std * torch.randn(mean.shape, generator=generator)
            observations[t] = obs
            actions[t] = action
            log_probs[t] = policy.distribution(mean, log_std).log_prob(action)
            mask[t] = torch.from_numpy(alive).view(K, B).float()

            obs_np, reward, term, trunc, info = env.step(action.view(N, env.act_dim).numpy())
            rewards[t] = torch.from_numpy(np.where(alive, reward, 0.0)).view(K, B).float()
            ended = alive & (term | trunc)
            terminated[t] = torch.from_numpy(alive & term).view(K, B)
            if ended.any():
                last = last_observations.view(N, env.obs_dim)
                last[torch.from_numpy(ended)] = torch.from_numpy(info["final_obs"][ended]).float()
            self.env_steps += int(alive.sum())
            alive &= ~(term | trunc)
            if not alive.any():
                break
        return Episodes(observations, actions, rewards, mask, terminated, last_observations, log_probs)
