"""MAML-TRPO (Finn et al. 2017; as in pytorch-maml by T. Deleu): the meta-learner.

``MetaLearner`` turns one meta-batch into one TRPO update of the trainable meta-parameters:

    process episodes (baseline, GAE) -> outer problems per group of tasks (``outer.py``)
    -> search direction (conjugate gradient on the KL Hessian) -> backtracking line search
    -> figures.

The maths of the outer problem (surrogate, trust region, Gauss-Newton KL-Hessian products) is in
``outer.py``; the inner adaptation in ``adaptation.py``; CG and the line search in ``trpo.py``;
the inner loop that samples and adapts (training, evaluation, rendering, export) in
``inner_loop.py``. Frozen parameters (not in ``policy.trainable_names()``) get no gradient, no
step, nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch
from torch import Tensor

from bmaml_robot_deploy.checks import check_float, check_int

from .adaptation import Params, PolicyLike, adapt
from .advantages import compute_advantages
from .episodes import Episodes, ProcessedEpisodes, require_processed, task_mean, zero_masked
from .outer import OuterProblem, make_outer_problem, mean_kl, surrogate_loss
from .trpo import LineSearchResult, backtracking_line_search, conjugate_gradient_with_product, trust_region_step

_Item = TypeVar("_Item")


def tasks_per_chunk(policy: PolicyLike) -> int:
    """How many tasks the learner takes at a time (its groups of tasks; measured, 40 x 20 x 100).

    Feed-forward: 4. Small groups keep each product's intermediates in cache: the KL-Hessian
    product over 40 tasks costs 2-3x less in groups of 4 than all at once. Recurrent: 10. Their
    products are 100 sequential small steps, where groups of 4 pay per-operation overhead (groups
    of 10 are 1.3x faster than 4 and 1.75x faster than 40). Groups also run on parallel threads.
    Never derived from the thread count: the float results depend on the grouping, and must not
    depend on ``num_threads``.
    """
    return 10 if getattr(policy, "is_recurrent", False) else 4


def task_chunks(num_tasks: int, size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(num_tasks)`` in groups of ``size``."""
    return [(start, min(start + size, num_tasks)) for start in range(0, num_tasks, size)]


class _Chunk:
    """One group of tasks: its train episodes (per inner step), validation episodes and weight
    (its share of the tasks: every figure is a mean over tasks, so chunk figures are summed with
    these weights, in chunk order)."""

    def __init__(self, train: Sequence[ProcessedEpisodes], valid: ProcessedEpisodes, start: int, stop: int) -> None:
        self.train = [e.select_tasks(start, stop) for e in train]
        self.valid = valid.select_tasks(start, stop)
        self.weight = (stop - start) / valid.num_tasks
        self.observations = zero_masked(self.valid.observations, self.valid.mask)
        self.actions = zero_masked(self.valid.actions, self.valid.mask)


class MetaLearner:
    """MAML with TRPO outer updates, for any policy following the ``bmaml_robot.policies`` contract.

    Hyper-parameters are plain arguments (configs live elsewhere); the number of inner steps is
    ``len(train_episodes_per_step)`` given to ``update``. The tasks are processed in fixed groups
    (``task_chunks``) on ``num_threads`` threads; results do not depend on ``num_threads``.
    """

    def __init__(
        self,
        policy: PolicyLike,
        *,
        fast_lr: float,
        first_order: bool = False,
        max_kl: float = 1e-2,
        cg_iters: int = 10,
        cg_damping: float = 1e-5,
        hvp_subsample: float = 1.0,
        ls_max_steps: int = 15,
        ls_backtrack: float = 0.8,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        num_threads: int = 1,
    ) -> None:
        check_float(fast_lr, "fast_lr", low=0)
        check_float(max_kl, "max_kl", low=0, low_open=True)
        check_int(cg_iters, "cg_iters", minimum=1)
        check_float(cg_damping, "cg_damping", low=0)
        check_float(hvp_subsample, "hvp_subsample", low=0, high=1, low_open=True, what="a share")
        check_int(ls_max_steps, "ls_max_steps", minimum=1)
        check_float(ls_backtrack, "ls_backtrack", low=0, high=1, low_open=True, high_open=True)
        check_float(gamma, "gamma", low=0, high=1)
        check_float(gae_lambda, "gae_lambda", low=0, high=1)
        check_int(num_threads, "num_threads", minimum=1)
        self.policy = policy
        self.fast_lr = fast_lr
        self.first_order = first_order
        self.max_kl = max_kl
        self.cg_iters = cg_iters
        self.cg_damping = cg_damping
        self.hvp_subsample = hvp_subsample
        self.ls_max_steps = ls_max_steps
        self.ls_backtrack = ls_backtrack
        self.gamma = gamma
        self.gae_lambda = gae_lambda
        self.num_threads = num_threads
        # Task groups run on these threads (torch releases the GIL inside its kernels).
        self._pool = ThreadPoolExecutor(num_threads, "bmaml-learner") if num_threads > 1 else None

        self._trainable_params()  # fail early on an inconsistent policy

    def _trainable_params(self) -> list[Tensor]:
        """The module parameters named by ``policy.trainable_names()`` (checked), in that order."""
        named = dict(self.policy.named_parameters())
        names = list(self.policy.trainable_names())
        for name in names:
            if name not in named or not named[name].requires_grad:
                raise ValueError(
                    f"policy.trainable_names(): {name!r} is not a parameter with requires_grad=True"
                )
        unknown = [n for n in self.policy.adaptable_names() if n not in named]
        if unknown:
            raise ValueError(f"policy.adaptable_names(): {unknown} are not parameters of the policy")
        return [named[n] for n in names]

    # -- data ------------------------------------------------------------------------------
    def process(self, episodes: Episodes) -> ProcessedEpisodes:
        """The sampler's episodes with the per-task linear baseline fitted, GAE (the learner's
        gamma and lambda) and per-task normalised advantages: what adaptation and ``update`` take."""
        return compute_advantages(episodes, self.gamma, self.gae_lambda, normalize=True)

    def _map(self, function: Callable[[Any], _Item], items: Sequence[Any]) -> list[_Item]:
        """``[function(item) for item in items]`` on the learner's threads, results in order."""
        if self._pool is None or len(items) == 1:
            return [function(item) for item in items]
        return list(self._pool.map(function, items))

    @staticmethod
    def _weighted_sum(chunks: Sequence[_Chunk], values: Sequence[Any]) -> Any:
        """``sum_c weight_c * value_c``, always added in chunk order (deterministic)."""
        total = chunks[0].weight * values[0]
        for chunk, value in zip(chunks[1:], values[1:]):
            total = total + chunk.weight * value
        return total

    def _chunks(self, train: Sequence[ProcessedEpisodes], valid: ProcessedEpisodes) -> list[_Chunk]:
        """The groups of tasks of a meta-batch (checked: processed episodes, the same tasks)."""
        require_processed(valid, "valid_episodes")
        for i, episodes in enumerate(train):
            require_processed(episodes, f"train_episodes_per_step[{i}]")
            if episodes.num_tasks != valid.num_tasks:
                raise ValueError(
                    f"train_episodes_per_step[{i}]: expected {valid.num_tasks} tasks "
                    f"(as valid_episodes), got {episodes.num_tasks}"
                )
        size = tasks_per_chunk(self.policy)
        return [_Chunk(train, valid, start, stop) for start, stop in task_chunks(valid.num_tasks, size)]

    def curvature_episodes(self, episodes: ProcessedEpisodes) -> ProcessedEpisodes:
        """The episodes the KL-Hessian products use: the first ``ceil(hvp_subsample * B)`` of each
        task (all of them at ``hvp_subsample = 1``)."""
        count = max(1, math.ceil(self.hvp_subsample * episodes.episodes_per_task))
        return episodes if count >= episodes.episodes_per_task else episodes.select_episodes(count)

    def adapted_params(self, train_episodes_per_step: Sequence[ProcessedEpisodes]) -> Params:
        """Detached adapted parameters {name: [K, *shape]}, e.g. to sample the next episodes."""
        if not train_episodes_per_step:
            raise ValueError("train_episodes_per_step: empty, cannot infer the number of tasks")
        train = [require_processed(e, f"train_episodes_per_step[{i}]") for i, e in enumerate(train_episodes_per_step)]

        def adapt_chunk(bounds: tuple[int, int]) -> Params:
            episodes = [e.select_tasks(*bounds) for e in train]
            params = adapt(self.policy, episodes, self.fast_lr, first_order=True)
            return {name: value.detach() for name, value in params.items()}

        per_chunk = self._map(adapt_chunk, task_chunks(train[0].num_tasks, tasks_per_chunk(self.policy)))
        params = {name: torch.cat([p[name] for p in per_chunk]) for name in per_chunk[0]}
        bad = [name for name, value in params.items() if not bool(torch.isfinite(value).all())]
        if bad:  # sampling with them would fail deep inside torch.distributions
            raise FloatingPointError(f"inner adaptation gave non-finite parameters {bad[:3]}: fast_lr={self.fast_lr:g} "
                                     "is too large for this policy and task family")
        return params

    # -- outer update ----------------------------------------------------------------------
    def update(
        self, train_episodes_per_step: Sequence[ProcessedEpisodes], valid_episodes: ProcessedEpisodes
    ) -> dict[str, Any]:
        """One MAML-TRPO update of the trainable meta-parameters, in place.

        train_episodes_per_step: the processed episodes of inner step i, sampled with the
        parameters after i inner steps. valid_episodes: processed, sampled with the fully adapted
        parameters. All with the same K tasks (``inner_loop.adapt_to_tasks`` makes them).

        Returns the TRPO figures: ``loss_before``/``loss_after`` (surrogate), ``kl_before``
        (sample estimate of KL(sampling policy || adapted policy) at the old parameters, ~0 when
        sampler and learner agree), ``kl_after`` (KL of the accepted step, 0 if rejected),
        ``ls_steps`` (1-based trial index, 0 if rejected), ``step_accepted``, ``step_fraction``,
        ``grad_norm`` (surrogate gradient), ``step_norm`` (applied step).
        """
        chunks = self._chunks(train_episodes_per_step, valid_episodes)
        params = self._trainable_params()
        if not params:
            raise ValueError("policy.trainable_names(): empty, there is nothing to meta-train")
        with torch.enable_grad():
            problems = self._map(lambda c: self._problem(c.train, c.valid), chunks)
            grad = self._weighted_sum(chunks, self._map(lambda problem: problem.gradient(), problems))
            full_step = self._full_step(chunks, problems, grad)
        loss_before = float(self._weighted_sum(chunks, [p.loss.item() for p in problems]))
        kl_before = self._sampling_kl(chunks, problems)
        old_dists = [p.old_dist for p in problems]
        del problems  # free the graphs before the line search
        result = None if full_step is None else backtracking_line_search(
            params, full_step, lambda: self._evaluate(chunks, old_dists), loss_before,
            self.max_kl, self.ls_max_steps, self.ls_backtrack,
        )
        return _figures(result, loss_before, kl_before, grad, full_step)

    def _problem(self, train: Sequence[ProcessedEpisodes], valid: ProcessedEpisodes) -> OuterProblem:
        return make_outer_problem(self.policy, train, valid, self.fast_lr, self.first_order)

    def _full_step(self, chunks: Sequence[_Chunk], problems: Sequence[OuterProblem], grad: Tensor) -> Tensor | None:
        """The trust-region step along ``H^{-1} g`` (CG), or None when there is no direction.

        With ``hvp_subsample < 1``: TRPO's subsampled curvature (Schulman et al. 2015; rllab's
        subsample_factor): the products that CG repeats see a share of the episodes, adaptation
        included, as if only those had been sampled. The gradient and the line search (its KL
        check included) keep every episode."""
        curvature = problems
        if self.curvature_episodes(chunks[0].valid) is not chunks[0].valid:  # the share leaves episodes out
            curvature = self._map(lambda c: self._problem([self.curvature_episodes(e) for e in c.train],
                                                          self.curvature_episodes(c.valid)), chunks)

        def hvp(vector: Tensor) -> Tensor:
            products = self._map(lambda problem: problem.hvp(vector), curvature)
            return self._weighted_sum(chunks, products) + self.cg_damping * vector

        # H^{-1} g, and H (H^{-1} g) for the step scaling from CG's own products.
        direction, h_direction = conjugate_gradient_with_product(hvp, grad, self.cg_iters)
        return trust_region_step(direction, h_direction, self.max_kl)

    def _sampling_kl(self, chunks: Sequence[_Chunk], problems: Sequence[OuterProblem]) -> float:
        """Sample estimate of KL(sampling policy || adapted policy at theta_old) (~0 when sampler
        and learner agree)."""
        with torch.no_grad():
            return float(self._weighted_sum(chunks, [
                task_mean(torch.where(c.valid.mask > 0, c.valid.log_probs - p.log_probs, 0.0), c.valid.mask).mean()
                for c, p in zip(chunks, problems)
            ]))

    def _evaluate(self, chunks: Sequence[_Chunk], old_dists: Sequence[torch.distributions.Distribution]
                  ) -> tuple[float, float]:
        """(surrogate, KL to pi_old) at the current module parameters: the line search's check."""

        def evaluate_chunk(index: int) -> tuple[Tensor, Tensor]:
            # Adapted values are the same for first and second order: no graph needed here.
            chunk = chunks[index]
            with torch.no_grad():
                new_params = adapt(self.policy, chunk.train, self.fast_lr, first_order=True)
                new_params = {n: p.detach() for n, p in new_params.items()}
                new_dist = self.policy.distribution(*self.policy.sequence(chunk.observations, new_params))
                new_loss = surrogate_loss(new_dist.log_prob(chunk.actions), chunk.valid)
                new_kl = mean_kl(old_dists[index], new_dist, chunk.valid.mask)
            return new_loss, new_kl

        results = self._map(evaluate_chunk, range(len(chunks)))
        return (float(self._weighted_sum(chunks, [loss for loss, _ in results])),
                float(self._weighted_sum(chunks, [kl for _, kl in results])))


def _figures(result: LineSearchResult | None, loss_before: float, kl_before: float, grad: Tensor,
             full_step: Tensor | None) -> dict[str, Any]:
    """The figures ``MetaLearner.update`` returns (see there)."""
    fraction = result.step_fraction if result is not None else 0.0
    return {
        "loss_before": loss_before,
        "loss_after": result.loss if result is not None else loss_before,
        "kl_before": kl_before,
        "kl_after": result.kl if result is not None else 0.0,
        "ls_steps": result.step if result is not None else 0,
        "step_accepted": result is not None and result.accepted,
        "step_fraction": fraction,
        "grad_norm": float(grad.norm()),
        "step_norm": float(full_step.norm()) * fraction if full_step is not None else 0.0,
    }
