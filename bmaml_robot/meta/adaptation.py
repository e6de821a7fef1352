"""Inner loop of MAML: per-task policy-gradient steps on functional (batched) parameters.

Every parameter is carried as a tensor ``[K, *shape]``, one slice per task, built from the
meta-parameters by ``policy.batched_params(K)`` (an expand, so gradients flow back to the
meta-parameters). The inner loss of task k depends only on slice k, so the gradient of the SUM of
the K task losses w.r.t. the batched tensor is, slice by slice, each task's own gradient: one
``torch.autograd.grad`` call adapts all tasks at once. Module parameters are never edited.

One inner step (Finn et al. 2017), on adaptable names only::

    phi_k <- phi_k - fast_lr * grad_phi L_k(phi_k),
    L_k(phi) = - sum_{t,b} mask * log pi_phi(a | o) * A / sum_{t,b} mask      (REINFORCE)

Second order (``first_order=False``) keeps the graph of the gradient (``create_graph=True``) so
the outer gradient sees ``d phi / d theta = I - fast_lr * Hessian``; first order treats the inner
gradient as a constant (``d phi / d theta = I``). Both give the same adapted values.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import torch
from torch import Tensor

from .episodes import Episodes, task_mean, zero_masked

Params = dict[str, Tensor]
"""Per-task parameters: every parameter name -> tensor [K, *shape]."""


class PolicyLike(Protocol):
    """The part of ``bmaml_robot.policies.Policy`` the meta-learner relies on."""

    def adaptable_names(self) -> list[str]: ...
    def trainable_names(self) -> list[str]: ...
    def sequence(self, obs: Tensor, params: Params | None = None) -> tuple[Tensor, Tensor]: ...
    def distribution(self, mean: Tensor, log_std: Tensor) -> torch.distributions.Distribution: ...
    def batched_params(self, num_tasks: int) -> Params: ...


def policy_distribution(
    policy: PolicyLike, episodes: Episodes, params: Params | None
) -> torch.distributions.Distribution:
    """Action distribution of the policy along the episodes, batch shape [T, K, B].

    Recurrent policies run over the whole sequence (state reset at t = 0), so gradients are
    back-propagated through time.
    """
    mean, log_std = policy.sequence(zero_masked(episodes.observations, episodes.mask), params)
    return policy.distribution(mean, log_std)


def action_log_probs(policy: PolicyLike, episodes: Episodes, params: Params | None) -> Tensor:
    """log pi(a_t | o_<=t) of the episodes' actions, [T, K, B]."""
    dist = policy_distribution(policy, episodes, params)
    return dist.log_prob(zero_masked(episodes.actions, episodes.mask))


def inner_loss(policy: PolicyLike, episodes: Episodes, params: Params | None) -> Tensor:
    """REINFORCE loss of each task, [K]: ``-sum(log_prob * adv * mask) / sum(mask)``."""
    if episodes.advantages is None:
        raise ValueError("episodes.advantages: expected a tensor [T, K, B], got None "
                         "(run bmaml_robot.meta.compute_advantages first)")
    log_probs = action_log_probs(policy, episodes, params)
    advantages = torch.where(episodes.mask > 0, episodes.advantages, 0.0)
    return -task_mean(log_probs * advantages, episodes.mask)


def adapt(
    policy: PolicyLike,
    train_episodes: Sequence[Episodes],
    fast_lr: float,
    first_order: bool = False,
    params: Params | None = None,
) -> Params:
    """Adapted per-task parameters after ``len(train_episodes)`` inner steps.

    train_episodes: step i's episodes (with advantages), sampled with the parameters after i
    steps; all with the same K. params: starting parameters {name: [K, *shape]} with every
    name, or None for ``policy.batched_params(K)``. Returns a new dict {name: [K, *shape]}:
    adapted tensors for ``policy.adaptable_names()``, the starting tensors (same objects) for
    every other name.

    Works under ``torch.no_grad()`` too (e.g. to adapt for evaluation): gradients are enabled
    here, and a starting adaptable tensor that does not require grad is treated as a new leaf.
    """
    names = policy.adaptable_names()
    if params is None:
        if len(train_episodes) == 0:
            raise ValueError("train_episodes: empty and params is None, cannot infer the number of tasks")
        with torch.enable_grad():  # under no_grad, expand would give views that hide gradients
            params = policy.batched_params(train_episodes[0].num_tasks)
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"params: adaptable names {missing} are missing (got {sorted(params)})")
    params = dict(params)
    with torch.enable_grad():
        for name in names:
            value = params[name]
            # Detached tensors, or views made under no_grad (they claim requires_grad but route
            # no gradient to themselves): adapt from them as new leaves.
            if not value.requires_grad or (value.grad_fn is None and value._base is not None):
                params[name] = value.detach().requires_grad_(True)
        for step, episodes in enumerate(train_episodes):
            num_tasks = params[names[0]].shape[0] if names else episodes.num_tasks
            if episodes.num_tasks != num_tasks:
                raise ValueError(
                    f"train_episodes[{step}]: expected {num_tasks} tasks, got {episodes.num_tasks}"
                )
            if not names or fast_lr == 0.0:
                continue
            # Sum over tasks: task k's loss depends only on slice k, so this is every task's gradient.
            loss = inner_loss(policy, episodes, params).sum()
            grads = torch.autograd.grad(
                loss,
                [params[n] for n in names],
                create_graph=not first_order,
                materialize_grads=True,
            )
            for name, grad in zip(names, grads):
                params[name] = params[name] - fast_lr * grad
    return params
