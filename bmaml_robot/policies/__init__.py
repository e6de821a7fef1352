"""Gaussian policies for MAML with per-task parameters batched over tasks.

Use ``make_policy(kind, obs_dim, act_dim, ...)``; see ``Policy`` for the interface.
"""

from __future__ import annotations

from collections.abc import Sequence

from bmaml_robot_deploy.checks import check_choice

from .base import POLICY_KINDS, RECURRENCE_MODES, Params, Policy, State, linear
from .mlp import GaussianMLPPolicy
from .recurrent import RecurrentGaussianPolicy

__all__ = [
    "POLICY_KINDS",
    "RECURRENCE_MODES",
    "GaussianMLPPolicy",
    "Params",
    "Policy",
    "RecurrentGaussianPolicy",
    "State",
    "linear",
    "make_policy",
]


def make_policy(
    kind: str,
    obs_dim: int,
    act_dim: int,
    *,
    hidden_sizes: Sequence[int] = (64, 64),
    hidden_size: int = 100,
    recurrence: str = "frozen",
    init_log_std: float = 0.0,
    seed: int | None = None,
) -> Policy:
    """Builds a policy of ``kind`` (one of ``POLICY_KINDS``).

    Args:
        kind: ``"mlp"`` (tanh MLP), ``"rnn"``, ``"gru"`` or ``"lstm"``.
        obs_dim: observation size (> 0).
        act_dim: action size (> 0).
        hidden_sizes: hidden layer sizes of the mlp (ignored by recurrent kinds).
        hidden_size: state size of the recurrent cell (ignored by mlp).
        recurrence: ``"frozen"``, ``"outer"`` or ``"all"`` (ignored by mlp; its ``recurrence`` is None).
        init_log_std: initial value of every entry of ``log_std``.
        seed: if given, parameters are initialised from a ``torch.Generator`` seeded with it
            (deterministic, independent of the global RNG); if None, from the global RNG.

    Raises:
        ValueError: naming the bad argument, what was expected and what came.
    """
    check_choice(kind, "kind", POLICY_KINDS)
    # Checked for every kind: a typo in a config is an error even where the value is unused.
    check_choice(recurrence, "recurrence", RECURRENCE_MODES)
    if kind == "mlp":
        return GaussianMLPPolicy(obs_dim, act_dim, hidden_sizes=hidden_sizes, init_log_std=init_log_std, seed=seed)
    return RecurrentGaussianPolicy(
        obs_dim,
        act_dim,
        kind=kind,
        hidden_size=hidden_size,
        recurrence=recurrence,
        init_log_std=init_log_std,
        seed=seed,
    )
