"""The RL^2 policy: the prefrontal-cortex model of Wang et al. (2018) and RL^2 (Duan et al. 2016).

A recurrent network receives, at every step, the observation, its previous action, its previous
reward and a flag that marks an episode's first step; its hidden state is carried across the
episodes of a trial and reset only at the trial's start. Trained slowly across many tasks, it then
adapts to a new task in its activations, its weights fixed.

The recurrent body is the package's own cell (``policies/recurrent.py``: rnn, gru, lstm with
``recurrence`` ``all`` or ``frozen``), so sampling runs with per-task parameter copies as MAML's
sampler does (results do not depend on which other tasks run in the batch). Two heads read the
hidden state: the action head (Gaussian mean with a learned ``log_std``, or categorical logits for
discrete actions) and a value head (PPO's critic).

Input layout, ``input_dim = obs_dim + act_dim + 2`` (``act_dim`` = the number of actions when
discrete)::

    [ observation | previous action | previous reward | episode start ]

The previous action is the policy's own action divided by ``action_scale`` and clipped to
``[-1, 1]`` (what the robot received, in units of its range), or a one-hot vector when discrete;
zeros, with reward 0, at the trial's first step.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.utils import skip_init

from bmaml_robot.policies.base import Params, State
from bmaml_robot.policies.recurrent import NUM_GATES, RecurrentGaussianPolicy

#: RL^2 recurrence modes: ``all`` (the standard model: every weight trains) and ``frozen`` (the
#: recurrent weights stay at their initialisation: a reservoir). MAML's ``outer`` (trained, never
#: adapted) means nothing without an inner loop.
RL2_RECURRENCE: tuple[str, ...] = ("all", "frozen")


class RL2Policy(torch.nn.Module):
    """Recurrent actor-critic over RL^2 inputs ``[*batch, input_dim]`` (see the module docstring).

    Attributes:
        obs_dim: the environment's observation size.
        act_dim: the action size (continuous) or the number of actions (discrete).
        discrete: categorical head over ``act_dim`` actions; else a diagonal Gaussian.
        input_dim: ``obs_dim + act_dim + 2``.
        core: the ``RecurrentGaussianPolicy`` over the inputs (its ``mean`` head gives the Gaussian
            means or the logits; its ``log_std`` is unused, and frozen, when discrete).
        value: ``Linear(hidden_size, 1)``, zero-initialised.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        *,
        discrete: bool = False,
        kind: str = "gru",
        hidden_size: int = 64,
        recurrence: str = "all",
        init_log_std: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if kind not in NUM_GATES:
            raise ValueError(f"policy: RL^2 needs a recurrent cell, one of {list(NUM_GATES)}, got {kind!r}")
        if recurrence not in RL2_RECURRENCE:
            raise ValueError(f"recurrence: RL^2 takes one of {list(RL2_RECURRENCE)} (no inner loop, so no "
                             f"'outer'), got {recurrence!r}")
        self.obs_dim = int(obs_dim)
        self.act_dim = int(act_dim)
        self.discrete = bool(discrete)
        self.kind = kind
        self.recurrence = recurrence
        self.input_dim = self.obs_dim + self.act_dim + 2
        self.core = RecurrentGaussianPolicy(self.input_dim, self.act_dim, kind=kind, hidden_size=hidden_size,
                                            recurrence=recurrence, init_log_std=init_log_std, seed=seed)
        if self.discrete:
            self.core.log_std.requires_grad_(False)
        self.value = skip_init(torch.nn.Linear, self.core.hidden_size, 1, dtype=torch.float32)
        with torch.no_grad():
            self.value.weight.zero_()
            self.value.bias.zero_()

    @property
    def hidden_size(self) -> int:
        return self.core.hidden_size

    # ------------------------------------------------------------------ acting (sampling, deploy)
    def initial_state(self, batch_shape: tuple[int, ...]) -> State:
        """Zeros: the state at a trial's first step."""
        return self.core.initial_state(batch_shape)

    def step(self, inputs: Tensor, state: State, params: Params | None = None) -> tuple[Tensor, Tensor, State]:
        """``inputs [K, B, input_dim]`` -> ``(out [K, B, act_dim], log_std, next_state)``: the
        Gaussian means or the logits. ``params``: per-task copies of ``core``'s parameters."""
        return self.core.step(inputs, state, params)

    def act(self, out: Tensor, log_std: Tensor, noise: Tensor) -> Tensor:
        """The action for pre-drawn ``noise`` (same shape as ``out``): ``out + exp(log_std) noise``
        (noise standard normal), or, discrete, ``argmax(out + Gumbel(noise))`` with ``noise``
        uniform in (0, 1) (the Gumbel-max trick: a draw of ``Categorical(logits=out)``), as float
        ``[..., 1]`` action indices."""
        if self.discrete:
            gumbel = -torch.log(-torch.log(noise))
            return (out + gumbel).argmax(dim=-1, keepdim=True).to(out.dtype)
        return out + log_std.exp() * noise

    def log_prob(self, out: Tensor, log_std: Tensor, actions: Tensor) -> Tensor:
        """``log pi(actions)``, ``[...]`` for ``out [..., act_dim]`` and ``actions [..., act_dim]``
        (discrete: ``[..., 1]`` indices)."""
        if self.discrete:
            return torch.log_softmax(out, dim=-1).gather(-1, actions.long()).squeeze(-1)
        return self.core.distribution(out, log_std).log_prob(actions)

    def entropy(self, out: Tensor, log_std: Tensor) -> Tensor:
        """The policy's entropy per step, ``[...]``."""
        if self.discrete:
            log_p = torch.log_softmax(out, dim=-1)
            return -(log_p.exp() * log_p).sum(-1)
        return self.core.distribution(out, log_std).entropy().expand(out.shape[:-1])

    def previous_action_input(self, actions: Tensor, action_scale: float) -> Tensor:
        """``actions [..., 1]`` (discrete indices) or ``[..., act_dim]`` -> their input encoding
        ``[..., act_dim]``: one-hot, or ``clip(action / action_scale, -1, 1)``."""
        if self.discrete:
            return torch.nn.functional.one_hot(actions.squeeze(-1).long(), self.act_dim).to(torch.float32)
        return (actions / action_scale).clamp(-1.0, 1.0)

    # ------------------------------------------------------------------ training (PPO)
    def evaluate(self, inputs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Whole trials from the zero state: ``inputs [L, *batch, input_dim]`` ->
        ``(out [L, *batch, act_dim], log_std, values [L, *batch])``, backpropagating through time."""
        hidden = self.core.hidden_sequence(inputs)
        out = torch.nn.functional.linear(hidden, self.core.mean.weight, self.core.mean.bias)
        values = torch.nn.functional.linear(hidden, self.value.weight, self.value.bias).squeeze(-1)
        return out, self.core.log_std, values

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """What PPO trains: every parameter with ``requires_grad`` (``frozen`` keeps the recurrent
        weights; the unused ``log_std`` of a discrete head never trains)."""
        return [p for p in self.parameters() if p.requires_grad]
