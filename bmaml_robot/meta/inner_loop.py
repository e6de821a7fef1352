"""MAML's inner loop on the robots: sample with the parameters adapted so far, adapt, repeat.

One function for every command that adapts a meta-policy: training (its train and validation
episodes), held-out evaluation (the return after 0..K steps), rendering and export (one task).
Step ``k``'s episodes are sampled with the parameters after ``k`` inner steps, which are adapted
from the processed episodes of every step before it; the noise of step ``k`` comes from
``seed_of_step(k)`` (training's or evaluation's streams: ``bmaml_robot.seeds``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .adaptation import Params
from .episodes import ProcessedEpisodes
from .maml_trpo import MetaLearner
from .sampler import Sampler


@dataclasses.dataclass
class InnerLoop:
    """What ``adapt_to_tasks`` sampled and adapted."""

    batches: list[ProcessedEpisodes]
    """``batches[k]``: the episodes sampled with the parameters after k inner steps (processed)."""
    params: Params | None
    """The parameters after every inner step, ``{name: [K, *shape]}`` (detached); None after 0 steps
    (the meta-policy's own)."""
    sample_time_s: float
    """Seconds spent sampling."""

    def episode_returns(self) -> np.ndarray:
        """float64 ``[len(batches), K, B]``: every episode's undiscounted return, per step."""
        return np.stack([batch.episode_returns().double().numpy() for batch in self.batches])

    def mean_returns(self) -> list[float]:
        """The mean return per episode after 0, 1, ... steps (over tasks and episodes)."""
        return [float(batch.episode_returns().mean()) for batch in self.batches]


def adapt_to_tasks(
    learner: MetaLearner,
    sampler: Sampler,
    adapt_steps: int,
    seed_of_step: Callable[[int], int],
    *,
    sample_adapted: bool = True,
) -> InnerLoop:
    """Adapt ``learner.policy`` to the tasks ``sampler`` holds (``set_tasks``) with ``adapt_steps``
    inner steps of ``learner``; ``sample_adapted``: also sample with the final parameters (the
    validation episodes of training, the last point of an evaluation), else stop at them."""
    batches: list[ProcessedEpisodes] = []
    params: Params | None = None
    sample_time = 0.0
    for step in range(adapt_steps + 1):
        if step == adapt_steps and not sample_adapted:
            break
        start = time.perf_counter()
        episodes: Any = sampler.sample(learner.policy, params, seed_of_step(step))
        sample_time += time.perf_counter() - start
        batches.append(learner.process(episodes))
        if step < adapt_steps:
            params = learner.adapted_params(batches)
    return InnerLoop(batches, params, sample_time)
