"""Shared by the meta-learning tests: a tiny policy in any float dtype and synthetic meta-batches.

The real policies are float32 only; this one lets the maths run in float64 (tight checks), and
with ``softplus_std`` it is a Gaussian whose scale is not ``exp(log_std)`` (the learner's fallback).
"""

from __future__ import annotations

import torch

from bmaml_robot.meta import Episodes, adapt, compute_advantages


class TinyPolicy(torch.nn.Module):
    """``obs -> tanh(w1 obs + b1) -> w2 h + b2 = mean``, state-independent ``log_std``.

    Every parameter is adaptable; the trainable ones are those with ``requires_grad``.
    """

    kind = "mlp"
    is_recurrent = False

    def __init__(self, obs_dim: int = 2, act_dim: int = 2, hidden: int = 3, dtype: torch.dtype = torch.float64,
                 softplus_std: bool = False, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.obs_dim, self.act_dim, self.softplus_std = obs_dim, act_dim, softplus_std
        self.w1 = torch.nn.Parameter(torch.randn(hidden, obs_dim, generator=g, dtype=dtype))
        self.b1 = torch.nn.Parameter(0.1 * torch.randn(hidden, generator=g, dtype=dtype))
        self.w2 = torch.nn.Parameter(torch.randn(act_dim, hidden, generator=g, dtype=dtype))
        self.b2 = torch.nn.Parameter(0.1 * torch.randn(act_dim, generator=g, dtype=dtype))
        self.log_std = torch.nn.Parameter(torch.full((act_dim,), -0.3, dtype=dtype))

    def adaptable_names(self):
        return [n for n, _ in self.named_parameters()]

    def trainable_names(self):
        return [n for n, p in self.named_parameters() if p.requires_grad]

    def batched_params(self, num_tasks):
        return {n: p.expand(num_tasks, *p.shape) for n, p in self.named_parameters()}

    def sequence(self, obs, params=None):
        if params is None:
            params = self.batched_params(obs.shape[1])
        h = torch.tanh(torch.einsum("tkbi,koi->tkbo", obs, params["w1"]) + params["b1"][None, :, None])
        mean = torch.einsum("tkbi,koi->tkbo", h, params["w2"]) + params["b2"][None, :, None]
        return mean, params["log_std"][None, :, None]

    def distribution(self, mean, log_std):
        scale = torch.nn.functional.softplus(log_std) if self.softplus_std else log_std.exp()
        return torch.distributions.Independent(torch.distributions.Normal(mean, scale), 1)


def synthetic_episodes(policy, params, T=6, K=3, B=5, seed=0, dtype=torch.float32, lengths=None):
    """Random observations, actions sampled from the policy, reward -|a - goal_k|^2, ragged masks."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(T, K, B, policy.obs_dim, generator=g, dtype=dtype)
    with torch.no_grad():
        mean, log_std = policy.sequence(obs, params)
        std = log_std.exp().expand_as(mean)
        actions = mean + std * torch.randn(mean.shape, generator=g, dtype=dtype)
        log_probs = policy.distribution(mean, log_std).log_prob(actions)
    goals = torch.randn(K, policy.act_dim, generator=g, dtype=dtype)
    rewards = -((actions - goals[None, :, None]) ** 2).sum(-1)
    if lengths is None:
        lengths = torch.randint(2, T + 1, (K, B), generator=g)
    steps = torch.arange(T).view(T, 1, 1)
    mask = (steps < lengths).to(dtype)
    terminated = (steps == lengths - 1) & (lengths < T)  # ended early: terminated; else truncated
    last_obs = torch.randn(K, B, policy.obs_dim, generator=g, dtype=dtype)
    return Episodes(obs, actions, rewards, mask, terminated, last_obs, log_probs)


def meta_batch(policy, K=3, B=4, T=5, adapt_steps=1, fast_lr=0.3, seed=0, dtype=torch.float32):
    """Train episodes for each inner step and validation episodes, each sampled with the right params."""
    train = []
    for i in range(adapt_steps):
        params = adapt(policy, train, fast_lr, first_order=True, params=policy.batched_params(K))
        params = {n: p.detach() for n, p in params.items()}
        episodes = synthetic_episodes(policy, params, T=T, K=K, B=B, seed=seed + i, dtype=dtype)
        train.append(compute_advantages(episodes))
    params = adapt(policy, train, fast_lr, first_order=True)
    params = {n: p.detach() for n, p in params.items()}
    valid = synthetic_episodes(policy, params, T=T, K=K, B=B, seed=seed + 100, dtype=dtype)
    valid = compute_advantages(valid)
    return train, valid


def snapshot(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}
