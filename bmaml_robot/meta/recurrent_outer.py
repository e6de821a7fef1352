"""Hand-derived products of the recurrent Gaussian policies ``rnn`` and ``gru`` (see ``analytic_outer``).

Per task (tasks are the batch dim K; each step has B rows, one per episode), with the gate layout
of ``policies.recurrent`` (biases of ``bias_hh`` that add to the input pre-activation are folded
into it, the GRU candidate's ``b_hn`` stays inside the reset gate)::

    x_t = o_t W_ih^T + b_ih (+ b_hh outside),  a_t = h_{t-1} W_hh^T,  h_{-1} = 0
    rnn:  h_t = tanh(x_t + a_t)
    gru:  r = sig(x_r + a_r), z = sig(x_z + a_z), n = tanh(x_n + r (a_n + b_hn)), h_t = n + z (h_{t-1} - n)
    mu_t = h_t W_o^T + b_o

``backward`` is backpropagation through time, ``r_forward`` carries ``R{h_t}`` forward through time
and ``r_backward`` is backpropagation through time differentiated once more (every product rule
and the second derivatives of tanh and the sigmoid). Only the hidden-to-hidden matmul runs per
step; the input and output projections and every weight gradient are one batched matmul over all
steps. Frozen recurrent weights (not trainable) get no tangent and no gradient.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from bmaml_robot.policies.base import Policy
from bmaml_robot.policies.recurrent import RecurrentGaussianPolicy

from .adaptation import Params
from .analytic_outer import AnalyticOuterProblem, GaussianHead, row_sum

_W_IH, _B_IH, _W_HH, _B_HH = "cell.weight_ih", "cell.bias_ih", "cell.weight_hh", "cell.bias_hh"


class _RecurrentPass:
    """Forward pass of an ``rnn``/``gru`` policy on one batch at per-task parameters.

    params: {name: [K, *shape]}; x: [K, T * B, obs_dim] (row t * B + b); actions: [K, T * B, m].
    """

    def __init__(self, kind: str, params: Params, x: Tensor, actions: Tensor, horizon: int) -> None:
        self.kind = kind
        self.params = params
        K, N, _ = x.shape
        T = horizon
        B = N // T
        self.shape = (K, T, B)
        w_hh = params[_W_HH]
        H = w_hh.shape[-1]
        self.hidden_size = H
        self.x = x
        x_gates = torch.baddbmm(self._outside_bias(params[_B_IH], params[_B_HH]).unsqueeze(1), x,
                                params[_W_IH].mT).view(K, T, B, -1)
        self.h = x.new_empty(K, T, B, H)  # h_t
        if kind == "gru":
            self.gates = x.new_empty(K, T, B, 4 * H)  # r, z, n, a_n + b_hn
            b_hn = params[_B_HH][:, 2 * H :].unsqueeze(1)
        h = x.new_zeros(K, B, H)
        for t in range(T):
            a = torch.bmm(h, w_hh.mT)
            if kind == "rnn":
                h = torch.tanh(x_gates[:, t] + a)
            else:
                x_r, x_z, x_n = x_gates[:, t].split(H, dim=-1)
                a_r, a_z, a_n = a.split(H, dim=-1)
                r = torch.sigmoid(x_r + a_r)
                z = torch.sigmoid(x_z + a_z)
                a_n = a_n + b_hn
                n = torch.tanh(x_n + r * a_n)
                h = n + z * (h - n)
                g = self.gates[:, t]
                g[..., :H], g[..., H : 2 * H], g[..., 2 * H : 3 * H], g[..., 3 * H :] = r, z, n, a_n
            self.h[:, t] = h
        self.h_rows = self.h.view(K, N, H)
        mean = torch.baddbmm(params["mean.bias"].unsqueeze(1), self.h_rows, params["mean.weight"].mT)
        self.head = GaussianHead(mean, params["log_std"], actions)

    def _outside_bias(self, b_ih: Tensor, b_hh: Tensor) -> Tensor:
        if self.kind == "rnn":
            return b_ih + b_hh
        H = b_hh.shape[-1] // 3
        return torch.cat([b_ih[:, : 2 * H] + b_hh[:, : 2 * H], b_ih[:, 2 * H :]], dim=-1)

    @staticmethod
    def _previous(h: Tensor) -> Tensor:
        """[K, T, B, H] -> h_{t-1} for every t (zeros at t = 0), rows [K, T * B, H]."""
        K, T, B, H = h.shape
        prev = torch.cat([h.new_zeros(K, 1, B, H), h[:, :-1]], dim=1)
        return prev.view(K, T * B, H)

    def _gru_gates(self, t: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """r, z, n, a_n + b_hn of step t and h_{t-1}, each [K, B, H]."""
        r, z, n, a_n = self.gates[:, t].split(self.hidden_size, dim=-1)
        h_prev = self.h[:, t - 1] if t > 0 else torch.zeros_like(r)
        return r, z, n, a_n, h_prev

    # -- backward -------------------------------------------------------------------------------
    def backward(self, grad_mean: Tensor, names: Sequence[str], keep: bool = False) -> Params:
        """Gradients of ``sum(grad_mean * mean)`` ([K, T * B, m]) w.r.t. ``names``."""
        K, T, B = self.shape
        H = self.hidden_size
        p = self.params
        w_hh = p[_W_HH]
        grads = {"mean.weight": grad_mean.mT @ self.h_rows, "mean.bias": row_sum(grad_mean)}
        grad_h = (grad_mean @ p["mean.weight"]).view(K, T, B, H)
        G = w_hh.shape[-2]
        d_x = grad_h.new_empty(K, T, B, G)  # d loss / d x_t (input pre-activations)
        d_a = d_x if self.kind == "rnn" else grad_h.new_empty(K, T, B, G)  # d loss / d (a_t + b_hh)
        total = grad_h.new_empty(K, T, B, H) if keep else None  # d loss / d h_t, all paths
        carry = grad_h.new_zeros(K, B, H)
        for t in reversed(range(T)):
            g = grad_h[:, t] + carry
            if total is not None:
                total[:, t] = g
            if self.kind == "rnn":
                h = self.h[:, t]
                delta = g * (1.0 - h * h)
                d_x[:, t] = delta
                carry = torch.bmm(delta, w_hh)
                continue
            r, z, n, a_n, h_prev = self._gru_gates(t)
            d_n = g * (1.0 - z)
            d_xn = d_n * (1.0 - n * n)
            d_r = d_xn * a_n * r * (1.0 - r)
            d_z = g * (h_prev - n) * z * (1.0 - z)
            dx, da = d_x[:, t], d_a[:, t]
            dx[..., :H], dx[..., H : 2 * H], dx[..., 2 * H :] = d_r, d_z, d_xn
            da[..., :H], da[..., H : 2 * H], da[..., 2 * H :] = d_r, d_z, d_xn * r
            carry = torch.baddbmm(g * z, da, w_hh)
        d_x_rows, d_a_rows = d_x.view(K, T * B, G), d_a.view(K, T * B, G)
        if _W_IH in names:
            grads[_W_IH] = d_x_rows.mT @ self.x
        if _B_IH in names:
            grads[_B_IH] = row_sum(d_x_rows)
        if _W_HH in names:
            grads[_W_HH] = d_a_rows.mT @ self._previous(self.h)
        if _B_HH in names:
            grads[_B_HH] = row_sum(d_a_rows)
        if keep:
            self._grad_mean, self._total, self._d_x, self._d_a = grad_mean, total, d_x, d_a
        return {n: v for n, v in grads.items() if n in names}

    # -- forward mode ---------------------------------------------------------------------------
    def r_forward(self, v: Params) -> tuple[dict[str, Tensor], Tensor]:
        """``R{h_t}`` (and for the GRU ``R{r}, R{z}, R{n}, R{a_n + b_hn}``) and ``R{mean}``."""
        K, T, B = self.shape
        H = self.hidden_size
        p = self.params
        w_hh = p[_W_HH]
        v_hh, v_bhh = v.get(_W_HH), v.get(_B_HH)
        v_bih = v[_B_IH] if _B_IH in v else torch.zeros_like(p[_B_IH])
        r_bias = self._outside_bias(v_bih, v_bhh if v_bhh is not None else torch.zeros_like(p[_B_HH]))
        r_x = (torch.baddbmm(r_bias.unsqueeze(1), self.x, v[_W_IH].mT) if _W_IH in v
               else r_bias.unsqueeze(1).expand(K, T * B, -1)).reshape(K, T, B, -1)
        r_h_all = self.h.new_empty(K, T, B, H)
        r_gates = self.h.new_empty(K, T, B, 4 * H) if self.kind == "gru" else None
        r_h = self.h.new_zeros(K, B, H)
        for t in range(T):
            r_a = torch.bmm(r_h, w_hh.mT)
            if v_hh is not None and t > 0:
                r_a = torch.baddbmm(r_a, self.h[:, t - 1], v_hh.mT)
            if self.kind == "rnn":
                h = self.h[:, t]
                r_h = (1.0 - h * h) * (r_x[:, t] + r_a)
            else:
                r, z, n, a_n, h_prev = self._gru_gates(t)
                rx_r, rx_z, rx_n = r_x[:, t].split(H, dim=-1)
                ra_r, ra_z, ra_n = r_a.split(H, dim=-1)
                if v_bhh is not None:
                    ra_n = ra_n + v_bhh[:, 2 * H :].unsqueeze(1)
                r_r = r * (1.0 - r) * (rx_r + ra_r)
                r_z = z * (1.0 - z) * (rx_z + ra_z)
                r_n = (1.0 - n * n) * (rx_n + r_r * a_n + r * ra_n)
                r_h = r_n + r_z * (h_prev - n) + z * (r_h - r_n)
                rg = r_gates[:, t]
                rg[..., :H], rg[..., H : 2 * H], rg[..., 2 * H : 3 * H], rg[..., 3 * H :] = r_r, r_z, r_n, ra_n
            r_h_all[:, t] = r_h
        r_h_rows = r_h_all.view(K, T * B, H)
        r_mean = torch.bmm(r_h_rows, p["mean.weight"].mT)
        if "mean.weight" in v:
            r_mean = torch.baddbmm(r_mean, self.h_rows, v["mean.weight"].mT)
        if "mean.bias" in v:
            r_mean = r_mean + v["mean.bias"].unsqueeze(1)
        return {"h": r_h_all, "gates": r_gates}, r_mean

    def r_backward(self, v: Params, state: dict[str, Tensor], r_grad_mean: Tensor, names: Sequence[str]) -> Params:
        """``R{backward(grad_mean)}`` in direction v for the kept ``backward``."""
        K, T, B = self.shape
        H = self.hidden_size
        p = self.params
        w_hh, v_hh = p[_W_HH], v.get(_W_HH)
        r_h_all, r_gates = state["h"], state["gates"]
        grad_mean = self._grad_mean
        r_h_rows = r_h_all.view(K, T * B, H)
        out = {"mean.weight": r_grad_mean.mT @ self.h_rows + grad_mean.mT @ r_h_rows, "mean.bias": row_sum(r_grad_mean)}
        r_grad_h = r_grad_mean @ p["mean.weight"]
        if "mean.weight" in v:
            r_grad_h = torch.baddbmm(r_grad_h, grad_mean, v["mean.weight"])
        r_grad_h = r_grad_h.view(K, T, B, H)
        G = w_hh.shape[-2]
        r_dx = r_grad_h.new_empty(K, T, B, G)
        r_da = r_dx if self.kind == "rnn" else r_grad_h.new_empty(K, T, B, G)
        r_carry = r_grad_h.new_zeros(K, B, H)
        for t in reversed(range(T)):
            rg = r_grad_h[:, t] + r_carry
            g = self._total[:, t]
            if self.kind == "rnn":
                h, r_h = self.h[:, t], r_h_all[:, t]
                r_delta = rg * (1.0 - h * h) - 2.0 * g * h * r_h
                r_dx[:, t] = r_delta
                r_carry = torch.bmm(r_delta, w_hh)
                if v_hh is not None:
                    r_carry = torch.baddbmm(r_carry, self._d_x[:, t], v_hh)
                continue
            r, z, n, a_n, h_prev = self._gru_gates(t)
            r_r, r_z, r_n, r_an = r_gates[:, t].split(H, dim=-1)
            r_h_prev = r_h_all[:, t - 1] if t > 0 else torch.zeros_like(r)
            d_n = g * (1.0 - z)
            d_xn = d_n * (1.0 - n * n)
            d_rgate = d_xn * a_n  # d loss / d r
            d_zgate = g * (h_prev - n)  # d loss / d z
            r_dn = rg * (1.0 - z) - g * r_z
            r_dxn = r_dn * (1.0 - n * n) - 2.0 * d_n * n * r_n
            r_drgate = r_dxn * a_n + d_xn * r_an
            r_dzgate = rg * (h_prev - n) + g * (r_h_prev - r_n)
            r_dr = r_drgate * r * (1.0 - r) + d_rgate * (1.0 - 2.0 * r) * r_r
            r_dz = r_dzgate * z * (1.0 - z) + d_zgate * (1.0 - 2.0 * z) * r_z
            rdx, rda = r_dx[:, t], r_da[:, t]
            rdx[..., :H], rdx[..., H : 2 * H], rdx[..., 2 * H :] = r_dr, r_dz, r_dxn
            rda[..., :H], rda[..., H : 2 * H], rda[..., 2 * H :] = r_dr, r_dz, r_dxn * r + d_xn * r_r
            # carry: d h_{t-1} = g z + d_a W_hh  ->  R: rg z + g R{z} + R{d_a} W_hh + d_a V_hh
            r_carry = torch.baddbmm(rg * z + g * r_z, rda, w_hh)
            if v_hh is not None:
                r_carry = torch.baddbmm(r_carry, self._d_a[:, t], v_hh)
        r_dx_rows, r_da_rows = r_dx.view(K, T * B, G), r_da.view(K, T * B, G)
        if _W_IH in names:
            out[_W_IH] = r_dx_rows.mT @ self.x
        if _B_IH in names:
            out[_B_IH] = row_sum(r_dx_rows)
        if _W_HH in names:
            d_a_rows = self._d_a.view(K, T * B, G)
            out[_W_HH] = torch.baddbmm(r_da_rows.mT @ self._previous(self.h), d_a_rows.mT, self._previous(r_h_all))
        if _B_HH in names:
            out[_B_HH] = row_sum(r_da_rows)
        return {n: val for n, val in out.items() if n in names}


class RecurrentOuterProblem(AnalyticOuterProblem):
    """``OuterProblem`` for ``rnn`` and ``gru`` policies, any recurrence mode."""

    @staticmethod
    def supports(policy: object) -> bool:
        """Whether ``policy`` is an rnn/gru policy with the diagonal Gaussian these products assume."""
        if not isinstance(policy, RecurrentGaussianPolicy) or type(policy).distribution is not Policy.distribution:
            return False
        return policy.kind in ("rnn", "gru") and "log_std" in policy.trainable_names()

    def make_pass(self, params: Params, x: Tensor, actions: Tensor, horizon: int) -> _RecurrentPass:
        return _RecurrentPass(self.policy.kind, params, x, actions, horizon)  # type: ignore[arg-type]
