"""Linear feature baseline (Duan et al. 2016, rllab), fitted per task in one batched solve.

Features of an observation ``o`` seen at step ``t``::

    phi(o, t) = [clip(o, -10, 10), clip(o, -10, 10)^2, s, s^2, s^3, 1],   s = t / 100

so ``num_features = 2 * obs_dim + 4``. Each task ``k`` gets its own coefficients ``c_k``, the
ridge-regularised least-squares fit of its discounted returns ``G``::

    c_k = argmin_c  sum_{valid t, b} (phi_{t,k,b} . c - G_{t,k,b})^2 + reg_k |c|^2
        = (X_k^T X_k + reg_k I)^{-1} X_k^T G_k

All K normal equations are solved at once (batched Cholesky in float64). The ridge of a task
whose Gram matrix is not numerically positive definite (e.g. a constant observation is collinear
with the bias feature) grows by 10x until its Cholesky factorisation succeeds.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bmaml_robot_deploy.checks import check_float

TIME_SCALE = 100.0
"""Steps are divided by this before entering the polynomial time features (as in rllab)."""
OBS_CLIP = 10.0
"""Observations are clipped to [-OBS_CLIP, OBS_CLIP] before entering the features (as in rllab)."""


def num_features(obs_dim: int) -> int:
    """Number of baseline features for observations of size ``obs_dim``."""
    return 2 * obs_dim + 4


def baseline_features(observations: Tensor, steps: Tensor) -> Tensor:
    """Features ``phi(o, t)`` of observations seen at the given steps.

    observations: float [..., obs_dim]; steps: [...] (any real dtype), broadcastable to
    ``observations.shape[:-1]``. Returns float64 [..., 2 * obs_dim + 4].
    """
    obs = observations.to(torch.float64).clamp(-OBS_CLIP, OBS_CLIP)
    s = (steps.to(torch.float64) / TIME_SCALE).expand(obs.shape[:-1]).unsqueeze(-1)
    return torch.cat([obs, obs * obs, s, s * s, s * s * s, torch.ones_like(s)], dim=-1)


def episode_features(observations: Tensor) -> Tensor:
    """Features of a batch of episodes that all start at t = 0.

    observations: float [T, K, B, obs_dim] -> float64 [T, K, B, 2 * obs_dim + 4].
    """
    T = observations.shape[0]
    steps = torch.arange(T, device=observations.device).view(T, 1, 1)
    return baseline_features(observations, steps)


def fit_linear_baseline(
    features: Tensor,
    targets: Tensor,
    mask: Tensor,
    reg_coeff: float = 1e-5,
    max_attempts: int = 6,
) -> Tensor:
    """Per-task ridge regression of ``targets`` on ``features``, all tasks in one solve.

    features: float [T, K, B, F]; targets: float [T, K, B]; mask: [T, K, B] (> 0 = valid).
    Returns float64 coefficients [K, F]. Masked steps are excluded with ``where``, so any
    values there (NaN included) have no influence.
    """
    if features.dim() != 4:
        raise ValueError(f"features: expected shape [T, K, B, F], got {tuple(features.shape)}")
    if tuple(targets.shape) != tuple(features.shape[:3]) or targets.shape != mask.shape:
        raise ValueError(
            f"targets, mask: expected shape {tuple(features.shape[:3])}, "
            f"got {tuple(targets.shape)} and {tuple(mask.shape)}"
        )
    check_float(reg_coeff, "reg_coeff", low=0, low_open=True)
    valid = (mask > 0).unsqueeze(-1)
    X = torch.where(valid, features.to(torch.float64), 0.0)  # [T, K, B, F]
    y = torch.where(valid, targets.to(torch.float64).unsqueeze(-1), 0.0)  # [T, K, B, 1]
    # Normal equations per task: sum over time and episodes, as one batched matmul over tasks
    # (2x faster than the equivalent einsum).
    T, K, B, F = X.shape
    X_rows = X.movedim(1, 0).reshape(K, T * B, F)
    X_cols = X_rows.mT
    gram = X_cols @ X_rows  # [K, F, F]
    rhs = X_cols @ y.movedim(1, 0).reshape(K, T * B, 1)  # [K, F, 1]
    if not (torch.isfinite(gram).all() and torch.isfinite(rhs).all()):
        raise ValueError("fit_linear_baseline: non-finite features or targets at valid (mask > 0) steps")

    eye = torch.eye(F, dtype=gram.dtype, device=gram.device)
    reg = torch.full((K, 1, 1), float(reg_coeff), dtype=gram.dtype, device=gram.device)
    for _ in range(max_attempts):
        chol, info = torch.linalg.cholesky_ex(gram + reg * eye)
        failed = info != 0
        if not failed.any():
            return torch.cholesky_solve(rhs, chol).squeeze(-1)
        # Ill-conditioned tasks only: a larger ridge makes their Gram matrix safely SPD.
        reg = torch.where(failed.view(K, 1, 1), reg * 10.0, reg)
    raise RuntimeError(
        f"fit_linear_baseline: normal equations of tasks {failed.nonzero().flatten().tolist()} "
        f"stay singular with a ridge of {reg.max().item():.1e}"
    )


def predict_linear_baseline(features: Tensor, coeffs: Tensor) -> Tensor:
    """Baseline values ``phi . c_k``.

    features: float64 [..., K, B, F]; coeffs: [K, F] -> float64 [..., K, B].
    """
    return torch.einsum("...kbf,kf->...kb", features, coeffs.to(features.dtype))
