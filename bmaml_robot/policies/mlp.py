"""Feed-forward Gaussian policy: the classic MAML policy (tanh MLP, state-independent log_std)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn.utils import skip_init

from bmaml_robot_deploy.checks import check_float, check_int

from .base import Params, Policy, State, linear, make_generator


class GaussianMLPPolicy(Policy):
    """``obs -> tanh(Linear) x len(hidden_sizes) -> Linear -> mean``; ``log_std`` is a learned vector.

    Parameter names: ``hidden.{i}.weight [h_i, h_{i-1}]``, ``hidden.{i}.bias [h_i]``,
    ``mean.weight [act_dim, h_last]``, ``mean.bias [act_dim]``, ``log_std [act_dim]``.
    Every parameter is adaptable and trainable. There is no state (``initial_state`` is ``None``).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int] = (64, 64),
        init_log_std: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(obs_dim, act_dim, kind="mlp", recurrence=None)
        hidden_sizes = tuple(hidden_sizes)
        if len(hidden_sizes) == 0:
            raise ValueError("hidden_sizes: expected at least one hidden layer size, got ()")
        hidden_sizes = tuple(check_int(size, f"hidden_sizes[{i}]", minimum=1) for i, size in enumerate(hidden_sizes))
        self.hidden_sizes: tuple[int, ...] = hidden_sizes

        generator = make_generator(seed)
        sizes = (self.obs_dim,) + hidden_sizes
        # skip_init: nn.Linear's own init would draw from (and move) the global RNG.
        self.hidden = torch.nn.ModuleList(
            skip_init(torch.nn.Linear, n_in, n_out, dtype=torch.float32) for n_in, n_out in zip(sizes[:-1], sizes[1:])
        )
        self.mean = skip_init(torch.nn.Linear, sizes[-1], self.act_dim, dtype=torch.float32)
        log_std = check_float(init_log_std, "init_log_std")
        self.log_std = torch.nn.Parameter(torch.full((self.act_dim,), log_std, dtype=torch.float32))
        # Xavier-uniform weights and zero biases everywhere, as the reference MAML implementations
        # (rllab's maml_rl, pytorch-maml-rl) do, so results compare with published numbers.
        with torch.no_grad():
            for layer in [*self.hidden, self.mean]:
                torch.nn.init.xavier_uniform_(layer.weight, generator=generator)
                layer.bias.zero_()

    def adaptable_names(self) -> list[str]:
        return [name for name, _ in self.named_parameters()]

    def initial_state(self, batch_shape: tuple[int, ...]) -> State:
        return None

    def _mean(self, obs: Tensor, params: dict[str, Tensor], task_dim: int) -> Tensor:
        """``obs [..., obs_dim] -> mean [..., act_dim]`` with shared or per-task params."""
        x = obs
        for i in range(len(self.hidden)):
            x = torch.tanh(linear(x, params[f"hidden.{i}.weight"], params[f"hidden.{i}.bias"], task_dim))
        return linear(x, params["mean.weight"], params["mean.bias"], task_dim)

    def step(self, obs: Tensor, state: State = None, params: Params | None = None) -> tuple[Tensor, Tensor, State]:
        """``obs [K, B, obs_dim] -> (mean [K, B, act_dim], log_std, None)``; see ``Policy.step``."""
        if state is not None:
            raise ValueError(f"state: expected None for an mlp policy, got {type(state).__name__}")
        p, num_tasks = self._resolve_params(params)
        self._check_obs(obs, num_tasks, time_first=False)
        mean = self._mean(obs, p, task_dim=0)
        return mean, self._log_std_for(p["log_std"], mean, num_tasks, task_dim=0), None

    def sequence(self, obs: Tensor, params: Params | None = None) -> tuple[Tensor, Tensor]:
        """``obs [T, K, B, obs_dim] -> (mean [T, K, B, act_dim], log_std)``; see ``Policy.sequence``."""
        p, num_tasks = self._resolve_params(params)
        self._check_obs(obs, num_tasks, time_first=True)
        # No state, so all T steps go through in one batched pass (same maths as a loop of step).
        if num_tasks is None:
            mean = self._mean(obs, p, task_dim=0)
        else:
            # Per task: one move to task-first layout [K, T, B, ...] (a copy of obs only), so no
            # layer has to transpose its (larger) input for the batched matmul.
            mean = self._mean(obs.movedim(1, 0), p, task_dim=0).movedim(0, 1)
        return mean, self._log_std_for(p["log_std"], mean, num_tasks, task_dim=1)
