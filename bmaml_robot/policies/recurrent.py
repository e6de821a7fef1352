"""Recurrent Gaussian policies (vanilla RNN, GRU, LSTM) whose hidden state is really carried.

The cells are written with matmuls and elementwise ops (no fused ``nn.GRU``/``nn.LSTM`` kernels) so
that (a) per-task parameters batch over tasks and (b) second-order MAML can differentiate twice
through backpropagation in time. Gate equations and gate order follow PyTorch's
``nn.RNNCell`` (tanh), ``nn.GRUCell`` (r, z, n) and ``nn.LSTMCell`` (i, f, g, o), with the same
parameter layout, so weights copy one to one.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.utils import skip_init

from bmaml_robot_deploy.checks import check_choice, check_float, check_int

from .base import RECURRENCE_MODES, Params, Policy, State, linear, make_generator, stack_steps

#: The state of a recurrent policy (a ``State`` that is never None): h, or ``(h, c)`` for the LSTM.
CellState = Tensor | tuple[Tensor, Tensor]

#: Gates per cell kind: the rows of ``weight_ih``/``weight_hh`` are ``num_gates * hidden_size``.
NUM_GATES: dict[str, int] = {"rnn": 1, "gru": 3, "lstm": 4}

#: Scale of the orthogonal hidden-to-hidden blocks. For the vanilla tanh RNN every singular value
#: of ``weight_hh`` is this gain < 1, and tanh is 1-Lipschitz, so the state map is a contraction:
#: a frozen random RNN then has the echo-state property (it forgets its initial state, its state
#: is a stable fading memory of ~1/(1-gain) = 20 recent inputs, gradients through time neither
#: explode nor vanish after a step or two). Gated cells control their own memory through gates
#: driven by the (adaptable) input weights, so their orthogonal blocks keep gain 1.
RECURRENT_GAIN: dict[str, float] = {"rnn": 0.95, "gru": 1.0, "lstm": 1.0}


class RecurrentCell(torch.nn.Module):
    """Parameters of one recurrent layer, laid out as in ``torch.nn.{RNN,GRU,LSTM}Cell``.

    ``weight_ih [G*H, obs_dim]``, ``bias_ih [G*H]``, ``weight_hh [G*H, H]``, ``bias_hh [G*H]``
    with ``G = NUM_GATES[kind]`` gate blocks stacked along the rows in PyTorch's gate order.
    The maths lives in ``RecurrentGaussianPolicy`` (it runs with parameter dicts, not with this
    module's attributes).
    """

    def __init__(self, kind: str, input_size: int, hidden_size: int) -> None:
        super().__init__()
        rows = NUM_GATES[kind] * hidden_size
        self.weight_ih = torch.nn.Parameter(torch.empty(rows, input_size, dtype=torch.float32))
        self.bias_ih = torch.nn.Parameter(torch.empty(rows, dtype=torch.float32))
        self.weight_hh = torch.nn.Parameter(torch.empty(rows, hidden_size, dtype=torch.float32))
        self.bias_hh = torch.nn.Parameter(torch.empty(rows, dtype=torch.float32))


class RecurrentGaussianPolicy(Policy):
    """``h_t = cell(obs_t, h_{t-1})``, ``mean_t = Linear(h_t)``; ``log_std`` is a learned vector.

    Parameter names: ``cell.weight_ih``, ``cell.bias_ih`` (input weights of every gate),
    ``cell.weight_hh``, ``cell.bias_hh`` (recurrent weights of every gate; see
    ``recurrent_names``), ``mean.weight [act_dim, H]``, ``mean.bias [act_dim]``, ``log_std [act_dim]``.

    Recurrence modes:
        ``frozen``: recurrent weights stay at their initial values (``requires_grad=False``,
            neither adaptable nor trainable); everything else adapts and trains.
        ``outer``: recurrent weights are meta-trained but never adapted in the inner loop.
        ``all``: every parameter adapts and trains.

    The state is ``Tensor [*batch, H]`` (rnn, gru) or ``(h, c)`` (lstm), zeros at episode start.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        kind: str = "gru",
        hidden_size: int = 100,
        recurrence: str = "frozen",
        init_log_std: float = 0.0,
        seed: int | None = None,
    ) -> None:
        check_choice(kind, "kind", tuple(NUM_GATES))
        check_choice(recurrence, "recurrence", RECURRENCE_MODES)
        super().__init__(obs_dim, act_dim, kind=kind, recurrence=recurrence)
        self.hidden_size = check_int(hidden_size, "hidden_size", minimum=1)
        self.is_recurrent = True
        self.hidden_shape = (1, self.hidden_size)  # [num_layers, hidden_size]
        self.num_gates = NUM_GATES[kind]

        self.cell = RecurrentCell(kind, self.obs_dim, self.hidden_size)
        # skip_init: nn.Linear's own init would draw from (and move) the global RNG.
        self.mean = skip_init(torch.nn.Linear, self.hidden_size, self.act_dim, dtype=torch.float32)
        log_std = check_float(init_log_std, "init_log_std")
        self.log_std = torch.nn.Parameter(torch.full((self.act_dim,), log_std, dtype=torch.float32))
        self._init_weights(make_generator(seed))
        if recurrence == "frozen":
            for name in self.recurrent_names():
                self.get_parameter(name).requires_grad_(False)

    def _init_weights(self, generator: torch.Generator | None) -> None:
        H = self.hidden_size
        with torch.no_grad():
            for gate in range(self.num_gates):
                rows = slice(gate * H, (gate + 1) * H)
                # Per gate block, as if each gate were its own layer.
                torch.nn.init.xavier_uniform_(self.cell.weight_ih[rows], generator=generator)
                torch.nn.init.orthogonal_(
                    self.cell.weight_hh[rows], gain=RECURRENT_GAIN[self.kind], generator=generator
                )
            self.cell.bias_ih.zero_()
            # bias_hh only duplicates bias_ih (both are added before the nonlinearity, except the
            # GRU candidate's, which r scales), so zeros lose nothing when it is frozen.
            self.cell.bias_hh.zero_()
            if self.kind == "lstm":
                # Forget-gate bias 1 (in the adaptable input bias): remember by default.
                self.cell.bias_ih[H : 2 * H].fill_(1.0)
            # Head as in the MLP policy (Xavier, zero bias), so kinds differ only in the body.
            torch.nn.init.xavier_uniform_(self.mean.weight, generator=generator)
            self.mean.bias.zero_()

    # ------------------------------------------------------------------ name sets
    def recurrent_names(self) -> list[str]:
        """The hidden-to-hidden parameters: ``["cell.weight_hh", "cell.bias_hh"]``."""
        return ["cell.weight_hh", "cell.bias_hh"]

    def adaptable_names(self) -> list[str]:
        recurrent = set(self.recurrent_names()) if self.recurrence in ("frozen", "outer") else set()
        return [name for name, _ in self.named_parameters() if name not in recurrent]

    def trainable_names(self) -> list[str]:
        if self.recurrence == "frozen":
            # Guard the science: a stray `policy.requires_grad_()` must not silently unfreeze.
            thawed = [n for n in self.recurrent_names() if self.get_parameter(n).requires_grad]
            if thawed:
                raise RuntimeError(
                    f"recurrence='frozen' but {thawed} have requires_grad=True; frozen recurrent "
                    "weights must never be updated"
                )
        return super().trainable_names()

    # ------------------------------------------------------------------ forward
    def initial_state(self, batch_shape: tuple[int, ...]) -> CellState:
        """Zeros ``[*batch_shape, H]`` (rnn, gru) or a pair of them ``(h, c)`` (lstm)."""
        w = self.cell.weight_hh
        h = torch.zeros(*batch_shape, self.hidden_size, dtype=w.dtype, device=w.device)
        return (h, torch.zeros_like(h)) if self.kind == "lstm" else h

    def _input_gates(self, obs: Tensor, p: dict[str, Tensor], task_dim: int) -> Tensor:
        """``obs [..., obs_dim] -> [..., G*H]``: the input projection plus every bias.

        ``bias_hh`` is added here, once, rather than at each step (it adds to the same
        pre-activation as ``bias_ih``), except the GRU candidate part ``b_hn``, which the reset
        gate scales and so stays in ``_update``.
        """
        bias = p["cell.bias_ih"] + self._outside_bias(p["cell.bias_hh"])
        return linear(obs, p["cell.weight_ih"], bias, task_dim)

    def _outside_bias(self, bias_hh: Tensor) -> Tensor:
        """The part of ``bias_hh [..., G*H]`` that can move out of the time loop."""
        if self.kind != "gru":
            return bias_hh
        H = self.hidden_size
        return torch.cat([bias_hh[..., : 2 * H], torch.zeros_like(bias_hh[..., 2 * H :])], dim=-1)

    def _update(self, x_gates: Tensor, state: CellState, p: dict[str, Tensor]) -> tuple[Tensor, CellState]:
        """One cell update.

        Args:
            x_gates: ``[K, B, G*H]`` from ``_input_gates`` (``[*batch, G*H]`` with shared params).
            state: previous state, ``[K, B, H]`` or ``(h, c)``.
            p: the parameters (shared or per task).

        Returns:
            ``(h_t [K, B, H], next_state)``.
        """
        h_prev = state[0] if isinstance(state, tuple) else state
        h_gates = linear(h_prev, p["cell.weight_hh"])  # biases are in x_gates (see _input_gates)
        if self.kind == "rnn":
            h = torch.tanh(x_gates + h_gates)
            return h, h
        if self.kind == "gru":
            H = self.hidden_size
            # split (one op, its backward one cat) rather than slicing twice.
            x_rz, x_n = x_gates.split([2 * H, H], dim=-1)
            h_rz, h_n = h_gates.split([2 * H, H], dim=-1)
            r, z = torch.sigmoid(x_rz + h_rz).split([H, H], dim=-1)
            b_hn = p["cell.bias_hh"][..., 2 * H :]
            if b_hn.dim() == 2:  # per task [K, H] -> [K, 1, H] to broadcast over envs
                b_hn = b_hn.unsqueeze(1)
            n = torch.tanh(x_n + r * (h_n + b_hn))
            h = n + z * (h_prev - n)  # = (1 - z) * n + z * h_prev, one op fewer
            return h, h
        assert isinstance(state, tuple)
        i, f, g, o = (x_gates + h_gates).chunk(4, dim=-1)
        c = torch.sigmoid(f) * state[1] + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)

    def _check_state(self, state: State, batch_shape: tuple[int, ...]) -> None:
        expected = (*batch_shape, self.hidden_size)
        parts = state if isinstance(state, tuple) else (state,)
        ok = (len(parts) == 2) if self.kind == "lstm" else not isinstance(state, tuple)
        if not ok or not all(isinstance(s, Tensor) and tuple(s.shape) == expected for s in parts):
            layout = "(h, c), each" if self.kind == "lstm" else "a Tensor"
            got = [list(s.shape) if isinstance(s, Tensor) else type(s).__name__ for s in parts]
            raise ValueError(f"state: expected {layout} of shape {list(expected)}, got {got}")

    def step(self, obs: Tensor, state: State, params: Params | None = None) -> tuple[Tensor, Tensor, State]:
        """``obs [K, B, obs_dim]``, state -> ``(mean [K, B, act_dim], log_std, next_state)``.

        ``state=None`` means ``initial_state``. See ``Policy.step``.
        """
        p, num_tasks = self._resolve_params(params)
        self._check_obs(obs, num_tasks, time_first=False)
        batch_shape = tuple(obs.shape[:-1])
        if state is None:
            state = self.initial_state(batch_shape)
        self._check_state(state, batch_shape)
        h, next_state = self._update(self._input_gates(obs, p, task_dim=0), state, p)
        mean = linear(h, p["mean.weight"], p["mean.bias"])
        return mean, self._log_std_for(p["log_std"], mean, num_tasks, task_dim=0), next_state

    def sequence(self, obs: Tensor, params: Params | None = None) -> tuple[Tensor, Tensor]:
        """``obs [T, K, B, obs_dim] -> (mean [T, K, B, act_dim], log_std)``; see ``Policy.sequence``.

        Backpropagates through time: the state runs from ``initial_state`` through all T steps.
        """
        h_all, p, num_tasks = self._hidden(obs, params)
        mean = linear(h_all, p["mean.weight"], p["mean.bias"], task_dim=0)
        mean = mean.movedim(0, 1) if num_tasks is not None else mean  # -> [T, K, B, act_dim]
        return mean, self._log_std_for(p["log_std"], mean, num_tasks, task_dim=1)

    def hidden_sequence(self, obs: Tensor) -> Tensor:
        """The hidden states of ``sequence`` with the module's own parameters:
        ``obs [T, *batch, obs_dim] -> h [T, *batch, H]`` (what other heads read, e.g. RL^2's value)."""
        return self._hidden(obs, None)[0]

    def _hidden(self, obs: Tensor, params: Params | None) -> tuple[Tensor, dict[str, Tensor], int | None]:
        """``(h_all, parameters, num_tasks)``: h_all ``[T, *batch, H]`` (shared parameters) or
        ``[K, T, B, H]`` (per task: task-first, as the head's batched matmul wants it)."""
        p, num_tasks = self._resolve_params(params)
        self._check_obs(obs, num_tasks, time_first=True)
        if num_tasks is None:
            time_dim, x = 0, obs  # [T, *batch, obs_dim]
        else:
            # Per task, work in task-first layout [K, T, B, ...]: the input projection comes out of
            # the batched matmul contiguous in that layout, and the backward's stack along dim 1
            # gives gradients already laid out for the matmuls (no full-size transposing copies).
            time_dim, x = 1, obs.movedim(1, 0)
        # The input and output projections do not depend on the state: one matmul for all T steps
        # each; only the hidden-to-hidden matmul and the gates stay in the time loop.
        x_gates = self._input_gates(x, p, task_dim=0)  # [T, *batch, G*H] or [K, T, B, G*H]
        batch_shape = tuple(s for d, s in enumerate(x.shape[:-1]) if d != time_dim)
        state = self.initial_state(batch_shape)
        hs = []
        # unbind, not x_gates[t]: the backward of T index ops would write T full-size gradients.
        for x_t in x_gates.unbind(time_dim):
            h, state = self._update(x_t, state, p)
            hs.append(h)
        if hs:
            h_all = stack_steps(hs, dim=time_dim)  # torch.stack, but O(T) under double backward
        else:
            h_all = x.new_zeros(*x.shape[:-1], self.hidden_size)
        return h_all, p, num_tasks
