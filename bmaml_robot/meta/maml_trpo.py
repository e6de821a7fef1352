"""MAML-TRPO outer step (Finn et al. 2017; as in pytorch-maml by T. Deleu).

One meta-iteration, given for each of the K tasks the train episodes of every inner step and the
validation episodes sampled with the adapted parameters:

1. Adapt: ``phi_k(theta)`` = inner steps from the meta-parameters theta (``adapt``).
2. Surrogate on validation episodes, with the sampling log-probs as the old policy::

       L(theta) = - mean_k [ sum_{t,b} mask * exp(log pi_phi_k(a|o) - log pi_old(a|o)) * A
                             / sum_{t,b} mask ]

   and the trust region ``KL(theta) = mean_k masked_mean KL(pi_phi_k(theta_old) || pi_phi_k(theta))``.
   Both depend on theta through the adaptation (second order: through the inner gradient too).
3. TRPO on the trainable meta-parameters only (``policy.trainable_names()``): conjugate gradient
   on the KL Hessian, trust-region scaling, backtracking line search (``trpo.py``). Frozen
   parameters get no gradient, no step, nothing.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from .adaptation import Params, PolicyLike, adapt
from .advantages import compute_advantages
from .episodes import Episodes, task_mean, zero_masked
from .trpo import (
    backtracking_line_search,
    conjugate_gradient,
    flat_grad,
    hessian_vector_product,
    trust_region_step,
)


def surrogate_loss(log_probs: Tensor, episodes: Episodes) -> Tensor:
    """TRPO surrogate (to minimise), a scalar.

    log_probs: [T, K, B] log-probs of ``episodes.actions`` under the current (adapted) policy;
    ``episodes.log_probs`` is the sampling policy. The log-ratio and the advantages are zeroed at
    masked steps before ``exp`` so garbage there cannot produce NaN gradients.
    """
    valid = episodes.mask > 0
    log_ratio = torch.where(valid, log_probs - episodes.log_probs, 0.0)
    advantages = torch.where(valid, episodes.advantages, 0.0)
    return -task_mean(torch.exp(log_ratio) * advantages, episodes.mask).mean()


def mean_kl(
    old: torch.distributions.Distribution, new: torch.distributions.Distribution, mask: Tensor
) -> Tensor:
    """KL(old || new), masked mean per task then mean over tasks, a scalar. mask: [T, K, B]."""
    return task_mean(torch.distributions.kl_divergence(old, new), mask).mean()


class MetaLearner:
    """MAML with TRPO outer updates, for any policy following the ``bmaml_robot.policies`` contract.

    Hyper-parameters are plain arguments (configs live elsewhere); the number of inner steps is
    ``len(train_episodes_per_step)`` given to ``step``.
    """

    def __init__(
        self,
        policy: PolicyLike,
        *,
        fast_lr: float,
        first_order: bool = False,
        max_kl: float = 1e-2,
        cg_iters: int = 10,
        cg_damping: float = 1e-5,
        ls_max_steps: int = 15,
        ls_backtrack: float = 0.8,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
    ) -> None:
        if fast_lr < 0:
            raise ValueError(f"fast_lr: expected >= 0, got {fast_lr}")
        if max_kl <= 0:
            raise ValueError(f"max_kl: expected > 0, got {max_kl}")
        if cg_iters < 1:
            raise ValueError(f"cg_iters: expected >= 1, got {cg_iters}")
        if cg_damping < 0:
            raise ValueError(f"cg_damping: expected >= 0, got {cg_damping}")
        if ls_max_steps < 1:
            raise ValueError(f"ls_max_steps: expected >= 1, got {ls_max_steps}")
        if not 0.0 < ls_backtrack < 1.0:
            raise ValueError(f"ls_backtrack: expected in (0, 1), got {ls_backtrack}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma: expected in [0, 1], got {gamma}")
        if not 0.0 <= gae_lambda <= 1.0:
            raise ValueError(f"gae_lambda: expected in [0, 1], got {gae_lambda}")
        self.policy = policy
        self.fast_lr = fast_lr
        self.first_order = first_order
        self.max_kl = max_kl
        self.cg_iters = cg_iters
        self.cg_damping = cg_damping
        self.ls_max_steps = ls_max_steps
        self.ls_backtrack = ls_backtrack
        self.gamma = gamma
        self.gae_lambda = gae_lambda

        self._trainable_params()  # fail early on an inconsistent policy

    def _trainable_params(self) -> list[Tensor]:
        """The module parameters named by ``policy.trainable_names()`` (checked), in that order."""
        named = dict(self.policy.named_parameters())  # type: ignore[attr-defined]
        names = list(self.policy.trainable_names())
        for name in names:
            if name not in named or not named[name].requires_grad:
                raise ValueError(
                    f"policy.trainable_names(): {name!r} is not a parameter with requires_grad=True"
                )
        unknown = [n for n in self.policy.adaptable_names() if n not in named]
        if unknown:
            raise ValueError(f"policy.adaptable_names(): {unknown} are not parameters of the policy")
        return [named[n] for n in names]

    # -- data ------------------------------------------------------------------------------
    def process(self, episodes: Episodes) -> Episodes:
        """Episodes with (per-task normalised) advantages; computed only if missing."""
        if episodes.advantages is not None:
            episodes.validate()
            return episodes
        return compute_advantages(episodes, self.gamma, self.gae_lambda, normalize=True)

    def adapted_params(self, train_episodes_per_step: Sequence[Episodes]) -> Params:
        """Detached adapted parameters {name: [K, *shape]}, e.g. to sample the next episodes."""
        train = [self.process(e) for e in train_episodes_per_step]
        params = adapt(self.policy, train, self.fast_lr, first_order=True)
        return {name: value.detach() for name, value in params.items()}

    # -- outer step ------------------------------------------------------------------------
    def step(
        self, train_episodes_per_step: Sequence[Episodes], valid_episodes: Episodes
    ) -> dict[str, Any]:
        """One MAML-TRPO update of the trainable meta-parameters, in place.

        train_episodes_per_step: the episodes of inner step i, sampled with the parameters after
        i inner steps (advantages computed here if None). valid_episodes: sampled with the fully
        adapted parameters. All with the same K tasks.

        Returns figures for logging: ``loss_before``/``loss_after`` (surrogate), ``kl_before``
        (sample estimate of KL(sampling policy || adapted policy) at the old parameters, ~0 when
        sampler and learner agree), ``kl_after`` (KL of the accepted step, 0 if rejected),
        ``ls_steps`` (1-based trial index, 0 if rejected), ``step_accepted``, ``step_fraction``,
        ``grad_norm`` (surrogate gradient), ``step_norm`` (applied step), ``return_before``
        (mean undiscounted return of the first train episodes) and ``return_after`` (of the
        validation episodes).
        """
        policy = self.policy
        train = [self.process(e) for e in train_episodes_per_step]
        valid = self.process(valid_episodes)
        for i, episodes in enumerate(train):
            if episodes.num_tasks != valid.num_tasks:
                raise ValueError(
                    f"train_episodes_per_step[{i}]: expected {valid.num_tasks} tasks "
                    f"(as valid_episodes), got {episodes.num_tasks}"
                )
        observations = zero_masked(valid.observations, valid.mask)
        actions = zero_masked(valid.actions, valid.mask)
        params = self._trainable_params()
        if not params:
            raise ValueError("policy.trainable_names(): empty, there is nothing to meta-train")

        with torch.enable_grad():
            adapted = adapt(policy, train, self.fast_lr, self.first_order)
            mean, log_std = policy.sequence(observations, adapted)
            dist = policy.distribution(mean, log_std)
            # pi_old: the adapted policy at theta_old, a constant.
            old_dist = policy.distribution(mean.detach(), log_std.detach())
            log_probs = dist.log_prob(actions)
            loss = surrogate_loss(log_probs, valid)
            kl = mean_kl(old_dist, dist, valid.mask)

            grad = flat_grad(loss, params, retain_graph=True)
            hvp = hessian_vector_product(kl, params, self.cg_damping)
            direction = conjugate_gradient(hvp, grad, self.cg_iters)  # H^{-1} g
            full_step = trust_region_step(direction, hvp(direction), self.max_kl)

        loss_before = loss.item()
        with torch.no_grad():
            valid_mask = valid.mask > 0
            kl_before = float(
                task_mean(torch.where(valid_mask, valid.log_probs - log_probs, 0.0), valid.mask).mean()
            )
        del adapted, mean, log_std, dist, log_probs, loss, kl, hvp  # free the second-order graph

        def evaluate() -> tuple[float, float]:
            # Adapted values are the same for first and second order: no graph needed here.
            with torch.no_grad():
                new_params = adapt(policy, train, self.fast_lr, first_order=True)
                new_params = {n: p.detach() for n, p in new_params.items()}
                new_dist = policy.distribution(*policy.sequence(observations, new_params))
                new_loss = surrogate_loss(new_dist.log_prob(actions), valid)
                new_kl = mean_kl(old_dist, new_dist, valid.mask)
            return float(new_loss), float(new_kl)

        if full_step is None:
            result = None
        else:
            result = backtracking_line_search(
                params,
                full_step,
                evaluate,
                loss_before,
                self.max_kl,
                self.ls_max_steps,
                self.ls_backtrack,
            )
        accepted = result is not None and result.accepted
        fraction = result.step_fraction if result is not None else 0.0
        return {
            "loss_before": loss_before,
            "loss_after": result.loss if result is not None else loss_before,
            "kl_before": kl_before,
            "kl_after": result.kl if result is not None else 0.0,
            "ls_steps": result.num_steps if result is not None else 0,
            "step_accepted": accepted,
            "step_fraction": fraction,
            "grad_norm": float(grad.norm()),
            "step_norm": float(full_step.norm()) * fraction if full_step is not None else 0.0,
            "return_before": float(train[0].episode_returns().mean()) if train else float("nan"),
            "return_after": float(valid.episode_returns().mean()),
        }
