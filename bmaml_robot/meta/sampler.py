"""The sampler: drives the C++ batched env with ``num_tasks x episodes_per_task`` robots in lockstep.

Every env runs exactly one episode of at most ``horizon`` steps, starting at ``t = 0``. The
policy acts for all tasks in one batched forward (each task with its own parameters) and
carries recurrent hidden states from step to step. Episodes that end early are masked
(``Episodes.mask``), never padded into the losses; values at masked steps are zeros.

Randomness is assigned per task, never per batch: task ``k`` (its index in the meta-batch) draws
its reset noise and its action noise from streams derived from ``(seed, k)`` alone (see
``task_seeds``). So sampling tasks ``a:b`` on their own (``first_task=a``, e.g. on a Ray worker
that holds that slice) gives bit-identical episodes to the same slice of a full-batch sample,
and neither depends on the env's thread count. The policy runs on one torch thread while it
samples, because torch's float results depend on its intra-op thread count.

The policy acts in its normalised action space; the robots receive those actions mapped onto their
bounds (``MetaSampler.action_map``), and ``Episodes.actions`` holds the policy's own actions, the
ones its log-probabilities are of.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from bmaml_robot.envs.vector_env import BatchedRobotEnv
from bmaml_robot.meta.episodes import Episodes
from bmaml_robot.torch_threads import one_torch_thread
from bmaml_robot_deploy.checks import check_int


def task_seeds(seed: int, first_task: int, num_tasks: int) -> tuple[np.ndarray, np.ndarray]:
    """The random streams of tasks ``first_task .. first_task + num_tasks - 1`` of a sample.

    Task ``k`` gets ``SeedSequence(seed, spawn_key=(k,))``'s first two 64-bit words: the seed of
    its envs' reset noise (env ``b`` of the task starts as env ``b`` of a ``B``-env
    ``BatchedRobotEnv`` reset with that seed) and the seed of a ``torch.Generator`` that draws
    its action noise ``[T, B, act_dim]`` (standard normal) in one call.

    Returns:
        ``(reset_seeds, noise_seeds)``, each uint64 ``[num_tasks]``.
    """
    check_int(seed, "seed", minimum=0, below=2**64)
    check_int(first_task, "first_task", minimum=0, below=2**63)
    words = np.stack([
        np.random.SeedSequence(int(seed), spawn_key=(first_task + k,)).generate_state(2, np.uint64)
        for k in range(num_tasks)
    ]) if num_tasks > 0 else np.zeros((0, 2), np.uint64)
    return words[:, 0].copy(), words[:, 1].copy()


class Sampler(Protocol):
    """What the trainer needs from a sampler (``MetaSampler``, ``RaySampler``)."""

    num_tasks: int
    episodes_per_task: int
    obs_dim: int
    act_dim: int
    env_steps: int
    """Env steps sampled so far (a counter the trainer also restores on resume)."""
    workers_restarted: int
    """Sampling workers that died and were replaced so far (same results); 0 for a local sampler."""

    def set_tasks(self, tasks: Sequence[Mapping[str, Any]]) -> None: ...

    def sample(self, policy: Any, params: Mapping[str, torch.Tensor] | None, seed: int) -> Episodes: ...

    def close(self) -> None: ...


class MetaSampler:
    """``num_tasks`` tasks x ``episodes_per_task`` episodes of ``horizon`` steps per call.

    Attributes:
        env: the ``BatchedRobotEnv`` of ``num_tasks * episodes_per_task`` robots; task ``k`` owns
            envs ``k * B .. k * B + B - 1``.
        obs_dim, act_dim: sizes of one observation and one action.
        env_steps: env steps taken so far (valid ones, i.e. inside episodes).
        workers_restarted: always 0 (``RaySampler`` counts replaced workers).
        action_map: the policy's normalised actions -> the robot's (``envs/action_map.py``). The
            episodes hold the policy's actions; the robots receive ``action_map.to_robot`` of them.
    """

    def __init__(
        self, family: str, num_tasks: int, episodes_per_task: int, horizon: int, *, num_threads: int = 1,
        action_scale: float | None = None,
    ) -> None:
        """``action_scale``: half-width of the policy's action space (None: the family's default)."""
        self.num_tasks = num_tasks
        self.episodes_per_task = episodes_per_task
        self.horizon = horizon
        self.env = BatchedRobotEnv(
            family, num_tasks * episodes_per_task, num_threads=num_threads, max_episode_steps=horizon
        )
        self.action_map = self.env.action_map(action_scale)
        self.obs_dim: int = self.env.obs_dim
        self.act_dim: int = self.env.act_dim
        self.env_steps = 0  # env steps taken so far (valid ones)
        self.workers_restarted = 0  # (the Sampler protocol: no workers here, nothing restarts)

    def set_tasks(self, tasks: Sequence[Mapping[str, Any]]) -> None:
        """``num_tasks`` task dicts; each is given to its ``episodes_per_task`` envs."""
        if len(tasks) != self.num_tasks:
            raise ValueError(f"tasks: expected {self.num_tasks} tasks, got {len(tasks)}")
        self.env.set_tasks([task for task in tasks for _ in range(self.episodes_per_task)])

    def close(self) -> None:
        """Free the robots and join their threads."""
        self.env.close()

    def reset(self, reset_seeds: np.ndarray) -> np.ndarray:
        """Start every env's episode; task ``k``'s envs from ``reset_seeds[k]`` (uint64 ``[K]``).

        Env ``b`` of task ``k`` starts exactly as env ``b`` of a ``B``-env ``BatchedRobotEnv``
        reset with ``seed=reset_seeds[k]``. Returns obs float64 ``[K * B, obs_dim]``.
        """
        if len(reset_seeds) != self.num_tasks:
            raise ValueError(f"reset_seeds: expected {self.num_tasks} seeds, got {len(reset_seeds)}")
        B = self.episodes_per_task
        seeds = np.repeat(np.asarray(reset_seeds, dtype=np.uint64), B)
        streams = np.tile(np.arange(B, dtype=np.uint64), self.num_tasks)
        return self.env.reset_streams(seeds, streams)

    @torch.no_grad()
    def sample(
        self, policy: Any, params: Mapping[str, torch.Tensor] | None, seed: int, *, first_task: int = 0
    ) -> Episodes:
        """One episode per env with ``params`` (``{name: [K, ...]}`` or None: the meta-policy).

        ``seed`` fixes the reset noise and the action noise of every task, stream by task (see
        ``task_seeds``): this sampler's task ``k`` is task ``first_task + k`` of the meta-batch.
        A batch depends only on the seed, the tasks, their indices and the parameters (never on
        thread counts, nor on which other tasks are sampled with it).
        """
        K, B, T = self.num_tasks, self.episodes_per_task, self.horizon
        N = K * B
        env = self.env
        obs_dim, act_dim = self.obs_dim, self.act_dim
        reset_seeds, noise_seeds = task_seeds(seed, first_task, K)
        # The policy runs on K_run >= K tasks x B_run >= B envs (see _run_shape); the extra
        # ones see zeros and are ignored.
        K_run, B_run = _run_shape(K, B)
        run_params = _per_task_params(policy, params, K, K_run)
        # Action noise [T, K_run, B_run, act]: task k's [T, B, act] from its own generator, in one call.
        noise = torch.zeros(T, K_run, B_run, act_dim)
        for k, noise_seed in enumerate(noise_seeds):
            noise[:, k, :B] = torch.randn((T, B, act_dim), generator=torch.Generator().manual_seed(int(noise_seed)))
        with one_torch_thread():
            obs_np = self.reset(reset_seeds)

            observations = torch.zeros(T, K, B, obs_dim)
            actions = torch.zeros(T, K, B, act_dim)
            rewards = torch.zeros(T, K, B)
            log_probs = torch.zeros(T, K, B)
            mask = torch.zeros(T, K, B)
            terminated = torch.zeros(T, K, B, dtype=torch.bool)
            last_observations = torch.zeros(K, B, obs_dim)
            alive = np.ones(N, dtype=bool)

            obs_run = torch.zeros(K_run, B_run, obs_dim)
            state = policy.initial_state((K_run, B_run))
            steps = T
            for t in range(T):
                obs = obs_run[:K, :B]
                obs.copy_(torch.from_numpy(obs_np).view(K, B, obs_dim))  # float64 -> float32
                mean, log_std, state = policy.step(obs_run, state, run_params)
                # Full-size log_std: every elementwise op then runs over all K_run * B_run rows.
                log_std = log_std.expand_as(mean).contiguous()
                action_run = mean + log_std.exp() * noise[t]
                if not bool(torch.isfinite(action_run).all()):
                    raise FloatingPointError(
                        f"sampling: the policy's actions are not finite at step {t} (its parameters diverged: "
                        "a far too large fast_lr?)")
                action = action_run[:K, :B]
                observations[t] = obs
                actions[t] = action
                log_probs[t] = policy.distribution(mean, log_std).log_prob(action_run)[:K, :B]
                mask[t] = torch.from_numpy(alive).view(K, B)

                robot_actions = self.action_map.to_robot(actions[t].view(N, act_dim).numpy())
                obs_np, reward, term, trunc, info = env.step(robot_actions)
                rewards[t] = torch.from_numpy(np.where(alive, reward, 0.0)).view(K, B)
                ended = alive & (term | trunc)
                terminated[t] = torch.from_numpy(alive & term).view(K, B)
                if ended.any():
                    last = last_observations.view(N, obs_dim)
                    last[torch.from_numpy(ended)] = torch.from_numpy(info["final_obs"][ended]).float()
                self.env_steps += int(alive.sum())
                alive &= ~(term | trunc)
                if not alive.any():
                    steps = t + 1
                    break
        # Masked steps hold whatever the envs did after their episode ended (and in a bigger batch
        # the loop may run longer): zero them, so a batch is the same whatever else ran with it.
        ended_before = mask[:steps] == 0
        observations[:steps].masked_fill_(ended_before.unsqueeze(-1), 0.0)
        actions[:steps].masked_fill_(ended_before.unsqueeze(-1), 0.0)
        log_probs[:steps].masked_fill_(ended_before, 0.0)
        return Episodes(observations, actions, rewards, mask, terminated, last_observations, log_probs)


#: The policy's rows (tasks x envs) are padded to a multiple of this (see ``_run_shape``).
ROW_ALIGNMENT = 32
#: Each task's envs are padded to a multiple of this (see ``_run_shape``).
TASK_ROW_ALIGNMENT = 4


def _run_shape(num_tasks: int, episodes_per_task: int) -> tuple[int, int]:
    """``(K_run, B_run)``: the tasks and envs per task the policy runs on, so that every task's
    numbers are the same whatever other tasks run with it, and wherever it sits in the batch.

    - ``B_run``: ``episodes_per_task`` rounded up to a multiple of ``TASK_ROW_ALIGNMENT``. MKL's
      kernels for matrices of 2 or 3 rows give results that depend on the data's address
      alignment, i.e. on the task's position in a batched matmul; from 4 rows on they do not,
      and every task's block then starts at a 16-byte-aligned offset.
    - ``K_run``: ``num_tasks`` rounded up so that ``K_run * B_run`` is a multiple of
      ``ROW_ALIGNMENT``. torch's elementwise kernels process a contiguous tensor in SIMD blocks
      of 32 floats (AVX-512; 16 with AVX2) and the last ``numel % 32`` elements with scalar
      code, and the vectorised exp/tanh/sigmoid differ from the scalar ones in the last bit.
      With ``K_run * B_run * D`` a multiple of 32 for every feature size ``D`` there is no
      scalar tail.

    So a slice of the meta-batch (e.g. on a Ray worker) computes exactly what the full batch
    computes for those tasks. Costs at most ``TASK_ROW_ALIGNMENT - 1`` extra envs per task and
    ``ROW_ALIGNMENT / gcd(B_run, ROW_ALIGNMENT) - 1`` extra tasks, in the policy only.
    """
    B_run = -(-episodes_per_task // TASK_ROW_ALIGNMENT) * TASK_ROW_ALIGNMENT
    step = ROW_ALIGNMENT // math.gcd(B_run, ROW_ALIGNMENT)
    return -(-num_tasks // step) * step, B_run


def _per_task_params(
    policy: Any, params: Mapping[str, torch.Tensor] | None, num_tasks: int, run_tasks: int
) -> dict[str, torch.Tensor]:
    """``{name: [run_tasks, ...]}``: ``params`` (or copies of the meta-parameters, one per task)
    with tasks past ``num_tasks`` filled with task 0's parameters.

    The meta-policy also runs per task (batched matmuls, one ``[B, in] x [in, out]`` product per
    task) rather than as one matmul over all rows, whose row results can depend on the number of
    rows (MKL uses other kernels for 1-3 rows). Its weights are per-task copies (``K_run x P``
    floats, once per call), so it runs the very same products as per-task parameters do.
    """
    if params is None:
        return {name: p.detach().expand(run_tasks, *p.shape).contiguous() for name, p in policy.named_parameters()}
    padded = {}
    for name, value in params.items():
        if value.dim() == 0 or value.shape[0] != num_tasks:
            raise ValueError(
                f"params[{name!r}]: expected a leading task dimension of {num_tasks}, got shape {list(value.shape)}"
            )
        value = value.detach()
        if run_tasks > num_tasks:
            value = torch.cat([value, value[:1].expand(run_tasks - num_tasks, *value.shape[1:])])
        padded[name] = value
    return padded
