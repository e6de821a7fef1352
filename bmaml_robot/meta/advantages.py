"""Advantages of a batch of episodes: linear baseline -> GAE (C++ core) -> per-task normalisation.

1. Discounted reward-to-go ``G_t = sum_{u >= t} gamma^(u - t) r_u`` inside each episode is the
   regression target of the per-task linear baseline ``V`` (no bootstrap: the target must not
   depend on the baseline being fitted).
2. GAE(gamma, lambda) with that baseline (``bmaml_robot.gae``): a terminated episode does not
   bootstrap; an episode still running at ``t = T - 1`` is truncated there and bootstraps from
   ``V(last_observation, t = T)``.
3. Optionally the advantages of each task are normalised to zero mean and unit std over the
   task's valid steps (tasks have very different reward scales; the inner step size must not).
Masked steps get advantage 0.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from bmaml_robot_deploy.checks import check_float

from .baseline import (
    baseline_features,
    episode_features,
    fit_linear_baseline,
    predict_linear_baseline,
)
from .episodes import Episodes, ProcessedEpisodes


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """Reward-to-go inside each episode, 0 at masked steps.

    rewards, mask: [T, K, B] -> [T, K, B] (dtype of rewards). Since every episode starts at
    t = 0 and the mask never comes back to 1, the recursion ``G_t = r_t + gamma G_{t+1}``
    over masked (zeroed) steps is exact.
    """
    valid = mask > 0
    r = torch.where(valid, rewards, 0.0)
    out = torch.empty_like(r)
    running = torch.zeros_like(r[0])
    for t in range(r.shape[0] - 1, -1, -1):
        running = r[t] + gamma * running
        out[t] = running
    return torch.where(valid, out, 0.0)


def normalize_per_task(advantages: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """Zero mean, unit std per task over valid steps; 0 at masked steps.

    advantages, mask: [T, K, B] -> [T, K, B].
    """
    valid = mask > 0
    count = valid.sum(dim=(0, 2), keepdim=True).clamp_min(1)
    x = torch.where(valid, advantages, 0.0)
    mean = x.sum(dim=(0, 2), keepdim=True) / count
    var = torch.where(valid, (x - mean) ** 2, 0.0).sum(dim=(0, 2), keepdim=True) / count
    return torch.where(valid, (x - mean) / (var.sqrt() + eps), 0.0)


def episode_boundaries(episodes: Episodes) -> tuple[Tensor, Tensor]:
    """Where each episode ends, in the terms of ``bmaml_robot.gae``.

    Returns (terminated, truncated), bool [T, K, B]. ``terminated`` is the sampler's flag at
    valid steps, plus (defensively) any step after which the mask drops to 0 without a flag: the
    observation after it is unknown, so it cannot bootstrap either. ``truncated`` is True only at
    ``t = T - 1`` for episodes still running there.
    """
    valid = episodes.mask > 0
    terminated = episodes.terminated & valid
    ends_early = valid[:-1] & ~valid[1:]
    terminated[:-1] |= ends_early
    truncated = torch.zeros_like(terminated)
    truncated[-1] = valid[-1] & ~terminated[-1]
    return terminated, truncated


def compute_advantages(
    episodes: Episodes,
    gamma: float = 0.99,
    gae_lambda: float = 1.0,
    normalize: bool = True,
    reg_coeff: float = 1e-5,
) -> ProcessedEpisodes:
    """Fit the per-task baseline, run GAE, and return episodes with advantages and returns.

    episodes: with ``advantages``/``returns`` possibly None (they are overwritten).
    Returns a copy with ``advantages`` [T, K, B] (normalised per task if ``normalize``) and
    ``returns`` [T, K, B] (GAE value targets ``A + V`` before normalisation), both in the dtype
    of ``episodes.rewards`` and 0 at masked steps.
    """
    import bmaml_robot  # lazily: the C++ core is only needed once advantages are computed

    episodes.validate()
    check_float(gamma, "gamma", low=0, high=1)
    check_float(gae_lambda, "gae_lambda", low=0, high=1)
    T, K, B = episodes.mask.shape
    valid = episodes.mask > 0

    with torch.no_grad():
        returns_to_go = discounted_returns(episodes.rewards, episodes.mask, gamma)
        features = episode_features(episodes.observations)  # float64 [T, K, B, F], built once
        coeffs = fit_linear_baseline(features, returns_to_go, episodes.mask, reg_coeff)
        values = predict_linear_baseline(features, coeffs)
        last_features = baseline_features(
            episodes.last_observations, torch.tensor(float(T), device=episodes.mask.device)
        )
        last_values = predict_linear_baseline(last_features, coeffs)  # [K, B]

        terminated, truncated = episode_boundaries(episodes)
        # Zero everything GAE must not see, so garbage (even NaN) at masked steps cannot leak.
        rewards = torch.where(valid, episodes.rewards.to(torch.float64), 0.0)
        values = torch.where(valid, values, 0.0)
        last_values = torch.where(truncated[-1], last_values, 0.0)

        def flat(x: Tensor) -> np.ndarray:
            return np.ascontiguousarray(x.detach().cpu().reshape(x.shape[0], K * B).numpy())

        advantages_np, returns_np = bmaml_robot.gae(
            flat(rewards),
            flat(values),
            flat(terminated),
            flat(truncated),
            np.ascontiguousarray(last_values.cpu().reshape(K * B).numpy()),
            float(gamma),
            float(gae_lambda),
        )
        dtype, device = episodes.rewards.dtype, episodes.rewards.device
        advantages = torch.as_tensor(np.asarray(advantages_np)).reshape(T, K, B)
        returns = torch.as_tensor(np.asarray(returns_np)).reshape(T, K, B)
        advantages = torch.where(valid.cpu(), advantages, 0.0).to(device=device, dtype=dtype)
        returns = torch.where(valid.cpu(), returns, 0.0).to(device=device, dtype=dtype)
        if normalize:
            advantages = normalize_per_task(advantages, episodes.mask)
    return ProcessedEpisodes(**episodes._replace(advantages=advantages, returns=returns)._asdict())
