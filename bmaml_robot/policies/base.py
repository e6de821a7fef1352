"""The policy interface shared by every kind, and the helpers the kinds share.

Shapes (time first, then tasks, then environments per task):
    T   time steps, K   tasks, B   environments per task.

Parameters are never edited in place by adaptation. A forward pass reads either the module's own
parameters (``params=None``, shared by every task) or a ``params`` dict that holds *every*
parameter name with a leading task dimension ``K`` (``{name: Tensor [K, *p.shape]}``), so one
batched forward serves ``K`` tasks, each with its own (e.g. inner-loop adapted) parameters.
Per-task linear layers are batched matmuls (``torch.baddbmm``), which support double backward,
as second-order MAML needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from bmaml_robot_deploy.checks import check_int

#: A recurrent state: ``None`` (mlp), ``Tensor [*batch, hidden]`` (rnn, gru) or ``(h, c)`` (lstm).
State = Tensor | tuple[Tensor, Tensor] | None
#: Per-task parameters ``{name: Tensor [K, *p.shape]}`` (one slice per task); a forward pass takes
#: ``Params | None`` (None: the module's own parameters). The one parameter type of the package.
Params = Mapping[str, Tensor]

POLICY_KINDS: tuple[str, ...] = ("mlp", "rnn", "gru", "lstm")
RECURRENCE_MODES: tuple[str, ...] = ("frozen", "outer", "all")


class Policy(torch.nn.Module):
    """Diagonal-Gaussian policy whose parameters can be swapped per task.

    Attributes:
        obs_dim: size of one observation.
        act_dim: size of one action.
        kind: one of ``POLICY_KINDS``.
        recurrence: one of ``RECURRENCE_MODES`` for recurrent kinds, ``None`` for ``"mlp"``.
        is_recurrent: whether a hidden state is carried between steps.
        hidden_shape: per-environment state layout ``[num_layers, hidden_size]``; ``()`` for mlp.
            (lstm carries ``h`` and ``c``, each of this shape.) ``initial_state`` drops the
            single layer dimension: its tensors are ``[*batch_shape, hidden_size]``.

    Subclasses implement ``adaptable_names``, ``initial_state``, ``step`` and ``sequence``.
    """

    obs_dim: int
    act_dim: int
    log_std: torch.nn.Parameter  # [act_dim], every kind has one
    kind: str
    recurrence: str | None
    is_recurrent: bool
    hidden_shape: tuple[int, ...]

    def __init__(self, obs_dim: int, act_dim: int, kind: str, recurrence: str | None) -> None:
        super().__init__()
        self.obs_dim = check_int(obs_dim, "obs_dim", minimum=1)
        self.act_dim = check_int(act_dim, "act_dim", minimum=1)
        self.kind = kind
        self.recurrence = recurrence
        self.is_recurrent = False
        self.hidden_shape = ()

    # ------------------------------------------------------------------ parameter name sets
    def adaptable_names(self) -> list[str]:
        """Names (as in ``named_parameters()``) that the inner loop changes."""
        raise NotImplementedError

    def trainable_names(self) -> list[str]:
        """Names the outer loop changes: exactly the parameters with ``requires_grad=True``."""
        return [name for name, p in self.named_parameters() if p.requires_grad]

    def recurrent_names(self) -> list[str]:
        """Names of the hidden-to-hidden parameters (``[]`` for a feed-forward policy)."""
        return []

    # ------------------------------------------------------------------ forward interface
    def initial_state(self, batch_shape: tuple[int, ...]) -> State:
        """Zero state for ``batch_shape`` (e.g. ``(K, B)``); ``None`` for a feed-forward policy."""
        raise NotImplementedError

    def step(self, obs: Tensor, state: State, params: Params | None = None) -> tuple[Tensor, Tensor, State]:
        """One control step.

        Args:
            obs: ``[K, B, obs_dim]`` float32. (With ``params=None`` any ``[*batch, obs_dim]``.)
            state: the previous state (``initial_state((K, B))`` at an episode's first step).
            params: ``None`` or ``{name: Tensor [K, *p.shape]}`` for every parameter name.

        Returns:
            ``(mean [K, B, act_dim], log_std, next_state)``; ``log_std`` broadcasts to ``mean``
            (``[act_dim]`` with ``params=None``, ``[K, 1, act_dim]`` with per-task params).
        """
        raise NotImplementedError

    def sequence(self, obs: Tensor, params: Params | None = None) -> tuple[Tensor, Tensor]:
        """Whole episodes, all starting at ``t=0`` from ``initial_state``.

        Args:
            obs: ``[T, K, B, obs_dim]`` float32. (With ``params=None`` any ``[T, *batch, obs_dim]``.)
            params: as in ``step``.

        Returns:
            ``(mean [T, K, B, act_dim], log_std)``, ``log_std`` broadcastable to ``mean``.
            Equal to a loop of ``step`` over ``t``. Steps after an episode's end are the caller's
            to mask.
        """
        raise NotImplementedError

    def forward(self, obs: Tensor, state: State = None) -> tuple[Tensor, Tensor, State]:
        """``step`` with the module's own parameters (what ``torch.func.functional_call`` runs)."""
        return self.step(obs, state)

    # ------------------------------------------------------------------ shared helpers
    def distribution(self, mean: Tensor, log_std: Tensor) -> torch.distributions.Distribution:
        """Diagonal Gaussian ``Independent(Normal(mean, exp(log_std)), 1)`` over the last dim."""
        return torch.distributions.Independent(torch.distributions.Normal(mean, log_std.exp()), 1)

    def batched_params(self, num_tasks: int) -> dict[str, Tensor]:
        """Meta-parameters expanded (a view, not a copy) to ``{name: Tensor [num_tasks, *p.shape]}``.

        Gradients taken through the expanded tensors flow back to the meta-parameters.
        """
        num_tasks = check_int(num_tasks, "num_tasks", minimum=1)
        return {name: p.expand(num_tasks, *p.shape) for name, p in self.named_parameters()}

    def _resolve_params(self, params: Params | None) -> tuple[dict[str, Tensor], int | None]:
        """The parameters to run with and the number of tasks (``None`` when shared).

        Checks that a ``params`` dict names exactly this policy's parameters, each shaped
        ``[K, *p.shape]`` with one common ``K``.
        """
        own: dict[str, Tensor] = dict(self.named_parameters())
        if params is None:
            return own, None
        missing = sorted(set(own) - set(params))
        extra = sorted(set(params) - set(own))
        if missing or extra:
            raise ValueError(
                f"params: expected exactly the parameter names {sorted(own)}, "
                f"got missing {missing} and unknown {extra}"
            )
        num_tasks: int | None = None
        for name, p in own.items():
            value = params[name]
            if value.dim() != p.dim() + 1 or tuple(value.shape[1:]) != tuple(p.shape):
                raise ValueError(
                    f"params[{name!r}]: expected shape [K, {', '.join(map(str, p.shape))}], "
                    f"got {list(value.shape)}"
                )
            if num_tasks is None:
                num_tasks = value.shape[0]
            elif value.shape[0] != num_tasks:
                raise ValueError(
                    f"params[{name!r}]: expected the same number of tasks K={num_tasks} as the "
                    f"other parameters, got {value.shape[0]}"
                )
        return dict(params), num_tasks

    def _check_obs(self, obs: Tensor, num_tasks: int | None, time_first: bool) -> None:
        """Validates ``obs``: ``[(T,) K, B, obs_dim]`` with per-task params, else ``[(T,) *batch, obs_dim]``."""
        name = "obs"
        lead = 1 if time_first else 0
        layout = "[T, K, B, obs_dim]" if time_first else "[K, B, obs_dim]"
        dtype = self.log_std.dtype  # float32 unless the policy was explicitly converted
        if obs.dtype != dtype:
            raise ValueError(f"{name}: expected dtype {dtype} (the policy's), got {obs.dtype}")
        if obs.dim() < lead + 1 or obs.shape[-1] != self.obs_dim:
            raise ValueError(
                f"{name}: expected shape {layout} with obs_dim={self.obs_dim}, got {list(obs.shape)}"
            )
        if num_tasks is not None and (obs.dim() != lead + 3 or obs.shape[lead] != num_tasks):
            raise ValueError(
                f"{name}: expected shape {layout} with K={num_tasks} (the tasks in params), "
                f"got {list(obs.shape)}"
            )

    @staticmethod
    def _log_std_for(log_std: Tensor, mean: Tensor, num_tasks: int | None, task_dim: int) -> Tensor:
        """``log_std`` (``[act]`` shared or ``[K, act]`` per task) shaped to broadcast to ``mean``."""
        if num_tasks is None:
            return log_std
        # [K, act] -> [K, 1, ..., 1, act]: the singleton dims stand for everything between the
        # task dim and the action dim of `mean`, so it broadcasts (time dims in front are free).
        singletons = mean.dim() - task_dim - 2
        return log_std.reshape(num_tasks, *([1] * singletons), log_std.shape[-1])


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, task_dim: int = 0) -> Tensor:
    """Affine map with shared or per-task weights.

    Args:
        x: ``[..., in]``; with per-task weights dim ``task_dim`` of ``x`` is the task dim ``K``.
        weight: ``[out, in]`` (shared) or ``[K, out, in]`` (per task).
        bias: ``None``, ``[out]`` or ``[K, out]`` (as ``weight``).
        task_dim: where the task dim sits in ``x`` (only used for per-task weights).

    Returns:
        ``[..., out]``.
    """
    if weight.dim() == 2:
        return F.linear(x, weight, bias)
    if task_dim == 0 and x.dim() == 3:
        # Already [K, rows, in]: no view ops (each one is a node in every autograd graph).
        if bias is None:
            return torch.bmm(x, weight.transpose(1, 2))
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
    # Per task: move tasks to the front, flatten the rest into rows, one (b)addbmm for all K tasks.
    xt = x.movedim(task_dim, 0)
    rows = xt.reshape(xt.shape[0], -1, xt.shape[-1])
    if bias is None:
        out = torch.bmm(rows, weight.transpose(1, 2))
    else:
        out = torch.baddbmm(bias.unsqueeze(1), rows, weight.transpose(1, 2))
    return out.reshape(*xt.shape[:-1], weight.shape[1]).movedim(0, task_dim)


class _StackSteps(torch.autograd.Function):
    """``torch.stack(tensors, dim)`` whose backward is ONE ``unbind`` (itself differentiable).

    ``torch.stack``'s backward is one ``select`` per input; under ``create_graph`` (second-order
    MAML) each of those becomes a node whose own backward writes a full-size zero gradient, so a
    Hessian-vector product through ``T`` stacked time steps costs ``O(T^2)`` memory traffic. Same
    values and gradients as ``torch.stack``; forward-mode AD supported.
    """

    @staticmethod
    def forward(dim: int, *tensors: Tensor) -> Tensor:
        return torch.stack(tensors, dim)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.dim = inputs[0]
        ctx.like = [(t.shape, t.dtype, t.device) for t in inputs[1:]]

    @staticmethod
    def backward(ctx, grad: Tensor):
        return (None, *grad.unbind(ctx.dim))

    @staticmethod
    def jvp(ctx, _dim_tangent, *tangents):
        filled = [
            torch.zeros(shape, dtype=dtype, device=device) if t is None else t
            for t, (shape, dtype, device) in zip(tangents, ctx.like)
        ]
        return torch.stack(filled, ctx.dim)


def stack_steps(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """``torch.stack(tensors, dim)`` with a backward that stays linear in ``len(tensors)`` under
    repeated differentiation (see ``_StackSteps``); plain ``torch.stack`` when no grad is needed."""
    tensors = list(tensors)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _StackSteps.apply(dim, *tensors)
    return torch.stack(tensors, dim)


def make_generator(seed: int | None) -> torch.Generator | None:
    """A CPU generator seeded with ``seed`` (deterministic init), or ``None`` (global RNG)."""
    seed = check_int(seed, "seed", allow_none=True)
    if seed is None:
        return None
    return torch.Generator().manual_seed(seed)
