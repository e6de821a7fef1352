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

from collections.abc import Sequence
from typing import cast

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
    The elementwise factors every product needs (gate slopes and their products) are computed once
    here, over all steps at a time, so the per-step loops of the products run few small kernels.
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
            rz, n, a_n = x.new_empty(K, T, B, 2 * H), x.new_empty(K, T, B, H), x.new_empty(K, T, B, H)
            b_hn = params[_B_HH][:, 2 * H :].unsqueeze(1)
        h = x.new_zeros(K, B, H)
        for t in range(T):
            a = torch.bmm(h, w_hh.mT)
            if kind == "rnn":
                h = torch.tanh(x_gates[:, t] + a, out=self.h[:, t])
                continue
            x_rz, x_n = x_gates[:, t].split([2 * H, H], dim=-1)
            a_rz, a_n_t = a.split([2 * H, H], dim=-1)
            rz_t = torch.sigmoid(x_rz + a_rz, out=rz[:, t])
            a_n_t = torch.add(a_n_t, b_hn, out=a_n[:, t])
            n_t = torch.tanh(torch.addcmul(x_n, rz_t[..., :H], a_n_t), out=n[:, t])
            h = torch.lerp(n_t, h, rz_t[..., H:], out=self.h[:, t])  # n + z (h_prev - n)
        self.h_rows = self.h.view(K, N, H)
        self.h_prev = torch.cat([self.h.new_zeros(K, 1, B, H), self.h[:, :-1]], dim=1)  # h_{t-1}
        if kind == "rnn":
            self.slope = 1.0 - self.h * self.h  # tanh'
            self.curvature = -2.0 * self.h  # tanh'' / tanh'
        else:
            r, z = rz[..., :H], rz[..., H:]
            self.r, self.z, self.a_n = r, z, a_n
            self.slope_rz = rz * (1.0 - rz)  # sigmoid' of r and z
            one_minus_z = 1.0 - z
            h_minus_n = self.h_prev - n  # d h / d z
            slope_n = 1.0 - n * n
            self.slope_n = slope_n
            self.h_minus_n = h_minus_n
            self.one_minus_z = one_minus_z
            self.c_n = one_minus_z * slope_n  # d h / d pre_n
            self.c_r = a_n * self.slope_rz[..., :H]  # d pre_n / d pre_r
            self.c_z = h_minus_n * self.slope_rz[..., H:]  # d h / d pre_z
            self.m_n = -2.0 * n * one_minus_z  # d (d h / d pre_n) / d n, divided by tanh'
            self.q_r = a_n * (1.0 - 2.0 * r)  # a_n sigmoid'' / sigmoid' of r
            self.q_z = h_minus_n * (1.0 - 2.0 * z)
        mean = torch.baddbmm(params["mean.bias"].unsqueeze(1), self.h_rows, params["mean.weight"].mT)
        self.head = GaussianHead(mean, params["log_std"], actions)

    def _outside_bias(self, b_ih: Tensor, b_hh: Tensor) -> Tensor:
        if self.kind == "rnn":
            return b_ih + b_hh
        H = b_hh.shape[-1] // 3
        return torch.cat([b_ih[:, : 2 * H] + b_hh[:, : 2 * H], b_ih[:, 2 * H :]], dim=-1)

    def _weight_grads(self, d_x: Tensor, d_a: Tensor | None, h_prev_rows: Tensor, names: Sequence[str],
                      extra_hh: tuple[Tensor, Tensor] | None = None) -> Params:
        """Gradients of the cell from d loss / d x_t and d loss / d a_t ([K, T, B, G], all steps;
        d_a only needed for the recurrent weights)."""
        K, T, B = self.shape
        G = d_x.shape[-1]
        d_x_rows = d_x.reshape(K, T * B, G)
        grads = {}
        if _W_IH in names:
            grads[_W_IH] = d_x_rows.mT @ self.x
        if _B_IH in names:
            grads[_B_IH] = row_sum(d_x_rows)
        if d_a is None:
            return grads
        d_a_rows = d_a.reshape(K, T * B, G)
        if _W_HH in names:
            grads[_W_HH] = d_a_rows.mT @ h_prev_rows
            if extra_hh is not None:
                grads[_W_HH] = torch.baddbmm(grads[_W_HH], *extra_hh)
        if _B_HH in names:
            grads[_B_HH] = row_sum(d_a_rows)
        return grads

    # -- backward -------------------------------------------------------------------------------
    def backward(self, grad_mean: Tensor, names: Sequence[str], keep: bool = False) -> dict[str, Tensor]:
        """Gradients of ``sum(grad_mean * mean)`` ([K, T * B, m]) w.r.t. ``names``."""
        K, T, B = self.shape
        H = self.hidden_size
        p = self.params
        w_hh = p[_W_HH]
        grads = {"mean.weight": grad_mean.mT @ self.h_rows, "mean.bias": row_sum(grad_mean)}
        grad_h = (grad_mean @ p["mean.weight"]).view(K, T, B, H)
        G = w_hh.shape[-2]
        d_x = grad_h.new_empty(K, T, B, G)  # d loss / d x_t (input pre-activations)
        d_an = grad_h.new_empty(K, T, B, H) if self.kind == "gru" else None  # d loss / d (a_n + b_hn)
        total = grad_h.new_empty(K, T, B, H)  # d loss / d h_t, all paths
        carry = grad_h.new_zeros(K, B, H)
        for t in reversed(range(T)):
            g = torch.add(grad_h[:, t], carry, out=total[:, t])
            if self.kind == "rnn":
                delta = torch.mul(g, self.slope[:, t], out=d_x[:, t])
                carry = torch.bmm(delta, w_hh)
                continue
            assert d_an is not None  # made for a GRU
            dx = d_x[:, t]
            d_xn = torch.mul(g, self.c_n[:, t], out=dx[..., 2 * H :])
            torch.mul(d_xn, self.c_r[:, t], out=dx[..., :H])
            torch.mul(g, self.c_z[:, t], out=dx[..., H : 2 * H])
            da_n = torch.mul(d_xn, self.r[:, t], out=d_an[:, t])
            carry = torch.baddbmm(torch.baddbmm(g * self.z[:, t], dx[..., : 2 * H], w_hh[:, : 2 * H]),
                                  da_n, w_hh[:, 2 * H :])
        trainable_hh = _W_HH in names or _B_HH in names
        d_a = self._join_a(d_x, d_an) if trainable_hh or keep else None
        grads.update(self._weight_grads(d_x, d_a, self.h_prev.view(K, T * B, H), names))
        if keep:
            assert d_a is not None  # computed when keep
            self._grad_mean, self._total, self._d_x, self._d_a = grad_mean, total, d_x, d_a
        return {n: v for n, v in grads.items() if n in names}

    def _join_a(self, d_x: Tensor, d_an: Tensor | None) -> Tensor:
        """d loss / d a_t from d loss / d x_t: the same but for the GRU candidate's part."""
        if self.kind == "rnn":
            return d_x
        assert d_an is not None  # a GRU has it
        return torch.cat([d_x[..., : 2 * self.hidden_size], d_an], dim=-1)

    # -- forward mode ---------------------------------------------------------------------------
    def r_forward(self, v: Params) -> tuple[dict[str, Tensor | None], Tensor]:
        """``R{h_t}`` (and for the GRU ``R{r, z}``, ``R{n}``, ``R{a_n + b_hn}``) and ``R{mean}``."""
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
        gru = self.kind == "gru"
        if gru:
            r_rz, r_n, r_an = (self.h.new_empty(K, T, B, 2 * H), self.h.new_empty(K, T, B, H),
                               self.h.new_empty(K, T, B, H))
            v_bhn = v_bhh[:, 2 * H :].unsqueeze(1) if v_bhh is not None else None
        r_h = self.h.new_zeros(K, B, H)
        for t in range(T):
            r_a = torch.bmm(r_h, w_hh.mT)
            if v_hh is not None and t > 0:
                r_a = torch.baddbmm(r_a, self.h[:, t - 1], v_hh.mT)
            if not gru:
                r_h = torch.mul(self.slope[:, t], r_x[:, t] + r_a, out=r_h_all[:, t])
                continue
            rx_rz, rx_n = r_x[:, t].split([2 * H, H], dim=-1)
            ra_rz, ra_n = r_a.split([2 * H, H], dim=-1)
            if v_bhn is not None:
                ra_n = ra_n + v_bhn
            ra_n = r_an[:, t].copy_(ra_n)
            rrz = torch.mul(self.slope_rz[:, t], rx_rz + ra_rz, out=r_rz[:, t])
            rn = torch.addcmul(torch.addcmul(rx_n, rrz[..., :H], self.a_n[:, t]), self.r[:, t], ra_n)
            rn = torch.mul(rn, self.slope_n[:, t], out=r_n[:, t])
            # R{h} = R{n} + R{z} (h_prev - n) + z (R{h_prev} - R{n})
            r_h = torch.addcmul(torch.addcmul(rn, rrz[..., H:], self.h_minus_n[:, t]), self.z[:, t], r_h - rn,
                                out=r_h_all[:, t])
        r_h_rows = r_h_all.view(K, T * B, H)
        r_mean = torch.bmm(r_h_rows, p["mean.weight"].mT)
        if "mean.weight" in v:
            r_mean = torch.baddbmm(r_mean, self.h_rows, v["mean.weight"].mT)
        if "mean.bias" in v:
            r_mean = r_mean + v["mean.bias"].unsqueeze(1)
        state = {"h": r_h_all, "rz": r_rz if gru else None, "n": r_n if gru else None, "a_n": r_an if gru else None}
        return state, r_mean

    def r_backward(self, v: Params, state: dict[str, Tensor | None], r_grad_mean: Tensor,
                   names: Sequence[str]) -> dict[str, Tensor]:
        """``R{backward(grad_mean)}`` in direction v for the kept ``backward``."""
        K, T, B = self.shape
        H = self.hidden_size
        p = self.params
        w_hh, v_hh = p[_W_HH], v.get(_W_HH)
        r_h_all = state["h"]
        assert r_h_all is not None  # r_forward always sets it
        grad_mean = self._grad_mean
        r_h_rows = r_h_all.view(K, T * B, H)
        out = {"mean.weight": r_grad_mean.mT @ self.h_rows + grad_mean.mT @ r_h_rows, "mean.bias": row_sum(r_grad_mean)}
        r_grad_h = r_grad_mean @ p["mean.weight"]
        if "mean.weight" in v:
            r_grad_h = torch.baddbmm(r_grad_h, grad_mean, v["mean.weight"])
        r_grad_h = r_grad_h.view(K, T, B, H)
        G = w_hh.shape[-2]
        r_dx = r_grad_h.new_empty(K, T, B, G)
        gru = self.kind == "gru"
        if gru:
            r_rz, r_n, r_an = state["rz"], state["n"], state["a_n"]
            r_dan = r_grad_h.new_empty(K, T, B, H)
        r_carry = r_grad_h.new_zeros(K, B, H)
        for t in reversed(range(T)):
            rg = r_grad_h[:, t] + r_carry
            g = self._total[:, t]
            if not gru:
                # R{g tanh'} = R{g} tanh' - 2 g h R{h}
                r_delta = torch.addcmul(rg * self.slope[:, t], g * self.curvature[:, t], r_h_all[:, t], out=r_dx[:, t])
                r_carry = torch.bmm(r_delta, w_hh)
                if v_hh is not None:
                    r_carry = torch.baddbmm(r_carry, self._d_x[:, t], v_hh)
                continue
            assert r_rz is not None and r_n is not None and r_an is not None  # a GRU's r_forward sets them
            r_r, r_z = r_rz[:, t, :, :H], r_rz[:, t, :, H:]
            d_xn = self._d_x[:, t, :, 2 * H :]
            rdx = r_dx[:, t]
            # d_n = g (1 - z); d_xn = d_n tanh'(pre_n)
            r_dn = torch.addcmul(rg * self.one_minus_z[:, t], g, r_z, value=-1.0)
            r_dxn = torch.addcmul(r_dn * self.slope_n[:, t], g * self.m_n[:, t], r_n[:, t], out=rdx[..., 2 * H :])
            # d_r = d_xn a_n sigmoid'(pre_r)
            r_drgate = torch.addcmul(r_dxn * self.a_n[:, t], d_xn, r_an[:, t])
            torch.addcmul(r_drgate * self.slope_rz[:, t, :, :H], d_xn * self.q_r[:, t], r_r, out=rdx[..., :H])
            # d_z = g (h_prev - n) sigmoid'(pre_z)
            r_h_prev_minus_rn = r_h_all[:, t - 1] - r_n[:, t] if t > 0 else -r_n[:, t]
            r_dzgate = torch.addcmul(rg * self.h_minus_n[:, t], g, r_h_prev_minus_rn)
            torch.addcmul(r_dzgate * self.slope_rz[:, t, :, H:], g * self.q_z[:, t], r_z, out=rdx[..., H : 2 * H])
            # d_an = d_xn r
            rdan = torch.addcmul(r_dxn * self.r[:, t], d_xn, r_r, out=r_dan[:, t])
            # carry: d h_{t-1} = g z + d_a W_hh
            r_carry = torch.addcmul(rg * self.z[:, t], g, r_z)
            r_carry = torch.baddbmm(torch.baddbmm(r_carry, rdx[..., : 2 * H], w_hh[:, : 2 * H]), rdan, w_hh[:, 2 * H :])
            if v_hh is not None:
                r_carry = torch.baddbmm(r_carry, self._d_a[:, t], v_hh)
        r_da = self._join_a(r_dx, r_dan if gru else None) if (_W_HH in names or _B_HH in names) else None
        extra = None
        if _W_HH in names:
            r_h_prev = torch.cat([r_h_all.new_zeros(K, 1, B, H), r_h_all[:, :-1]], dim=1).view(K, T * B, H)
            extra = (self._d_a.reshape(K, T * B, G).mT, r_h_prev)
        out.update(self._weight_grads(r_dx, r_da, self.h_prev.view(K, T * B, H), names, extra))
        return {n: val for n, val in out.items() if n in names}


class RecurrentOuterProblem(AnalyticOuterProblem[dict[str, Tensor | None]]):
    """The ``OuterProblem`` for ``rnn`` and ``gru`` policies, any recurrence mode."""

    @staticmethod
    def supports(policy: object) -> bool:
        """Whether ``policy`` is an rnn/gru policy with the diagonal Gaussian these products assume."""
        if not isinstance(policy, RecurrentGaussianPolicy) or type(policy).distribution is not Policy.distribution:
            return False
        return policy.kind in ("rnn", "gru") and "log_std" in policy.trainable_names()

    def make_pass(self, params: Params, x: Tensor, actions: Tensor, horizon: int) -> _RecurrentPass:
        policy = cast(RecurrentGaussianPolicy, self.policy)  # the only kind supports() admits
        return _RecurrentPass(policy.kind, params, x, actions, horizon)
