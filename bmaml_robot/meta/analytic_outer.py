"""The outer problem of MAML-TRPO with hand-derived products, for policies that provide a "pass".

Same quantities as ``outer.AutogradOuterProblem`` (surrogate, its gradient, Gauss-Newton KL-Hessian products
``J^T F J``), computed with explicit batched matmuls instead of autograd's double backward, which
builds and replays a graph of many small kernels per product. Each product is the minimum: one
R-forward and one R-backward pass (Pearlmutter 1994) per inner step for ``J u`` and for ``J^T w``,
one forward-mode pass and one backward pass for the Fisher ``F u``. ``test_meta_hvp.py`` checks
every product against ``AutogradOuterProblem`` in float64.

The network-specific maths lives in a *pass* (``mlp_outer._MLPPass``,
``recurrent_outer._RecurrentPass``): the forward pass of one batch at per-task parameters, its
backward pass for a cotangent of the mean, the R-forward pass in a parameter direction and the
R-backward pass (the backward pass differentiated once more in that direction). This module holds
what does not depend on the network: the diagonal-Gaussian head, the REINFORCE inner loss, the
surrogate, the adaptation's Jacobian products and the Fisher.

Gaussian head, per task (rows N = T * B)::

    z = (a - mu) e^{-s},  log pi = sum_j (-z_j^2 / 2 - s_j) - m log(2 pi) / 2

An inner (REINFORCE) loss ``L = -sum_n c_n log pi_n`` (c = mask * advantage / valid steps) has
``dL/dmu = -c z e^{-s}`` and ``dL/ds = sum_n c (1 - z^2)``; in direction V: ``R{dL/dmu} = c e^{-s}
(R{mu} e^{-s} + 2 z V_s)`` and ``R{dL/ds} = sum_n 2 c z (R{mu} e^{-s} + z V_s)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

import torch
from torch import Tensor

from .adaptation import Params, PolicyLike, TaskTangents
from .episodes import ProcessedEpisodes, step_weights, zero_masked


def task_first(x: Tensor) -> Tensor:
    """[T, K, B, ...] -> [K, T * B, ...] (a copy: every product then reads contiguous rows; row
    ``t * B + b`` is step t of episode b)."""
    T, K, B = x.shape[:3]
    return x.movedim(1, 0).reshape(K, T * B, *x.shape[3:])


def row_sum(x: Tensor) -> Tensor:
    """[K, N, d] -> [K, d]."""
    return x.sum(dim=1)


class GaussianHead:
    """The diagonal Gaussian of the mean ``[K, N, m]`` and ``log_std [K, m]`` at ``actions``."""

    def __init__(self, mean: Tensor, log_std: Tensor, actions: Tensor) -> None:
        self.mean = mean
        self.log_std = log_std  # [K, m]
        self.inv_std = torch.exp(-log_std).unsqueeze(1)  # [K, 1, m]
        self.z = (actions - mean) * self.inv_std  # [K, N, m]
        self.log_prob = (
            (-0.5 * self.z.square() - log_std.unsqueeze(1)).sum(-1) - 0.5 * self.z.shape[-1] * math.log(2 * math.pi)
        )  # [K, N]


#: What a pass's ``r_forward`` hands to its ``r_backward`` (each pass has its own).
RState = TypeVar("RState")


class NetworkPass(Protocol[RState]):
    """One batch through the policy at per-task parameters ``{name: [K, *shape]}``."""

    head: GaussianHead

    def backward(self, grad_mean: Tensor, names: Sequence[str], keep: bool = False) -> dict[str, Tensor]:
        """Gradients of ``sum(grad_mean * mean)`` ([K, N, m]) w.r.t. ``names`` (not ``log_std``);
        ``keep``: remember what ``r_backward`` needs."""
        ...

    def r_forward(self, v: Params) -> tuple[RState, Tensor]:
        """Forward mode in direction v (missing names: zero): (state for r_backward, R{mean})."""
        ...

    def r_backward(self, v: Params, state: RState, r_grad_mean: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
        """``R{backward(grad_mean)}`` in direction v, for the last kept ``backward``."""
        ...


class _InnerStep(Generic[RState]):
    """One inner step: the REINFORCE loss of its episodes at its starting parameters.

    Holds the forward/backward caches, so ``grad`` is free and ``hessian_product`` is one
    R-forward and one R-backward pass.
    """

    def __init__(self, net: NetworkPass[RState], episodes: ProcessedEpisodes, adaptable: Sequence[str]) -> None:
        mask = episodes.mask
        advantages = torch.where(mask > 0, episodes.advantages, 0.0)
        weight = step_weights(mask)
        self.c = task_first((weight * advantages).unsqueeze(-1))  # [K, N, 1]
        self.net = net
        head = net.head
        self.grad_mean = -self.c * head.z * head.inv_std  # dL/dmu [K, N, m]
        self.grad = net.backward(self.grad_mean, [n for n in adaptable if n != "log_std"], keep=True)
        if "log_std" in adaptable:
            self.grad["log_std"] = row_sum(self.c * (1.0 - head.z.square()))

    def hessian_product(self, v: Params, names: Sequence[str]) -> dict[str, Tensor]:
        """``H v`` per task for ``names``, H the Hessian of this step's inner loss; v:
        ``{name: [K, *shape]}`` (a missing name is a zero direction)."""
        head = self.net.head
        state, r_mean = self.net.r_forward(v)
        v_s = v["log_std"].unsqueeze(1) if "log_std" in v else torch.zeros_like(head.inv_std)  # [K, 1, m]
        scaled = r_mean * head.inv_std + head.z * v_s  # -R{z}
        r_grad_mean = self.c * head.inv_std * (scaled + head.z * v_s)
        out = self.net.r_backward(v, state, r_grad_mean, [n for n in names if n != "log_std"])
        if "log_std" in names:
            out["log_std"] = row_sum(2.0 * self.c * head.z * scaled)
        return out


class AnalyticOuterProblem(Generic[RState]):
    """An ``outer.OuterProblem`` with hand-derived products; subclasses say which policies and build passes.

    Same values as ``AutogradOuterProblem`` (up to float rounding): ``loss``, ``log_probs`` [T, K, B],
    ``old_dist``, ``gradient()``, ``hvp(v)``; flat vectors over ``policy.trainable_names()``.
    Adaptation moves ``policy.adaptable_names()`` only: ``J_i = I - fast_lr P_A H_i``.
    """

    @staticmethod
    def supports(policy: object) -> bool:
        raise NotImplementedError

    def make_pass(self, params: Params, x: Tensor, actions: Tensor, horizon: int) -> NetworkPass[RState]:
        """The pass of one batch: x [K, T * B, obs_dim], actions [K, T * B, act_dim]."""
        raise NotImplementedError

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
        self.fast_lr = fast_lr
        self.first_order = first_order
        named = dict(policy.named_parameters())
        self.names = list(policy.trainable_names())
        adaptable = set(policy.adaptable_names())
        self.adaptable = [n for n in named if n in adaptable]
        self.tangents = TaskTangents(named, self.names, valid_episodes.num_tasks)
        valid = valid_episodes
        K, T, B = valid.num_tasks, valid.horizon, valid.episodes_per_task

        with torch.no_grad():
            params = {n: p.detach().expand(K, *p.shape) for n, p in named.items()}
            self.steps: list[_InnerStep[RState]] = []
            for episodes in train_episodes:
                net = self.make_pass(params, task_first(zero_masked(episodes.observations, episodes.mask)),
                                     task_first(zero_masked(episodes.actions, episodes.mask)), episodes.horizon)
                step = _InnerStep(net, episodes, self.adaptable)
                self.steps.append(step)
                params = {n: params[n] - fast_lr * step.grad[n] if n in step.grad else params[n] for n in params}
            self.adapted = params

            mask = valid.mask
            net = self.make_pass(params, task_first(zero_masked(valid.observations, mask)),
                                 task_first(zero_masked(valid.actions, mask)), T)
            self.net = net
            head = net.head
            log_probs = head.log_prob.view(K, T, B).movedim(0, 1)  # [T, K, B]
            self.log_probs = log_probs
            valid_steps = mask > 0
            weight = step_weights(mask) / K  # mean over steps, then tasks
            ratio = torch.exp(torch.where(valid_steps, log_probs - valid.log_probs, 0.0))
            advantages = torch.where(valid_steps, valid.advantages, 0.0)
            self.loss = -(weight * ratio * advantages).sum()
            # d loss / d log pi, then through log pi to the outputs
            d_log_prob = task_first((-weight * ratio * advantages).unsqueeze(-1))  # [K, N, 1]
            self._loss_grad_mean = d_log_prob * head.z * head.inv_std
            self._loss_grad_log_std = row_sum(d_log_prob * (head.z.square() - 1.0))
            self._fisher_weight = task_first(weight.unsqueeze(-1))  # [K, N, 1]
            self._fisher_mean_weight = self._fisher_weight * head.inv_std.square()  # KL Hessian of the mean
            mean = head.mean.view(K, T, B, -1).movedim(0, 1)
            self.old_dist = policy.distribution(mean, head.log_std.view(K, 1, -1))
        self._net_names = [n for n in self.names if n != "log_std"]

    # -- products -------------------------------------------------------------------------------
    def _jvp(self, u: Params) -> Params:
        """``J u``: ``u <- u - fast_lr * P_A H_i u`` for the inner steps in order."""
        if self.first_order:
            return u
        for step in self.steps:
            hu = step.hessian_product(u, self.adaptable)
            u = {n: u[n] - self.fast_lr * hu[n] if n in hu else u[n] for n in u}
        return u

    def _vjp(self, w: Params) -> Params:
        """``J^T w``: ``w <- w - fast_lr * H_i P_A w`` in reverse order (each H_i is symmetric)."""
        if self.first_order:
            return w
        for step in reversed(self.steps):
            hw = step.hessian_product({n: w[n] for n in self.adaptable if n in w}, self.names)
            w = {n: w[n] - self.fast_lr * hw[n] for n in w}
        return w

    def gradient(self) -> Tensor:
        """Gradient of the surrogate w.r.t. the meta-parameters, flat."""
        with torch.no_grad():
            grads = self.net.backward(self._loss_grad_mean, self._net_names)
            if "log_std" in self.names:
                grads["log_std"] = self._loss_grad_log_std
            return self.tangents.join(self._vjp(grads))

    def fisher_product(self, u: Params) -> dict[str, Tensor]:
        """``F u`` per task: KL Hessian of the validation policy at the adapted parameters."""
        _, r_mean = self.net.r_forward(u)
        product = self.net.backward(self._fisher_mean_weight * r_mean, self._net_names)
        if "log_std" in u:
            product["log_std"] = 2.0 * row_sum(self._fisher_weight) * u["log_std"]
        return product

    def hvp(self, vector: Tensor) -> Tensor:
        """``(H + damping I) v`` with H the Hessian of the KL w.r.t. the meta-parameters."""
        with torch.no_grad():
            tangent = self._jvp(self.tangents.split(vector.detach()))
            return self.tangents.join(self._vjp(self.fisher_product(tangent))) + self.damping * vector
