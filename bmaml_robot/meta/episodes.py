"""The batch of episodes that flows from the sampler through the meta-learner.

Layout: time first, then tasks, then episodes per task: ``[T, K, B, ...]``. Every env runs exactly
one episode that starts at ``t = 0``; ``mask[t] = 1`` while the episode runs (its last step
included) and 0 afterwards. An episode that is still running at ``t = T - 1`` is truncated there
and its value is bootstrapped from ``last_observations``; one that terminated does not bootstrap.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple, Self

import torch
from torch import Tensor

from bmaml_robot_deploy.checks import check_int


class Episodes(NamedTuple):
    """One batch of ``K`` tasks x ``B`` episodes per task, ``T`` steps each.

    Values at masked steps (``mask == 0``) may be anything (even NaN): every consumer in
    ``bmaml_robot.meta`` excludes them explicitly.
    """

    observations: Tensor
    """float [T, K, B, obs_dim]: observation at each step (input of the policy at that step)."""
    actions: Tensor
    """float [T, K, B, act_dim]: action taken at each step."""
    rewards: Tensor
    """float [T, K, B]: reward received for each step."""
    mask: Tensor
    """float [T, K, B]: 1 for steps inside the episode, 0 after it ended."""
    terminated: Tensor
    """bool [T, K, B]: True at the step that terminated the episode (no bootstrap)."""
    last_observations: Tensor
    """float [K, B, obs_dim]: observation after the final step (bootstrap of truncated episodes)."""
    log_probs: Tensor
    """float [T, K, B]: log-prob of the actions under the sampling policy (detached)."""
    advantages: Tensor | None = None
    """float [T, K, B] or None: advantages, filled by ``compute_advantages`` (0 at masked steps)."""
    returns: Tensor | None = None
    """float [T, K, B] or None: value targets ``advantages + values`` before normalisation."""

    @property
    def horizon(self) -> int:
        """T, the number of time steps."""
        return self.observations.shape[0]

    @property
    def num_tasks(self) -> int:
        """K, the number of tasks."""
        return self.observations.shape[1]

    @property
    def episodes_per_task(self) -> int:
        """B, the number of episodes per task."""
        return self.observations.shape[2]

    def select_tasks(self, start: int, stop: int) -> Self:
        """The episodes of tasks ``start:stop`` (views, no copy): every field sliced on its K dim."""
        return self._select(slice(start, stop), slice(None))

    def select_episodes(self, count: int) -> Self:
        """The first ``count`` episodes of every task (views, no copy): every field sliced on its B dim.

        Episodes of a task are independent draws, so the first ``count`` are a random subsample.
        """
        check_int(count, "count", minimum=1, maximum=self.episodes_per_task)
        return self._select(slice(None), slice(0, count))

    def _select(self, tasks: slice, episodes: slice) -> Self:
        """Every field sliced on its K and B dims (``last_observations`` is [K, B, ...], the rest
        [T, K, B, ...])."""
        fields: dict[str, Any] = {}  # Tensor, or None for an unfilled optional field
        for name, value in self._asdict().items():
            if value is None:
                fields[name] = None
            elif name == "last_observations":
                fields[name] = value[tasks, episodes]
            else:
                fields[name] = value[:, tasks, episodes]
        return type(self)(**fields)

    def episode_returns(self) -> Tensor:
        """Undiscounted return of each episode, float [K, B]."""
        return torch.where(self.mask > 0, self.rewards, 0.0).sum(dim=0)

    def validate(self, name: str = "episodes") -> None:
        """Raise ValueError naming the field, the expected and the actual shape/dtype."""
        obs = self.observations
        if obs.dim() != 4 or not obs.is_floating_point():
            raise ValueError(
                f"{name}.observations: expected a float tensor [T, K, B, obs_dim], "
                f"got {obs.dtype} {tuple(obs.shape)}"
            )
        T, K, B, obs_dim = obs.shape
        expected: dict[str, tuple[int, ...]] = {
            "rewards": (T, K, B),
            "mask": (T, K, B),
            "terminated": (T, K, B),
            "last_observations": (K, B, obs_dim),
            "log_probs": (T, K, B),
            "advantages": (T, K, B),
            "returns": (T, K, B),
        }
        for field, shape in expected.items():
            value = getattr(self, field)
            if value is None and field in ("advantages", "returns"):
                continue
            if tuple(value.shape) != shape:
                raise ValueError(
                    f"{name}.{field}: expected shape {shape} (T, K, B = {T}, {K}, {B}), "
                    f"got {tuple(value.shape)}"
                )
        act = self.actions
        if act.dim() != 4 or tuple(act.shape[:3]) != (T, K, B):
            raise ValueError(
                f"{name}.actions: expected shape ({T}, {K}, {B}, act_dim), got {tuple(act.shape)}"
            )
        if self.terminated.dtype != torch.bool:
            raise ValueError(f"{name}.terminated: expected dtype torch.bool, got {self.terminated.dtype}")
        for field in ("actions", "rewards", "mask", "last_observations", "log_probs"):
            if not getattr(self, field).is_floating_point():
                raise ValueError(
                    f"{name}.{field}: expected a float tensor, got {getattr(self, field).dtype}"
                )


class ProcessedEpisodes(Episodes):
    """Episodes whose advantages and value targets are computed (``MetaLearner.process``, i.e.
    ``compute_advantages``: baseline, GAE, per-task normalised advantages): the only kind that
    enters inner adaptation and the outer update. ``advantages`` and ``returns`` are never None."""

    if TYPE_CHECKING:  # the fields, typed as __new__ guarantees (at run time they stay tuple fields)

        @property
        def advantages(self) -> Tensor: ...

        @property
        def returns(self) -> Tensor: ...

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        self = super().__new__(cls, *args, **kwargs)
        if self.advantages is None or self.returns is None:
            raise ValueError("ProcessedEpisodes: advantages and returns are required "
                             "(made by compute_advantages / MetaLearner.process)")
        return self

    @classmethod
    def _make(cls, iterable: Iterable[Any]) -> Self:  # type: ignore[override]  # mypy types NamedTuple._make generic in _cls
        # (``_replace`` builds through ``_make``: keep the check there too)
        return cls(*iterable)


def require_processed(episodes: object, name: str) -> ProcessedEpisodes:
    """``episodes`` if it is ``ProcessedEpisodes``; otherwise a TypeError naming ``name`` and what
    to do (raw sampler episodes carry no advantages)."""
    if not isinstance(episodes, ProcessedEpisodes):
        raise TypeError(f"{name}: expected ProcessedEpisodes (episodes with advantages, from "
                        f"MetaLearner.process or compute_advantages), got {type(episodes).__name__}")
    return episodes


def task_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Masked mean over time and episodes, per task.

    values, mask: [T, K, B] -> [K]. Masked entries are excluded with ``where`` (not multiplied),
    so NaN/inf there cannot leak. A task without any valid step gets 0.
    """
    valid = mask > 0
    total = torch.where(valid, values * mask, torch.zeros((), dtype=values.dtype, device=values.device))
    return total.sum(dim=(0, 2)) / mask.sum(dim=(0, 2)).clamp_min(1e-8)


def step_weights(mask: Tensor) -> Tensor:
    """[T, K, B] weights of a masked per-task mean over time and episodes (``task_mean``'s):
    ``mask / valid steps of the task``, 0 at masked steps."""
    return torch.where(mask > 0, mask, 0.0) / mask.sum(dim=(0, 2), keepdim=True).clamp_min(1e-8)


def zero_masked(x: Tensor, mask: Tensor) -> Tensor:
    """x [T, K, B, D] with masked steps set to 0, so garbage there (NaN) cannot reach a gradient.

    Safe for recurrent policies: masked steps only come after the end of an episode.
    """
    return torch.where(mask.unsqueeze(-1) > 0, x, torch.zeros((), dtype=x.dtype, device=x.device))
