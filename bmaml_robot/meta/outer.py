"""The outer problem of MAML-TRPO: one interface, one factory, and the autograd reference.

For one meta-batch at the current meta-parameters theta_old (K tasks: the processed train
episodes of every inner step, and the validation episodes sampled with the adapted parameters):

1. Adapt: ``phi_k(theta)`` = the inner steps from theta (``adaptation.adapt``).
2. Surrogate on the validation episodes, with the sampling log-probs as the old policy::

       L(theta) = - mean_k [ sum_{t,b} mask * exp(log pi_phi_k(a|o) - log pi_old(a|o)) * A
                             / sum_{t,b} mask ]

   and the trust region ``KL(theta) = mean_k masked_mean KL(pi_phi_k(theta_old) || pi_phi_k(theta))``.
   Both depend on theta through the adaptation (second order: through the inner gradient too).
3. KL-Hessian products. At theta_old the adapted policy IS pi_old, so the gradient of the KL
   w.r.t. phi is zero and the Hessian w.r.t. theta is exactly the Gauss-Newton product
   ``H = J^T F J``: J = d phi / d theta, the Jacobian of the inner adaptation (``I - fast_lr *
   H_train`` per inner step, identity for first order), F the Fisher of the Gaussian policy on the
   validation episodes at phi (weighted as ``mean_kl``).

``OuterProblem`` is what ``MetaLearner`` needs of such a problem; ``make_outer_problem`` picks its
implementation for a policy: the hand-derived products (``mlp_outer``, ``recurrent_outer``: same
values, explicit batched matmuls) where they exist, else ``AutogradOuterProblem``, the reference
written with autograd, which the tests use as the oracle of every other implementation
(``exact_kl_hvp`` is the direct Pearlmutter product through the adaptation, the oracle of its
Gauss-Newton products).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import Tensor

from .adaptation import AdaptationJacobian, PolicyLike, TaskTangents, adapt, adapt_linearized
from .episodes import ProcessedEpisodes, step_weights, task_mean, zero_masked
from .mlp_outer import MLPOuterProblem
from .recurrent_outer import RecurrentOuterProblem
from .trpo import hessian_vector_product


class OuterProblem(Protocol):
    """The outer objective of one meta-batch (or one group of its tasks) at theta_old.

    Flat vectors are over ``policy.trainable_names()`` in that order (as ``flat_grad`` of the
    module parameters). Built once per outer update; ``gradient`` once, ``hvp`` many times (CG).
    """

    loss: Tensor
    """Scalar: the surrogate at theta_old."""
    log_probs: Tensor
    """float [T, K, B]: log-probs of the validation actions under the adapted policy at theta_old."""
    old_dist: torch.distributions.Distribution
    """pi_old: the adapted policy at theta_old on the validation episodes (batch shape [T, K, B]), a constant."""

    def gradient(self) -> Tensor:
        """Gradient of the surrogate w.r.t. the trainable meta-parameters, flat."""
        ...

    def hvp(self, vector: Tensor) -> Tensor:
        """``(H + damping I) v``, H the Hessian of the KL w.r.t. the trainable meta-parameters."""
        ...


def make_outer_problem(
    policy: PolicyLike,
    train_episodes: Sequence[ProcessedEpisodes],
    valid_episodes: ProcessedEpisodes,
    fast_lr: float,
    first_order: bool = False,
    damping: float = 0.0,
) -> OuterProblem:
    """The outer problem of these episodes, by the fastest implementation for ``policy``: the
    hand-derived products for the tanh MLP, RNN, GRU and LSTM (same values), autograd otherwise."""
    for implementation in (MLPOuterProblem, RecurrentOuterProblem):
        if implementation.supports(policy):
            return implementation(policy, train_episodes, valid_episodes, fast_lr, first_order, damping)
    return AutogradOuterProblem(policy, train_episodes, valid_episodes, fast_lr, first_order, damping)


def surrogate_loss(log_probs: Tensor, episodes: ProcessedEpisodes) -> Tensor:
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


def exact_kl_hvp(
    policy: PolicyLike,
    train_episodes: Sequence[ProcessedEpisodes],
    valid_episodes: ProcessedEpisodes,
    fast_lr: float,
    first_order: bool = False,
    damping: float = 0.0,
) -> Callable[[Tensor], Tensor]:
    """Reference ``v -> (H + damping I) v``, H the Hessian of the meta-batch KL at theta_old.

    The direct way (Pearlmutter's trick through the adaptation; slow): adapt with the graph
    (second order: create_graph), KL to the detached adapted policy, Pearlmutter's trick on the
    trainable parameters. Episodes must carry advantages. Slow; for tests and checks.
    """
    named = dict(policy.named_parameters())
    params = [named[n] for n in policy.trainable_names()]
    observations = zero_masked(valid_episodes.observations, valid_episodes.mask)
    with torch.enable_grad():
        adapted = adapt(policy, train_episodes, fast_lr, first_order)
        mean, log_std = policy.sequence(observations, adapted)
        dist = policy.distribution(mean, log_std)
        old_dist = policy.distribution(mean.detach(), log_std.detach())
        kl = mean_kl(old_dist, dist, valid_episodes.mask)
        return hessian_vector_product(kl, params, damping)


def _is_exp_diag_gaussian(dist: torch.distributions.Distribution, mean: Tensor, log_std: Tensor) -> bool:
    """Whether ``dist`` is ``Independent(Normal(mean, exp(log_std)), 1)`` (the Fisher below)."""
    if not isinstance(dist, torch.distributions.Independent) or dist.reinterpreted_batch_ndims != 1:
        return False
    base = dist.base_dist
    if type(base) is not torch.distributions.Normal or base.loc.shape != mean.shape:
        return False
    with torch.no_grad():
        return bool(torch.equal(base.loc, mean)) and bool(
            torch.allclose(base.scale, log_std.exp().expand_as(base.scale), rtol=1e-6, atol=0.0)
        )


class AutogradOuterProblem:
    """The reference ``OuterProblem``, by autograd: surrogate, gradient, KL-Hessian products.

    Built once per ``MetaLearner.update``: adapts (keeping, for second order, the graph of every
    inner gradient), runs the policy once on the validation episodes from the adapted parameters
    as leaves, and keeps both graphs for ``gradient`` and every ``hvp``. Flat vectors are over
    ``policy.trainable_names()`` in that order, like ``flat_grad`` of the module parameters.

    train_episodes, valid_episodes: processed (``MetaLearner.process``).
    """

    def __init__(
        self,
        policy: PolicyLike,
        train_episodes: Sequence[ProcessedEpisodes],
        valid_episodes: ProcessedEpisodes,
        fast_lr: float,
        first_order: bool = False,
        damping: float = 0.0,
    ) -> None:
        self.policy = policy
        self.damping = damping
        named = dict(policy.named_parameters())
        self.names = list(policy.trainable_names())
        self.tangents = TaskTangents(named, self.names, valid_episodes.num_tasks)
        self._train = list(train_episodes)
        self._valid = valid_episodes
        self._fast_lr = fast_lr
        self._first_order = first_order
        valid = valid_episodes
        observations = zero_masked(valid.observations, valid.mask)
        actions = zero_masked(valid.actions, valid.mask)

        self.jacobian: AdaptationJacobian | None
        if first_order:
            # d phi / d theta = I on the trainable names (the inner gradient is a constant).
            with torch.no_grad():
                adapted = adapt(policy, train_episodes, fast_lr, first_order=True)
            adapted = {n: p.detach() for n, p in adapted.items()}
            self.jacobian = None
            tangent_names = list(self.names)
        else:
            adapted, self.jacobian = adapt_linearized(policy, train_episodes, fast_lr, self.names)
            tangent_names = self.jacobian.names
        self.adapted = adapted
        self.tangent_names = tangent_names
        with torch.enable_grad():
            self.leaves = {
                n: v.detach().requires_grad_(True) if n in set(tangent_names) else v
                for n, v in adapted.items()
            }
            mean, log_std = policy.sequence(observations, self.leaves)
            dist = policy.distribution(mean, log_std)
            self.log_probs = dist.log_prob(actions)
            self.loss = surrogate_loss(self.log_probs, valid)
        self.mean, self.log_std = mean, log_std
        # pi_old: the adapted policy at theta_old, a constant.
        self.old_dist = policy.distribution(mean.detach(), log_std.detach())
        self._gaussian = _is_exp_diag_gaussian(dist, mean, log_std)
        self._exact: Callable[[Tensor], Tensor] | None = None
        self._vjp_graph: tuple[list[Tensor | None], dict[str, Tensor | None]] | None = None
        # Fisher weights of mean_kl: mask / (number of valid steps of the task) / K, 0 where masked.
        mask = valid.mask
        weight = step_weights(mask) / mask.shape[1]
        self._weight = weight.unsqueeze(-1).to(mean.dtype)  # [T, K, B, 1]
        self._inv_var = torch.exp(-2.0 * log_std.detach())

    # -- products -------------------------------------------------------------------------------
    def gradient(self) -> Tensor:
        """Gradient of the surrogate w.r.t. the trainable meta-parameters, flat."""
        leaves = [self.leaves[n] for n in self.tangent_names]
        if not self.loss.requires_grad:
            return self.tangents.join({})
        grads = torch.autograd.grad(self.loss, leaves, retain_graph=True, materialize_grads=True)
        per_task = dict(zip(self.tangent_names, grads))
        if self.jacobian is not None:
            per_task = self.jacobian.vjp(per_task)
        return self.tangents.join(per_task)

    def _output_jvp(self, tangent: dict[str, Tensor]) -> list[Tensor | None]:
        """Tangents of the policy outputs ``[d mean, d log_std]`` in direction ``tangent`` (phi).

        The "double vjp": ``g(c) = J_out^T c`` is built once with its graph (``create_graph``)
        for a dummy cotangent c; its backward w.r.t. c in direction u is ``J_out u``, so the
        forward pass over the validation episodes is never run again (forward-mode AD would).
        """
        if self._vjp_graph is None:
            outputs = [o if o.requires_grad else None for o in (self.mean, self.log_std)]
            dummies = [None if o is None else torch.zeros_like(o, requires_grad=True) for o in outputs]
            pairs = [(o, d) for o, d in zip(outputs, dummies) if o is not None]
            grads: Sequence[Tensor | None] = [None] * len(self.tangent_names)
            if pairs:
                grads = torch.autograd.grad(
                    [o for o, _ in pairs],
                    [self.leaves[n] for n in self.tangent_names],
                    grad_outputs=[d for _, d in pairs],
                    create_graph=True,
                    retain_graph=True,
                    allow_unused=True,
                )
            self._vjp_graph = (dummies, dict(zip(self.tangent_names, grads)))
        dummies, grads_by_name = self._vjp_graph
        live = [d for d in dummies if d is not None]
        leaf_grads: list[Tensor] = []
        directions: list[Tensor] = []
        for name, u in tangent.items():
            g = grads_by_name.get(name)
            if g is not None and g.requires_grad:
                leaf_grads.append(g)
                directions.append(u)
        if not leaf_grads or not live:
            return [None, None]
        results = iter(
            torch.autograd.grad(leaf_grads, live, grad_outputs=directions, retain_graph=True, allow_unused=True)
        )
        return [None if d is None else next(results) for d in dummies]

    def fisher_product(self, tangent: dict[str, Tensor]) -> dict[str, Tensor]:
        """``F u`` per task: the Fisher (KL Hessian) of the validation policy w.r.t. phi.

        ``F = J_out^T D J_out`` with D the Gaussian KL Hessian at KL = 0: ``1 / sigma^2`` for the
        mean, 2 for ``log_std``, each weighted as in ``mean_kl`` (masked per-task mean, mean over
        tasks).
        """
        d_mean, d_log_std = self._output_jvp(tangent)
        outputs, cotangents = [], []
        if d_mean is not None:
            outputs.append(self.mean)
            cotangents.append(self._weight * self._inv_var * d_mean)
        if d_log_std is not None:
            outputs.append(self.log_std)
            cotangents.append((2.0 * self._weight * d_log_std).sum_to_size(self.log_std.shape))
        if not outputs:
            return {}
        grads = torch.autograd.grad(
            outputs,
            [self.leaves[n] for n in self.tangent_names],
            grad_outputs=cotangents,
            retain_graph=True,
            materialize_grads=True,
        )
        return dict(zip(self.tangent_names, grads))

    def hvp(self, vector: Tensor) -> Tensor:
        """``(H + damping I) v`` with H the Hessian of the KL w.r.t. the trainable meta-parameters."""
        if not self._gaussian:  # not the diagonal Gaussian the Fisher assumes: the direct way
            if self._exact is None:
                self._exact = exact_kl_hvp(self.policy, self._train, self._valid, self._fast_lr,
                                           self._first_order, self.damping)
            return self._exact(vector)
        tangent = self.tangents.split(vector.detach())
        if self.jacobian is not None:
            tangent = self.jacobian.jvp(tangent)
        product = self.fisher_product(tangent)
        if self.jacobian is not None:
            product = self.jacobian.vjp(product)
        return self.tangents.join(product) + self.damping * vector
