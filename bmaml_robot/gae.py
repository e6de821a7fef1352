"""Generalised advantage estimation in C++ over ``[T, N]`` batches."""

from __future__ import annotations

import numpy as np

from bmaml_robot import _core


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    last_values: np.ndarray,
    gamma: float,
    lam: float,
    final_values: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and returns (value targets), both ``[T, N]`` of the rewards' dtype.

    Args:
        rewards: float32 or float64 ``[T, N]``, time first.
        values: ``[T, N]``, V(obs_t), same dtype as rewards.
        terminated: bool ``[T, N]``: the episode truly ended at step t; no bootstrap.
        truncated: bool ``[T, N]``: the episode was cut at step t (time limit); it bootstraps from
            the value of its final observation.
        last_values: ``[N]``, V of the observation after step T-1 (bootstraps the batch's end,
            and a truncation at T-1 when ``final_values`` is not given).
        gamma: discount in [0, 1].
        lam: GAE lambda in [0, 1] (1: Monte-Carlo returns minus values; 0: one-step TD).
        final_values: ``[T, N]`` or None; read where truncated: V of that episode's final
            observation. Required if an episode is truncated before step T-1.

    With ``delta_t = r_t + gamma V_next(t) - V_t``: ``A_t = delta_t + gamma lam A_{t+1}``, where
    the carry is cut at every episode end, and ``returns = A + V``.
    """
    gamma, lam = _unit_interval(gamma, "gamma"), _unit_interval(lam, "lam")
    return _core.gae(rewards, values, terminated, truncated, last_values, gamma, lam, final_values)


def _unit_interval(value: object, name: str) -> float:
    """``value`` as a float; the core checks the range (and names the argument)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a real number in [0, 1], got {type(value).__name__} {value!r}")
    try:
        return float(value)
    except OverflowError:  # an int beyond float's range
        raise ValueError(f"{name}: expected a value in [0, 1], got {value!r}") from None
