"""Hand-derived products of the recurrent Gaussian policies ``rnn``, ``gru``, ``lstm`` (see ``analytic_outer``).

Per task (tasks are the batch dim K; each step has B rows, one per episode), with the gate layout
of ``policies.recurrent`` (biases of ``bias_hh`` that add to the input pre-activation are folded
into it, the GRU candidate's ``b_hn`` stays inside the reset gate)::

    x_t = o_t W_ih^T + b_ih (+ b_hh outside),  a_t = h_{t-1} W_hh^T,  h_{-1} = 0
    rnn:  h_t = tanh(x_t + a_t)
    gru:  r = sig(x_r + a_r), z = sig(x_z + a_z), n = tanh(x_n + r (a_n + b_hn)), h_t = n + z (h_{t-1} - n)
    lstm: see ``_LSTMPass``
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
        x_gates = self._start(params, x, horizon)
        K, T, B = self.shape
        H = self.hidden_size
        w_hh = params[_W_HH]
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
        self.h_rows = self.h.view(K, T * B, H)
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

    def _start(self, params: Params, x: Tensor, horizon: int) -> Tensor:
        """Keep the batch's shapes and parameters; the input pre-activations of all steps, [K, T, B, G]."""
        self.params, self.x = params, x
        K, N, _ = x.shape
        self.shape = (K, horizon, N // horizon)
        self.hidden_size = params[_W_HH].shape[-1]
        bias = self._outside_bias(params[_B_IH], params[_B_HH]).unsqueeze(1)
        return torch.baddbmm(bias, x, params[_W_IH].mT).view(*self.shape, -1)

    def _outside_bias(self, b_ih: Tensor, b_hh: Tensor) -> Tensor:
        if self.kind != "gru":  # rnn, lstm: every recurrent bias adds to the input pre-activation
            return b_ih + b_hh
        H = b_hh.shape[-1] // 3
        return torch.cat([b_ih[:, : 2 * H] + b_hh[:, : 2 * H], b_ih[:, 2 * H :]], dim=-1)

    def _r_input(self, v: Params) -> Tensor:
        """``R{x_t}`` [K, T, B, G]: the input pre-activations (and outside biases) in direction v."""
        K, T, B = self.shape
        p = self.params
        v_bih = v[_B_IH] if _B_IH in v else torch.zeros_like(p[_B_IH])
        v_bhh = v[_B_HH] if _B_HH in v else torch.zeros_like(p[_B_HH])
        r_bias = self._outside_bias(v_bih, v_bhh)
        r_x = (torch.baddbmm(r_bias.unsqueeze(1), self.x, v[_W_IH].mT) if _W_IH in v
               else r_bias.unsqueeze(1).expand(K, T * B, -1))
        return r_x.reshape(K, T, B, -1)

    def _r_mean(self, v: Params, r_h_all: Tensor) -> Tensor:
        """``R{mean}`` [K, T * B, m] from ``R{h_t}`` [K, T, B, H]."""
        K, T, B = self.shape
        p = self.params
        r_mean = torch.bmm(r_h_all.view(K, T * B, -1), p["mean.weight"].mT)
        if "mean.weight" in v:
            r_mean = torch.baddbmm(r_mean, self.h_rows, v["mean.weight"].mT)
        if "mean.bias" in v:
            r_mean = r_mean + v["mean.bias"].unsqueeze(1)
        return r_mean

    def _head_backward(self, grad_mean: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """The output layer's gradients and d loss / d h_t [K, T, B, H] through it."""
        K, T, B = self.shape
        grads = {"mean.weight": grad_mean.mT @ self.h_rows, "mean.bias": row_sum(grad_mean)}
        return grads, (grad_mean @ self.params["mean.weight"]).view(K, T, B, -1)

    def _r_head_backward(self, v: Params, r_h_all: Tensor, r_grad_mean: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """``R{_head_backward(grad_mean)}`` for the kept ``grad_mean``."""
        K, T, B = self.shape
        grad_mean = self._grad_mean
        out = {"mean.weight": r_grad_mean.mT @ self.h_rows + grad_mean.mT @ r_h_all.view(K, T * B, -1),
               "mean.bias": row_sum(r_grad_mean)}
        r_grad_h = r_grad_mean @ self.params["mean.weight"]
        if "mean.weight" in v:
            r_grad_h = torch.baddbmm(r_grad_h, grad_mean, v["mean.weight"])
        return out, r_grad_h.view(K, T, B, -1)

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
        grads, grad_h = self._head_backward(grad_mean)
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
        if self.kind != "gru":
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
        r_x = self._r_input(v)
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
        state = {"h": r_h_all, "rz": r_rz if gru else None, "n": r_n if gru else None, "a_n": r_an if gru else None}
        return state, self._r_mean(v, r_h_all)

    def r_backward(self, v: Params, state: dict[str, Tensor | None], r_grad_mean: Tensor,
                   names: Sequence[str]) -> dict[str, Tensor]:
        """``R{backward(grad_mean)}`` in direction v for the kept ``backward``."""
        K, T, B = self.shape
        H = self.hidden_size
        p = self.params
        w_hh, v_hh = p[_W_HH], v.get(_W_HH)
        r_h_all = state["h"]
        assert r_h_all is not None  # r_forward always sets it
        out, r_grad_h = self._r_head_backward(v, r_h_all, r_grad_mean)
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


class _LSTMPass(_RecurrentPass):
    """The same pass for an ``lstm`` policy (gates i, f, g, o as ``nn.LSTMCell``; every bias outside)::

        p_t = x_t + h_{t-1} W_hh^T,  [i, f, o] = sig(p_i, p_f, p_o),  g = tanh(p_g)
        c_t = f c_{t-1} + i g,  h_t = o tanh(c_t)

    With ``u = [g, c_{t-1}, i]`` (what d c_t / d [i, f, g] is) and s the gate slopes, the backward
    step is ``g_c = carry_c + g_h o tanh'(c)``, ``d p = [g_c u s_ifg, g_h tanh(c) s_o]``,
    ``carry_h = d p W_hh``, ``carry_c = g_c f``. Its R-operator's terms that hold no R of a carry
    are computed over all steps before the loop, so each step of ``r_backward`` runs a few kernels.
    """

    def __init__(self, params: Params, x: Tensor, actions: Tensor, horizon: int) -> None:  # noqa: D107
        self.kind = "lstm"
        x_gates = self._start(params, x, horizon)
        K, T, B = self.shape
        H = self.hidden_size
        w_hh = params[_W_HH]
        gates = x.new_empty(K, T, B, 4 * H)  # i, f, g, o after their nonlinearities
        c_all, tanh_c = x.new_empty(K, T, B, H), x.new_empty(K, T, B, H)
        self.h = x.new_empty(K, T, B, H)
        h, c = x.new_zeros(K, B, H), x.new_zeros(K, B, H)
        for t in range(T):
            pre = torch.baddbmm(x_gates[:, t], h, w_hh.mT)
            act = torch.sigmoid(pre, out=gates[:, t])
            torch.tanh(pre[..., 2 * H : 3 * H], out=act[..., 2 * H : 3 * H])
            i, f, g, o = act.chunk(4, dim=-1)
            c = torch.addcmul(f * c, i, g, out=c_all[:, t])
            h = torch.mul(o, torch.tanh(c, out=tanh_c[:, t]), out=self.h[:, t])
        self.h_rows = self.h.view(K, T * B, H)
        zero = x.new_zeros(K, 1, B, H)
        self.h_prev = torch.cat([zero, self.h[:, :-1]], dim=1)
        c_prev = torch.cat([zero, c_all[:, :-1]], dim=1)
        i, f, g, o = gates.chunk(4, dim=-1)
        self.f, self.o, self.tanh_c = f, o, tanh_c
        slope = gates * (1.0 - gates)  # sigmoid'; the g block is replaced by tanh'
        slope[..., 2 * H : 3 * H] = 1.0 - g * g
        self.slope = slope
        self.slope_c = 1.0 - tanh_c * tanh_c  # tanh'(c)
        self.o_slope_c = o * self.slope_c  # d h / d c
        self.u = torch.cat([g, c_prev, i], dim=-1)  # d c / d [i, f, g]
        self.coeff = torch.cat([self.u * slope[..., : 3 * H], tanh_c * slope[..., 3 * H :]], dim=-1)
        curvature = 1.0 - 2.0 * gates  # d sigmoid' / d sigmoid (R{s} = curvature R{gate})
        curvature[..., 2 * H : 3 * H] = -2.0 * g  # d tanh' / d tanh
        self.curvature = curvature
        mean = torch.baddbmm(params["mean.bias"].unsqueeze(1), self.h_rows, params["mean.weight"].mT)
        self.head = GaussianHead(mean, params["log_std"], actions)

    def backward(self, grad_mean: Tensor, names: Sequence[str], keep: bool = False) -> dict[str, Tensor]:
        """Gradients of ``sum(grad_mean * mean)`` ([K, T * B, m]) w.r.t. ``names``."""
        K, T, B = self.shape
        H = self.hidden_size
        w_hh = self.params[_W_HH]
        grads, grad_h = self._head_backward(grad_mean)
        d_x = grad_h.new_empty(K, T, B, 4 * H)  # d loss / d p_t
        total_h, total_c = grad_h.new_empty(K, T, B, H), grad_h.new_empty(K, T, B, H)
        carry_h, carry_c = grad_h.new_zeros(K, B, H), grad_h.new_zeros(K, B, H)
        for t in reversed(range(T)):
            g_h = torch.add(grad_h[:, t], carry_h, out=total_h[:, t])
            g_c = torch.addcmul(carry_c, g_h, self.o_slope_c[:, t], out=total_c[:, t])
            dx = d_x[:, t]
            torch.mul(self.coeff[:, t, :, : 3 * H].view(K, B, 3, H), g_c.unsqueeze(-2),
                      out=dx[..., : 3 * H].view(K, B, 3, H))
            torch.mul(self.coeff[:, t, :, 3 * H :], g_h, out=dx[..., 3 * H :])
            carry_h = torch.bmm(dx, w_hh)
            carry_c = g_c * self.f[:, t]
        grads.update(self._weight_grads(d_x, d_x, self.h_prev.view(K, T * B, H), names))
        if keep:
            self._grad_mean, self._total_h, self._total_c, self._d_x = grad_mean, total_h, total_c, d_x
        return {n: v for n, v in grads.items() if n in names}

    def r_forward(self, v: Params) -> tuple[dict[str, Tensor | None], Tensor]:
        """``R{i, f, g, o}``, ``R{c_t}``, ``R{h_t}`` and ``R{mean}``."""
        K, T, B = self.shape
        H = self.hidden_size
        w_hh, v_hh = self.params[_W_HH], v.get(_W_HH)
        r_x = self._r_input(v)
        r_gates = self.h.new_empty(K, T, B, 4 * H)
        r_c_all, r_h_all = self.h.new_empty(K, T, B, H), self.h.new_empty(K, T, B, H)
        r_h, r_c = self.h.new_zeros(K, B, H), self.h.new_zeros(K, B, H)
        for t in range(T):
            r_p = torch.baddbmm(r_x[:, t], r_h, w_hh.mT)
            if v_hh is not None and t > 0:
                r_p = torch.baddbmm(r_p, self.h[:, t - 1], v_hh.mT)
            r_act = torch.mul(self.slope[:, t], r_p, out=r_gates[:, t])
            # R{c} = R{[i, f, g]} . u + f R{c_prev};  R{h} = R{o} tanh(c) + o tanh'(c) R{c}
            r_ifg = (r_act[..., : 3 * H].view(K, B, 3, H) * self.u[:, t].view(K, B, 3, H)).sum(dim=-2)
            r_c = torch.addcmul(r_ifg, self.f[:, t], r_c, out=r_c_all[:, t])
            r_h = torch.addcmul(r_act[..., 3 * H :] * self.tanh_c[:, t], self.o_slope_c[:, t], r_c, out=r_h_all[:, t])
        return {"h": r_h_all, "gates": r_gates, "c": r_c_all}, self._r_mean(v, r_h_all)

    def r_backward(self, v: Params, state: dict[str, Tensor | None], r_grad_mean: Tensor,
                   names: Sequence[str]) -> dict[str, Tensor]:
        """``R{backward(grad_mean)}`` in direction v for the kept ``backward``."""
        K, T, B = self.shape
        H = self.hidden_size
        w_hh, v_hh = self.params[_W_HH], v.get(_W_HH)
        r_h_all, r_gates, r_c = state["h"], state["gates"], state["c"]
        assert r_h_all is not None and r_gates is not None and r_c is not None  # r_forward sets them
        out, r_grad_h = self._r_head_backward(v, r_h_all, r_grad_mean)
        g_h, g_c = self._total_h, self._total_c
        r_i, r_f, r_g, r_o = r_gates.chunk(4, dim=-1)
        r_c_prev = torch.cat([r_c.new_zeros(K, 1, B, H), r_c[:, :-1]], dim=1)
        # The terms of R{g_c}, R{d p}, R{carry_c} that hold no R{carry} (all steps at once):
        #   R{o tanh'(c)} = R{o} tanh'(c) - 2 o tanh(c) tanh'(c) R{c}
        fixed_c = g_h * (r_o * self.slope_c - 2.0 * self.o_slope_c * self.tanh_c * r_c)
        #   R{u s} = R{u} s + u curvature R{gate} (R{s} = curvature R{gate}), R{u} = [R{g}, R{c_prev}, R{i}]
        r_coeff = torch.cat([r_g, r_c_prev, r_i], dim=-1) * self.slope[..., : 3 * H] \
            + self.u * self.curvature[..., : 3 * H] * r_gates[..., : 3 * H]
        fixed_ifg = r_coeff.view(K, T, B, 3, H) * g_c.unsqueeze(-2)
        #   R{tanh(c) s_o} = tanh'(c) R{c} s_o + tanh(c) curvature_o R{o}
        s_o, curvature_o = self.slope[..., 3 * H :], self.curvature[..., 3 * H :]
        fixed_o = g_h * (self.slope_c * r_c * s_o + self.tanh_c * curvature_o * r_o)
        fixed_carry_c = g_c * r_f
        r_dx = r_grad_h.new_empty(K, T, B, 4 * H)
        r_carry_h, r_carry_c = r_grad_h.new_zeros(K, B, H), r_grad_h.new_zeros(K, B, H)
        for t in reversed(range(T)):
            r_gh = r_grad_h[:, t] + r_carry_h
            r_gc = torch.addcmul(r_carry_c + fixed_c[:, t], r_gh, self.o_slope_c[:, t])
            rdx = r_dx[:, t]
            torch.addcmul(fixed_ifg[:, t], self.coeff[:, t, :, : 3 * H].view(K, B, 3, H), r_gc.unsqueeze(-2),
                          out=rdx[..., : 3 * H].view(K, B, 3, H))
            torch.addcmul(fixed_o[:, t], self.coeff[:, t, :, 3 * H :], r_gh, out=rdx[..., 3 * H :])
            r_carry_h = torch.bmm(rdx, w_hh)
            if v_hh is not None:
                r_carry_h = torch.baddbmm(r_carry_h, self._d_x[:, t], v_hh)
            r_carry_c = torch.addcmul(fixed_carry_c[:, t], r_gc, self.f[:, t])
        extra = None
        if _W_HH in names:
            r_h_prev = torch.cat([r_h_all.new_zeros(K, 1, B, H), r_h_all[:, :-1]], dim=1).view(K, T * B, H)
            extra = (self._d_x.reshape(K, T * B, 4 * H).mT, r_h_prev)
        out.update(self._weight_grads(r_dx, r_dx, self.h_prev.view(K, T * B, H), names, extra))
        return {n: val for n, val in out.items() if n in names}


class RecurrentOuterProblem(AnalyticOuterProblem[dict[str, Tensor | None]]):
    """The ``OuterProblem`` for ``rnn``, ``gru`` and ``lstm`` policies, any recurrence mode."""

    @staticmethod
    def supports(policy: object) -> bool:
        """Whether ``policy`` is an rnn/gru/lstm policy with the diagonal Gaussian these products assume."""
        if not isinstance(policy, RecurrentGaussianPolicy) or type(policy).distribution is not Policy.distribution:
            return False
        return policy.kind in ("rnn", "gru", "lstm") and "log_std" in policy.trainable_names()

    def make_pass(self, params: Params, x: Tensor, actions: Tensor, horizon: int) -> _RecurrentPass:
        policy = cast(RecurrentGaussianPolicy, self.policy)  # the only kind supports() admits
        if policy.kind == "lstm":
            return _LSTMPass(params, x, actions, horizon)
        return _RecurrentPass(policy.kind, params, x, actions, horizon)
