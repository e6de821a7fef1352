"""MAML-TRPO outer step (Finn et al. 2017; as in pytorch-maml by T. Deleu).

One meta-iteration, given for each of the K tasks the train episodes of every inner step and the
validation episodes sampled with the adapted parameters:

1. Adapt: ``phi_k(theta)`` = inner steps from the meta-parameters theta (``adapt``).
2. Surrogate on validation episodes, with the sampling log-probs as the old policy::

       L(theta) = - mean_k [ sum_{t,b} mask * exp(log pi_phi_k(a|o) - log pi_old(a|o)) * A
                             / sum_{t,b} mask ]

   and the trust region ``KL(theta) = mean_k masked_mean KL(pi_phi_k(theta_old) || pi_phi_k(theta))``.
   Both depend on theta through the adaptation (second order: through the inner gradient too).
3. TRPO on the trainable meta-parameters only (``policy.trainable_names()``): conjugate gradient
   on the KL Hessian, trust-region scaling, backtracking line search (``trpo.py``). Frozen
   parameters get no gradient, no step, nothing.

KL-Hessian products (``OuterProblem.hvp``). At theta_old the adapted policy IS pi_old, so the
gradient of the KL w.r.t. the adapted parameters phi is zero and the Hessian w.r.t. theta is
exactly the Gauss-Newton product ``H = J^T F J``: J = d phi / d theta, the Jacobian of the inner
adaptation (``AdaptationJacobian``: ``I - fast_lr * H_train`` per inner step, identity for first
order), F the Fisher of the Gaussian policy on the validation episodes at phi (weighted as
``mean_kl``). ``H v`` then costs two Hessian-vector products of the inner loss (double backward
through its retained gradient graph) and one Fisher product (a forward-mode jvp and a
first-order vjp), instead of a backward through the create_graph gradient of the KL (third
order through the adaptation). ``exact_kl_hvp`` is the direct Pearlmutter product, kept as the
reference.
"""

from __future__ import annotations

import math

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence, TypeVar

import torch
from torch import Tensor

from .adaptation import AdaptationJacobian, Params, PolicyLike, TaskTangents, adapt, adapt_linearized
from .advantages import compute_advantages
from .episodes import Episodes, step_weights, task_mean, zero_masked
from .analytic_outer import AnalyticOuterProblem
from .mlp_outer import MLPOuterProblem
from .recurrent_outer import RecurrentOuterProblem
from .trpo import (
    backtracking_line_search,
    conjugate_gradient_with_product,
    hessian_vector_product,
    trust_region_step,
)

_Item = TypeVar("_Item")


def surrogate_loss(log_probs: Tensor, episodes: Episodes) -> Tensor:
    """TRPO surrogate (to minimise), a scalar.

    log_probs: [T, K, B] log-probs of ``episodes.actions`` under the current (adapted) policy;
    ``episodes.log_probs`` is the sampling policy. The log-ratio and the advantages are zeroed at
    masked steps before ``exp`` so garbage there cannot produce NaN gradients.
    """
    valid = episodes.mask > 0
    log_ratio = torch.where(valid, log_probs - episodes.log_probs, 0.0)
    advantages = torch.where(valid, episodes.advantages, 0.0)
    return -task_mean(torch.exp(log_ratio) * advantages, episodes.mask).mean()


def mean_kl(
    old: torch.distributions.Distribution, new: torch.distributions.Distribution, mask: Tensor
) -> Tensor:
    """KL(old || new), masked mean per task then mean over tasks, a scalar. mask: [T, K, B]."""
    return task_mean(torch.distributions.kl_divergence(old, new), mask).mean()


def exact_kl_hvp(
    policy: PolicyLike,
    train_episodes: Sequence[Episodes],
    valid_episodes: Episodes,
    fast_lr: float,
    first_order: bool = False,
    damping: float = 0.0,
) -> Callable[[Tensor], Tensor]:
    """Reference ``v -> (H + damping I) v``, H the Hessian of the meta-batch KL at theta_old.

    The direct way (what ``MetaLearner.step`` did before ``OuterProblem``): adapt with the graph
    (second order: create_graph), KL to the detached adapted policy, Pearlmutter's trick on the
    trainable parameters. Episodes must carry advantages. Slow; for tests and checks.
    """
    named = dict(policy.named_parameters())  # type: ignore[attr-defined]
    params = [named[n] for n in policy.trainable_names()]
    observations = zero_masked(valid_episodes.observations, valid_episodes.mask)
    with torch.enable_grad():
        adapted = adapt(policy, train_episodes, fast_lr, first_order)
        mean, log_std = policy.sequence(observations, adapted)
        dist = policy.distribution(mean, log_std)
        old_dist = policy.distribution(mean.detach(), log_std.detach())
        kl = mean_kl(old_dist, dist, valid_episodes.mask)
        return hessian_vector_product(kl, params, damping)


def _is_exp_diag_gaussian(dist: torch.distributions.Distribution, mean: Tensor, log_std: Tensor) -> bool:
    """Whether ``dist`` is ``Independent(Normal(mean, exp(log_std)), 1)`` (the Fisher below)."""
    if not isinstance(dist, torch.distributions.Independent) or dist.reinterpreted_batch_ndims != 1:
        return False
    base = dist.base_dist
    if type(base) is not torch.distributions.Normal or base.loc.shape != mean.shape:
        return False
    with torch.no_grad():
        return bool(torch.equal(base.loc, mean)) and bool(
            torch.allclose(base.scale, log_std.exp().expand_as(base.scale), rtol=1e-6, atol=0.0)
        )


class OuterProblem:
    """The outer objective of one meta-batch at theta_old: surrogate, gradient, KL-Hessian products.

    Built once per ``MetaLearner.step``: adapts (keeping, for second order, the graph of every
    inner gradient), runs the policy once on the validation episodes from the adapted parameters
    as leaves, and keeps both graphs for ``gradient`` and every ``hvp``. Flat vectors are over
    ``policy.trainable_names()`` in that order, like ``flat_grad`` of the module parameters.

    train_episodes, valid_episodes: with advantages (``MetaLearner.process``).
    """

    def __init__(
        self,
        policy: PolicyLike,
        train_episodes: Sequence[Episodes],
        valid_episodes: Episodes,
        fast_lr: float,
        first_order: bool = False,
        damping: float = 0.0,
    ) -> None:
        self.policy = policy
        self.damping = damping
        named = dict(policy.named_parameters())  # type: ignore[attr-defined]
        self.names = list(policy.trainable_names())
        self.tangents = TaskTangents(named, self.names, valid_episodes.num_tasks)
        self._train = list(train_episodes)
        self._valid = valid_episodes
        self._fast_lr = fast_lr
        self._first_order = first_order
        valid = valid_episodes
        observations = zero_masked(valid.observations, valid.mask)
        actions = zero_masked(valid.actions, valid.mask)

        self.jacobian: AdaptationJacobian | None
        if first_order:
            # d phi / d theta = I on the trainable names (the inner gradient is a constant).
            with torch.no_grad():
                adapted = adapt(policy, train_episodes, fast_lr, first_order=True)
            adapted = {n: p.detach() for n, p in adapted.items()}
            self.jacobian = None
            tangent_names = list(self.names)
        else:
            adapted, self.jacobian = adapt_linearized(policy, train_episodes, fast_lr, self.names)
            tangent_names = self.jacobian.names
        self.adapted = adapted
        self.tangent_names = tangent_names
        with torch.enable_grad():
            self.leaves = {
                n: v.detach().requires_grad_(True) if n in set(tangent_names) else v
                for n, v in adapted.items()
            }
            mean, log_std = policy.sequence(observations, self.leaves)
            dist = policy.distribution(mean, log_std)
            self.log_probs = dist.log_prob(actions)
            self.loss = surrogate_loss(self.log_probs, valid)
        self.mean, self.log_std = mean, log_std
        # pi_old: the adapted policy at theta_old, a constant.
        self.old_dist = policy.distribution(mean.detach(), log_std.detach())
        self._gaussian = _is_exp_diag_gaussian(dist, mean, log_std)
        self._exact: Callable[[Tensor], Tensor] | None = None
        self._vjp_graph: tuple[list[Tensor | None], dict[str, Tensor | None]] | None = None
        # Fisher weights of mean_kl: mask / (number of valid steps of the task) / K, 0 where masked.
        mask = valid.mask
        weight = step_weights(mask) / mask.shape[1]
        self._weight = weight.unsqueeze(-1).to(mean.dtype)  # [T, K, B, 1]
        self._inv_var = torch.exp(-2.0 * log_std.detach())

    # -- products -------------------------------------------------------------------------------
    def gradient(self) -> Tensor:
        """Gradient of the surrogate w.r.t. the trainable meta-parameters, flat."""
        leaves = [self.leaves[n] for n in self.tangent_names]
        if not self.loss.requires_grad:
            return self.tangents.join({})
        grads = torch.autograd.grad(self.loss, leaves, retain_graph=True, materialize_grads=True)
        per_task = dict(zip(self.tangent_names, grads))
        if self.jacobian is not None:
            per_task = self.jacobian.vjp(per_task)
        return self.tangents.join(per_task)

    def _output_jvp(self, tangent: dict[str, Tensor]) -> list[Tensor | None]:
        """Tangents of the policy outputs ``[d mean, d log_std]`` in direction ``tangent`` (phi).

        The "double vjp": ``g(c) = J_out^T c`` is built once with its graph (``create_graph``)
        for a dummy cotangent c; its backward w.r.t. c in direction u is ``J_out u``, so the
        forward pass over the validation episodes is never run again (forward-mode AD would).
        """
        if self._vjp_graph is None:
            outputs = [o if o.requires_grad else None for o in (self.mean, self.log_std)]
            dummies = [None if o is None else torch.zeros_like(o, requires_grad=True) for o in outputs]
            pairs = [(o, d) for o, d in zip(outputs, dummies) if o is not None]
            grads: Sequence[Tensor | None] = [None] * len(self.tangent_names)
            if pairs:
                grads = torch.autograd.grad(
                    [o for o, _ in pairs],
                    [self.leaves[n] for n in self.tangent_names],
                    grad_outputs=[d for _, d in pairs],
                    create_graph=True,
                    retain_graph=True,
                    allow_unused=True,
                )
            self._vjp_graph = (dummies, dict(zip(self.tangent_names, grads)))
        dummies, grads = self._vjp_graph
        live = [d for d in dummies if d is not None]
        outputs, directions = [], []
        for name, u in tangent.items():
            g = grads.get(name)
            if g is not None and g.requires_grad:
                outputs.append(g)
                directions.append(u)
        if not outputs or not live:
            return [None, None]
        results = iter(
            torch.autograd.grad(outputs, live, grad_outputs=directions, retain_graph=True, allow_unused=True)
        )
        return [None if d is None else next(results) for d in dummies]

    def fisher_product(self, tangent: dict[str, Tensor]) -> dict[str, Tensor]:
        """``F u`` per task: the Fisher (KL Hessian) of the validation policy w.r.t. phi.

        ``F = J_out^T D J_out`` with D the Gaussian KL Hessian at KL = 0: ``1 / sigma^2`` for the
        mean, 2 for ``log_std``, each weighted as in ``mean_kl`` (masked per-task mean, mean over
        tasks).
        """
        d_mean, d_log_std = self._output_jvp(tangent)
        outputs, cotangents = [], []
        if d_mean is not None:
            outputs.append(self.mean)
            cotangents.append(self._weight * self._inv_var * d_mean)
        if d_log_std is not None:
            outputs.append(self.log_std)
            cotangents.append((2.0 * self._weight * d_log_std).sum_to_size(self.log_std.shape))
        if not outputs:
            return {}
        grads = torch.autograd.grad(
            outputs,
            [self.leaves[n] for n in self.tangent_names],
            grad_outputs=cotangents,
            retain_graph=True,
            materialize_grads=True,
        )
        return dict(zip(self.tangent_names, grads))

    def hvp(self, vector: Tensor) -> Tensor:
        """``(H + damping I) v`` with H the Hessian of the KL w.r.t. the trainable meta-parameters."""
        if not self._gaussian:  # not the diagonal Gaussian the Fisher assumes: the direct way
            if self._exact is None:
                self._exact = exact_kl_hvp(self.policy, self._train, self._valid, self._fast_lr,
                                           self._first_order, self.damping)
            return self._exact(vector)
        tangent = self.tangents.split(vector.detach())
        if self.jacobian is not None:
            tangent = self.jacobian.jvp(tangent)
        product = self.fisher_product(tangent)
        if self.jacobian is not None:
            product = self.jacobian.vjp(product)
        return self.tangents.join(product) + self.damping * vector


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

    def __init__(self, train: Sequence[Episodes], valid: Episodes, start: int, stop: int) -> None:
        self.train = [e.select_tasks(start, stop) for e in train]
        self.valid = valid.select_tasks(start, stop)
        self.weight = (stop - start) / valid.num_tasks
        self.observations = zero_masked(self.valid.observations, self.valid.mask)
        self.actions = zero_masked(self.valid.actions, self.valid.mask)


class MetaLearner:
    """MAML with TRPO outer updates, for any policy following the ``bmaml_robot.policies`` contract.

    Hyper-parameters are plain arguments (configs live elsewhere); the number of inner steps is
    ``len(train_episodes_per_step)`` given to ``step``. The tasks are processed in fixed groups
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
        if fast_lr < 0:
            raise ValueError(f"fast_lr: expected >= 0, got {fast_lr}")
        if max_kl <= 0:
            raise ValueError(f"max_kl: expected > 0, got {max_kl}")
        if cg_iters < 1:
            raise ValueError(f"cg_iters: expected >= 1, got {cg_iters}")
        if cg_damping < 0:
            raise ValueError(f"cg_damping: expected >= 0, got {cg_damping}")
        if not 0.0 < hvp_subsample <= 1.0:
            raise ValueError(f"hvp_subsample: expected a share in (0, 1], got {hvp_subsample}")
        if ls_max_steps < 1:
            raise ValueError(f"ls_max_steps: expected >= 1, got {ls_max_steps}")
        if not 0.0 < ls_backtrack < 1.0:
            raise ValueError(f"ls_backtrack: expected in (0, 1), got {ls_backtrack}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma: expected in [0, 1], got {gamma}")
        if not 0.0 <= gae_lambda <= 1.0:
            raise ValueError(f"gae_lambda: expected in [0, 1], got {gae_lambda}")
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads: expected an integer >= 1, got {num_threads!r}")
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
        # (episodes, gamma, gae_lambda, processed) of the latest ``process`` calls: the trainer
        # calls ``adapted_params`` and then ``step`` with the same episodes objects.
        self._processed: list[tuple[Episodes, float, float, Episodes]] = []

        self._trainable_params()  # fail early on an inconsistent policy

    def _trainable_params(self) -> list[Tensor]:
        """The module parameters named by ``policy.trainable_names()`` (checked), in that order."""
        named = dict(self.policy.named_parameters())  # type: ignore[attr-defined]
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
    def process(self, episodes: Episodes) -> Episodes:
        """Episodes with (per-task normalised) advantages; computed only if missing.

        The result is remembered for the same ``episodes`` object (by identity; episodes are
        treated as immutable) until the end of the next ``step``, so ``adapted_params`` and
        ``step`` on the same episodes fit the baseline and run GAE once.
        """
        if episodes.advantages is not None:
            episodes.validate()
            return episodes
        for source, gamma, gae_lambda, processed in self._processed:
            if source is episodes and gamma == self.gamma and gae_lambda == self.gae_lambda:
                return processed
        processed = compute_advantages(episodes, self.gamma, self.gae_lambda, normalize=True)
        self._processed = [*self._processed[-7:], (episodes, self.gamma, self.gae_lambda, processed)]
        return processed

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

    def _chunks(self, train: Sequence[Episodes], valid: Episodes) -> list[_Chunk]:
        size = tasks_per_chunk(self.policy)
        return [_Chunk(train, valid, start, stop) for start, stop in task_chunks(valid.num_tasks, size)]

    def curvature_episodes(self, episodes: Episodes) -> Episodes:
        """The episodes the KL-Hessian products use: the first ``ceil(hvp_subsample * B)`` of each
        task (all of them at ``hvp_subsample = 1``)."""
        count = max(1, math.ceil(self.hvp_subsample * episodes.episodes_per_task))
        return episodes if count >= episodes.episodes_per_task else episodes.select_episodes(count)

    def adapted_params(self, train_episodes_per_step: Sequence[Episodes]) -> Params:
        """Detached adapted parameters {name: [K, *shape]}, e.g. to sample the next episodes."""
        train = [self.process(e) for e in train_episodes_per_step]
        if not train:
            raise ValueError("train_episodes_per_step: empty, cannot infer the number of tasks")

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

    # -- outer step ------------------------------------------------------------------------
    def step(
        self, train_episodes_per_step: Sequence[Episodes], valid_episodes: Episodes
    ) -> dict[str, Any]:
        """One MAML-TRPO update of the trainable meta-parameters, in place.

        train_episodes_per_step: the episodes of inner step i, sampled with the parameters after
        i inner steps (advantages computed here if None). valid_episodes: sampled with the fully
        adapted parameters. All with the same K tasks.

        Returns figures for logging: ``loss_before``/``loss_after`` (surrogate), ``kl_before``
        (sample estimate of KL(sampling policy || adapted policy) at the old parameters, ~0 when
        sampler and learner agree), ``kl_after`` (KL of the accepted step, 0 if rejected),
        ``ls_steps`` (1-based trial index, 0 if rejected), ``step_accepted``, ``step_fraction``,
        ``grad_norm`` (surrogate gradient), ``step_norm`` (applied step), ``return_before``
        (mean undiscounted return of the first train episodes) and ``return_after`` (of the
        validation episodes).
        """
        policy = self.policy
        train = [self.process(e) for e in train_episodes_per_step]
        valid = self.process(valid_episodes)
        for i, episodes in enumerate(train):
            if episodes.num_tasks != valid.num_tasks:
                raise ValueError(
                    f"train_episodes_per_step[{i}]: expected {valid.num_tasks} tasks "
                    f"(as valid_episodes), got {episodes.num_tasks}"
                )
        params = self._trainable_params()
        if not params:
            raise ValueError("policy.trainable_names(): empty, there is nothing to meta-train")
        chunks = self._chunks(train, valid)

        # The tanh MLP, RNN and GRU have hand-derived products (same values, faster than autograd's).
        problem_class = next((c for c in (MLPOuterProblem, RecurrentOuterProblem) if c.supports(policy)), OuterProblem)
        with torch.enable_grad():
            problems = self._map(
                lambda c: problem_class(policy, c.train, c.valid, self.fast_lr, self.first_order), chunks
            )
            grad = self._weighted_sum(chunks, self._map(lambda problem: problem.gradient(), problems))
            curvature = problems
            if self.curvature_episodes(valid) is not valid:  # the share leaves episodes out
                # TRPO's subsampled curvature (Schulman et al. 2015; rllab's subsample_factor): the
                # products that CG repeats see a share of the episodes, adaptation included, as if
                # only those had been sampled. The gradient and the line search (its KL check
                # included) keep every episode.
                def subsampled_problem(c: _Chunk) -> OuterProblem | AnalyticOuterProblem:
                    train_sub = [self.curvature_episodes(e) for e in c.train]
                    return problem_class(policy, train_sub, self.curvature_episodes(c.valid),
                                         self.fast_lr, self.first_order)

                curvature = self._map(subsampled_problem, chunks)

            def hvp(vector: Tensor) -> Tensor:
                products = self._map(lambda problem: problem.hvp(vector), curvature)
                return self._weighted_sum(chunks, products) + self.cg_damping * vector

            # H^{-1} g, and H (H^{-1} g) for the step scaling from CG's own products.
            direction, h_direction = conjugate_gradient_with_product(hvp, grad, self.cg_iters)
            full_step = trust_region_step(direction, h_direction, self.max_kl)

        loss_before = float(self._weighted_sum(chunks, [p.loss.item() for p in problems]))
        old_dists = [p.old_dist for p in problems]
        with torch.no_grad():
            kl_before = float(self._weighted_sum(chunks, [
                task_mean(torch.where(c.valid.mask > 0, c.valid.log_probs - p.log_probs, 0.0), c.valid.mask).mean()
                for c, p in zip(chunks, problems)
            ]))
        problems = curvature = []  # free the graphs

        def evaluate_chunk(index: int) -> tuple[Tensor, Tensor]:
            # Adapted values are the same for first and second order: no graph needed here.
            chunk = chunks[index]
            with torch.no_grad():
                new_params = adapt(policy, chunk.train, self.fast_lr, first_order=True)
                new_params = {n: p.detach() for n, p in new_params.items()}
                new_dist = policy.distribution(*policy.sequence(chunk.observations, new_params))
                new_loss = surrogate_loss(new_dist.log_prob(chunk.actions), chunk.valid)
                new_kl = mean_kl(old_dists[index], new_dist, chunk.valid.mask)
            return new_loss, new_kl

        def evaluate() -> tuple[float, float]:
            results = self._map(evaluate_chunk, range(len(chunks)))
            return (float(self._weighted_sum(chunks, [loss for loss, _ in results])),
                    float(self._weighted_sum(chunks, [kl for _, kl in results])))

        if full_step is None:
            result = None
        else:
            result = backtracking_line_search(
                params,
                full_step,
                evaluate,
                loss_before,
                self.max_kl,
                self.ls_max_steps,
                self.ls_backtrack,
            )
        accepted = result is not None and result.accepted
        fraction = result.step_fraction if result is not None else 0.0
        self._processed = []  # these episodes are done with
        return {
            "loss_before": loss_before,
            "loss_after": result.loss if result is not None else loss_before,
            "kl_before": kl_before,
            "kl_after": result.kl if result is not None else 0.0,
            "ls_steps": result.num_steps if result is not None else 0,
            "step_accepted": accepted,
            "step_fraction": fraction,
            "grad_norm": float(grad.norm()),
            "step_norm": float(full_step.norm()) * fraction if full_step is not None else 0.0,
            "return_before": float(train[0].episode_returns().mean()) if train else float("nan"),
            "return_after": float(valid.episode_returns().mean()),
        }
