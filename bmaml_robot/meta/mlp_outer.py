"""The outer problem of MAML-TRPO for the tanh-MLP Gaussian policy, with hand-derived products.

Same quantities as ``OuterProblem`` (surrogate, its gradient, Gauss-Newton KL-Hessian products
``J^T F J``), computed with explicit batched matmuls instead of autograd's double backward, which
builds and replays a graph of ~40 matmuls and as many elementwise kernels per product. Here each
product is the minimum: one R-forward and one R-backward pass (Pearlmutter 1994) per inner step for
``J u`` and for ``J^T w``, one forward-mode pass and one backward pass for the Fisher ``F u``.
``test_meta_hvp.py`` checks every product against the autograd ``OuterProblem`` in float64.

Notation, per task (tasks are the batch dim K of every tensor, rows N = T * B)::

    h_0 = x,  u_l = h_{l-1} W_l^T + b_l,  h_l = tanh(u_l)        l = 1..L
    mu = h_L W_o^T + b_o,  z = (a - mu) e^{-s},  log pi = sum_j (-z_j^2 / 2 - s_j) - m log(2 pi) / 2

An inner (REINFORCE) loss ``L = -sum_n c_n log pi_n`` (c = mask * advantage / valid steps) has
``dL/dmu = -c z e^{-s}`` and ``dL/ds = sum_n c (1 - z^2)``; its Hessian-vector product in direction
V is the R-operator ``R{grad L}``: ``R{mu}`` from the forward pass, ``R{dL/dmu} = c e^{-s}
(R{mu} e^{-s} + 2 z V_s)``, ``R{dL/ds} = sum_n 2 c z (R{mu} e^{-s} + z V_s)``, then the backward
pass differentiated once more (tanh' = 1 - h^2 gives the ``-2 g h R{h}`` term).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from bmaml_robot.policies.base import Policy
from bmaml_robot.policies.mlp import GaussianMLPPolicy

from .adaptation import Params, TaskTangents
from .episodes import Episodes, zero_masked


def _task_first(x: Tensor) -> Tensor:
    """[T, K, B, ...] -> [K, T * B, ...] (a copy: every product then reads contiguous rows)."""
    T, K, B = x.shape[:3]
    return x.movedim(1, 0).reshape(K, T * B, *x.shape[3:])


def _row_sum(x: Tensor) -> Tensor:
    """[K, N, d] -> [K, d]."""
    return x.sum(dim=1)


class _MLPPass:
    """Forward pass of the policy on one batch at per-task parameters, with what products need.

    params: {name: [K, *shape]} of a ``GaussianMLPPolicy`` with ``num_layers`` hidden layers.
    x: [K, N, obs_dim]; actions: [K, N, act_dim].
    """

    def __init__(self, params: Params, num_layers: int, x: Tensor, actions: Tensor) -> None:
        self.weights = [params[f"hidden.{i}.weight"] for i in range(num_layers)]
        self.out_weight = params["mean.weight"]  # [K, m, d_L]
        self.hidden = [x]  # h_0 .. h_L, each [K, N, d_l]
        for i in range(num_layers):
            bias = params[f"hidden.{i}.bias"]
            self.hidden.append(torch.tanh(torch.baddbmm(bias.unsqueeze(1), self.hidden[-1], self.weights[i].mT)))
        # tanh'(u_l) = 1 - h_l^2, reused by every product
        self.slopes = [1.0 - h.square() for h in self.hidden[1:]]
        self.mean = torch.baddbmm(params["mean.bias"].unsqueeze(1), self.hidden[-1], self.out_weight.mT)
        self.log_std = params["log_std"]  # [K, m]
        self.inv_std = torch.exp(-self.log_std).unsqueeze(1)  # [K, 1, m]
        self.z = (actions - self.mean) * self.inv_std  # [K, N, m]
        self.log_prob = (
            (-0.5 * self.z.square() - self.log_std.unsqueeze(1)).sum(-1) - 0.5 * self.z.shape[-1] * math.log(2 * math.pi)
        )  # [K, N]

    def backward(self, grad_mean: Tensor) -> tuple[dict[str, Tensor], list[Tensor], list[Tensor]]:
        """Gradients of ``sum(grad_mean * mean)`` w.r.t. every parameter but ``log_std``.

        Returns ({name: [K, *shape]}, grad_hidden [dL/dh_l for l = 1..L], deltas [dL/du_l]).
        """
        grads = {"mean.weight": grad_mean.mT @ self.hidden[-1], "mean.bias": _row_sum(grad_mean)}
        grad_h = grad_mean @ self.out_weight
        grad_hidden: list[Tensor] = [grad_h] * len(self.weights)
        deltas: list[Tensor] = [grad_h] * len(self.weights)
        for i in reversed(range(len(self.weights))):
            grad_hidden[i] = grad_h
            delta = grad_h * self.slopes[i]
            deltas[i] = delta
            grads[f"hidden.{i}.weight"] = delta.mT @ self.hidden[i]
            grads[f"hidden.{i}.bias"] = _row_sum(delta)
            if i > 0:
                grad_h = delta @ self.weights[i]
        return grads, grad_hidden, deltas

    def r_forward(self, v: dict[str, Tensor]) -> tuple[list[Tensor], Tensor]:
        """Forward-mode pass in direction v ({name: [K, *shape]}): ([R h_1 .. R h_L], R mean)."""
        r_hidden: list[Tensor] = []
        r_h: Tensor | None = None  # R h_0 = 0: the observations do not depend on the parameters
        for i, weight in enumerate(self.weights):
            r_u = torch.baddbmm(v[f"hidden.{i}.bias"].unsqueeze(1), self.hidden[i], v[f"hidden.{i}.weight"].mT)
            if r_h is not None:
                r_u = torch.baddbmm(r_u, r_h, weight.mT)
            r_h = self.slopes[i] * r_u
            r_hidden.append(r_h)
        r_mean = torch.baddbmm(v["mean.bias"].unsqueeze(1), self.hidden[-1], v["mean.weight"].mT)
        r_mean = torch.baddbmm(r_mean, r_hidden[-1], self.out_weight.mT)
        return r_hidden, r_mean


class _InnerStep:
    """One inner step: the REINFORCE loss of its episodes at its starting parameters.

    Holds the forward/backward caches, so ``gradient`` is free and ``hessian_product`` is one
    R-forward and one R-backward pass.
    """

    def __init__(self, params: Params, num_layers: int, episodes: Episodes) -> None:
        mask = episodes.mask
        x = _task_first(zero_masked(episodes.observations, mask))
        actions = _task_first(zero_masked(episodes.actions, mask))
        advantages = torch.where(mask > 0, episodes.advantages, 0.0)
        weight = torch.where(mask > 0, mask, 0.0) / mask.sum(dim=(0, 2), keepdim=True).clamp_min(1e-8)
        self.c = _task_first((weight * advantages).unsqueeze(-1))  # [K, N, 1]
        self.net = _MLPPass(params, num_layers, x, actions)
        net = self.net
        self.grad_mean = -self.c * net.z * net.inv_std  # dL/dmu [K, N, m]
        self.grad, grad_hidden, self.deltas = net.backward(self.grad_mean)
        self.grad["log_std"] = _row_sum(self.c * (1.0 - net.z.square()))
        # R{dL/du_l} = R{dL/dh_l} (1 - h_l^2) + curvature_l R{h_l}, curvature_l = -2 h_l dL/dh_l
        self.curvature = [-2.0 * g * h for g, h in zip(grad_hidden, net.hidden[1:])]

    def hessian_product(self, v: dict[str, Tensor]) -> dict[str, Tensor]:
        """``H v`` per task, H the Hessian of this step's inner loss; v: {name: [K, *shape]}."""
        net = self.net
        r_hidden, r_mean = net.r_forward(v)
        v_s = v["log_std"].unsqueeze(1)  # [K, 1, m]
        scaled = r_mean * net.inv_std + net.z * v_s  # -R{z}
        r_grad_mean = self.c * net.inv_std * (scaled + net.z * v_s)
        out = {
            "log_std": _row_sum(2.0 * self.c * net.z * scaled),
            "mean.weight": r_grad_mean.mT @ net.hidden[-1] + self.grad_mean.mT @ r_hidden[-1],
            "mean.bias": _row_sum(r_grad_mean),
        }
        r_grad_h = r_grad_mean @ net.out_weight + self.grad_mean @ v["mean.weight"]
        for i in reversed(range(len(net.weights))):
            r_delta = torch.addcmul(r_grad_h * net.slopes[i], self.curvature[i], r_hidden[i])
            r_grad_w = r_delta.mT @ net.hidden[i]
            if i > 0:
                r_grad_w = torch.baddbmm(r_grad_w, self.deltas[i].mT, r_hidden[i - 1])
                r_grad_h = r_delta @ net.weights[i] + self.deltas[i] @ v[f"hidden.{i}.weight"]
            out[f"hidden.{i}.weight"] = r_grad_w
            out[f"hidden.{i}.bias"] = _row_sum(r_delta)
        return out


class MLPOuterProblem:
    """``OuterProblem`` for a ``GaussianMLPPolicy`` (every parameter adaptable and trainable).

    Same interface and values (up to float rounding): ``loss``, ``log_probs`` [T, K, B],
    ``old_dist``, ``gradient()``, ``hvp(v)``; flat vectors over ``policy.trainable_names()``.
    """

    @staticmethod
    def supports(policy: object) -> bool:
        """Whether ``policy`` is the tanh MLP with the diagonal Gaussian these products assume."""
        if not isinstance(policy, GaussianMLPPolicy) or type(policy).distribution is not Policy.distribution:
            return False
        names = {name for name, _ in policy.named_parameters()}
        return set(policy.adaptable_names()) == names == set(policy.trainable_names())

    def __init__(
        self,
        policy: GaussianMLPPolicy,
        train_episodes: Sequence[Episodes],
        valid_episodes: Episodes,
        fast_lr: float,
        first_order: bool = False,
        damping: float = 0.0,
    ) -> None:
        self.damping = damping
        self.fast_lr = fast_lr
        self.first_order = first_order
        named = dict(policy.named_parameters())
        self.tangents = TaskTangents(named, policy.trainable_names(), valid_episodes.num_tasks)
        num_layers = len(policy.hidden)
        valid = valid_episodes
        K, T, B = valid.num_tasks, valid.horizon, valid.episodes_per_task

        with torch.no_grad():
            params = {n: p.detach().expand(K, *p.shape) for n, p in named.items()}
            self.steps: list[_InnerStep] = []
            for episodes in train_episodes:
                step = _InnerStep(params, num_layers, episodes)
                self.steps.append(step)
                params = {n: params[n] - fast_lr * step.grad[n] for n in params}
            self.adapted = params

            mask = valid.mask
            net = _MLPPass(params, num_layers, _task_first(zero_masked(valid.observations, mask)),
                           _task_first(zero_masked(valid.actions, mask)))
            self.net = net
            log_probs = net.log_prob.view(K, T, B).movedim(0, 1)  # [T, K, B]
            self.log_probs = log_probs
            valid_steps = mask > 0
            per_task = mask.sum(dim=(0, 2), keepdim=True).clamp_min(1e-8)
            weight = torch.where(valid_steps, mask, 0.0) / per_task / K  # mean over steps, then tasks
            ratio = torch.exp(torch.where(valid_steps, log_probs - valid.log_probs, 0.0))
            advantages = torch.where(valid_steps, valid.advantages, 0.0)
            self.loss = -(weight * ratio * advantages).sum()
            # d loss / d log pi, then through log pi to the outputs
            d_log_prob = _task_first((-weight * ratio * advantages).unsqueeze(-1))  # [K, N, 1]
            self._loss_grad_mean = d_log_prob * net.z * net.inv_std
            self._loss_grad_log_std = _row_sum(d_log_prob * (net.z.square() - 1.0))
            self._fisher_weight = _task_first(weight.unsqueeze(-1))  # [K, N, 1]
            self._fisher_mean_weight = self._fisher_weight * net.inv_std.square()  # KL Hessian of the mean
            mean = net.mean.view(K, T, B, -1).movedim(0, 1)
            self.old_dist = policy.distribution(mean, net.log_std.view(K, 1, -1))

    # -- products -------------------------------------------------------------------------------
    def _jvp(self, u: dict[str, Tensor]) -> dict[str, Tensor]:
        """``J u``: ``u <- u - fast_lr * H_i u`` for the inner steps in order."""
        if self.first_order:
            return u
        for step in self.steps:
            hu = step.hessian_product(u)
            u = {n: u[n] - self.fast_lr * hu[n] for n in u}
        return u

    def _vjp(self, w: dict[str, Tensor]) -> dict[str, Tensor]:
        """``J^T w``: the same products in reverse order (each H_i is symmetric)."""
        if self.first_order:
            return w
        for step in reversed(self.steps):
            hw = step.hessian_product(w)
            w = {n: w[n] - self.fast_lr * hw[n] for n in w}
        return w

    def gradient(self) -> Tensor:
        """Gradient of the surrogate w.r.t. the meta-parameters, flat."""
        with torch.no_grad():
            grads, _, _ = self.net.backward(self._loss_grad_mean)
            grads["log_std"] = self._loss_grad_log_std
            return self.tangents.join(self._vjp(grads))

    def fisher_product(self, u: dict[str, Tensor]) -> dict[str, Tensor]:
        """``F u`` per task: KL Hessian of the validation policy at the adapted parameters."""
        net = self.net
        _, r_mean = net.r_forward(u)
        cotangent = self._fisher_mean_weight * r_mean
        product, _, _ = net.backward(cotangent)
        product["log_std"] = 2.0 * _row_sum(self._fisher_weight) * u["log_std"]
        return product

    def hvp(self, vector: Tensor) -> Tensor:
        """``(H + damping I) v`` with H the Hessian of the KL w.r.t. the meta-parameters."""
        with torch.no_grad():
            tangent = self._jvp(self.tangents.split(vector.detach()))
            return self.tangents.join(self._vjp(self.fisher_product(tangent))) + self.damping * vector
