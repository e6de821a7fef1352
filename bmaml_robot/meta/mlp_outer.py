"""Hand-derived products of the tanh-MLP Gaussian policy (see ``analytic_outer``).

Notation, per task (tasks are the batch dim K of every tensor, rows N = T * B)::

    h_0 = x,  u_l = h_{l-1} W_l^T + b_l,  h_l = tanh(u_l)        l = 1..L,   mu = h_L W_o^T + b_o

The R-forward pass gives ``R{h_l}`` and ``R{mu}``; the R-backward pass differentiates the backward
pass once more (tanh' = 1 - h^2 gives the ``-2 g h R{h}`` term).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor

from bmaml_robot.policies.base import Policy
from bmaml_robot.policies.mlp import GaussianMLPPolicy

from .adaptation import Params
from .analytic_outer import AnalyticOuterProblem, GaussianHead, row_sum


class _MLPPass:
    """Forward pass of the MLP on one batch at per-task parameters, with what products need.

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
        mean = torch.baddbmm(params["mean.bias"].unsqueeze(1), self.hidden[-1], self.out_weight.mT)
        self.head = GaussianHead(mean, params["log_std"], actions)

    def backward(self, grad_mean: Tensor, names: Sequence[str] = (), keep: bool = False) -> dict[str, Tensor]:
        """Gradients of ``sum(grad_mean * mean)`` w.r.t. every parameter but ``log_std``."""
        grads = {"mean.weight": grad_mean.mT @ self.hidden[-1], "mean.bias": row_sum(grad_mean)}
        grad_h = grad_mean @ self.out_weight
        grad_hidden: list[Tensor] = [grad_h] * len(self.weights)
        deltas: list[Tensor] = [grad_h] * len(self.weights)
        for i in reversed(range(len(self.weights))):
            grad_hidden[i] = grad_h
            delta = grad_h * self.slopes[i]
            deltas[i] = delta
            grads[f"hidden.{i}.weight"] = delta.mT @ self.hidden[i]
            grads[f"hidden.{i}.bias"] = row_sum(delta)
            if i > 0:
                grad_h = delta @ self.weights[i]
        if keep:
            self._grad_mean, self._deltas = grad_mean, deltas
            # R{dL/du_l} = R{dL/dh_l} (1 - h_l^2) + curvature_l R{h_l}, curvature_l = -2 h_l dL/dh_l
            self._curvature = [-2.0 * g * h for g, h in zip(grad_hidden, self.hidden[1:])]
        return grads

    def r_forward(self, v: Params) -> tuple[list[Tensor], Tensor]:
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

    def r_backward(
        self, v: Params, r_hidden: list[Tensor], r_grad_mean: Tensor, names: Sequence[str] = ()
    ) -> dict[str, Tensor]:
        """``R{backward(grad_mean)}`` in direction v for the kept ``backward``."""
        out = {
            "mean.weight": r_grad_mean.mT @ self.hidden[-1] + self._grad_mean.mT @ r_hidden[-1],
            "mean.bias": row_sum(r_grad_mean),
        }
        r_grad_h = r_grad_mean @ self.out_weight + self._grad_mean @ v["mean.weight"]
        for i in reversed(range(len(self.weights))):
            r_delta = torch.addcmul(r_grad_h * self.slopes[i], self._curvature[i], r_hidden[i])
            r_grad_w = r_delta.mT @ self.hidden[i]
            if i > 0:
                r_grad_w = torch.baddbmm(r_grad_w, self._deltas[i].mT, r_hidden[i - 1])
                r_grad_h = r_delta @ self.weights[i] + self._deltas[i] @ v[f"hidden.{i}.weight"]
            out[f"hidden.{i}.weight"] = r_grad_w
            out[f"hidden.{i}.bias"] = row_sum(r_delta)
        return out


class MLPOuterProblem(AnalyticOuterProblem[list[Tensor]]):
    """The ``OuterProblem`` for a ``GaussianMLPPolicy`` (every parameter adaptable and trainable)."""

    @staticmethod
    def supports(policy: object) -> bool:
        """Whether ``policy`` is the tanh MLP with the diagonal Gaussian these products assume."""
        if not isinstance(policy, GaussianMLPPolicy) or type(policy).distribution is not Policy.distribution:
            return False
        names = {name for name, _ in policy.named_parameters()}
        return set(policy.adaptable_names()) == names == set(policy.trainable_names())

    def make_pass(self, params: Params, x: Tensor, actions: Tensor, horizon: int) -> _MLPPass:
        policy = cast(GaussianMLPPolicy, self.policy)  # the only kind supports() admits
        return _MLPPass(params, len(policy.hidden), x, actions)
