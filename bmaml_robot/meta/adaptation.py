"""Inner loop of MAML: per-task policy-gradient steps on functional (batched) parameters.

Every parameter is carried as a tensor ``[K, *shape]``, one slice per task, built from the
meta-parameters by ``policy.batched_params(K)`` (an expand, so gradients flow back to the
meta-parameters). The inner loss of task k depends only on slice k, so the gradient of the SUM of
the K task losses w.r.t. the batched tensor is, slice by slice, each task's own gradient: one
``torch.autograd.grad`` call adapts all tasks at once. Module parameters are never edited.

One inner step (Finn et al. 2017), on adaptable names only::

    phi_k <- phi_k - fast_lr * grad_phi L_k(phi_k),
    L_k(phi) = - sum_{t,b} mask * log pi_phi(a | o) * A / sum_{t,b} mask      (REINFORCE)

Second order (``first_order=False``) keeps the graph of the gradient (``create_graph=True``) so
the outer gradient sees ``d phi / d theta = I - fast_lr * Hessian``; first order treats the inner
gradient as a constant (``d phi / d theta = I``). Both give the same adapted values.

``adapt_linearized`` adapts once and keeps the graph of every inner gradient, so that products
with that Jacobian (``AdaptationJacobian.jvp``/``vjp``: Hessian-vector products of the inner loss)
can be taken many times without adapting again (the outer step's conjugate gradient).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

import torch
from torch import Tensor

from bmaml_robot.policies.base import Params

from .episodes import Episodes, ProcessedEpisodes, require_processed, task_mean, zero_masked


class PolicyLike(Protocol):
    """The part of ``bmaml_robot.policies.Policy`` the meta-learner relies on."""

    def named_parameters(self) -> Iterator[tuple[str, torch.nn.Parameter]]: ...
    def adaptable_names(self) -> list[str]: ...
    def trainable_names(self) -> list[str]: ...
    def sequence(self, obs: Tensor, params: Params | None = None) -> tuple[Tensor, Tensor]: ...
    def distribution(self, mean: Tensor, log_std: Tensor) -> torch.distributions.Distribution: ...
    def batched_params(self, num_tasks: int) -> Params: ...


def policy_distribution(
    policy: PolicyLike, episodes: Episodes, params: Params | None
) -> torch.distributions.Distribution:
    """Action distribution of the policy along the episodes, batch shape [T, K, B].

    Recurrent policies run over the whole sequence (state reset at t = 0), so gradients are
    back-propagated through time.
    """
    mean, log_std = policy.sequence(zero_masked(episodes.observations, episodes.mask), params)
    return policy.distribution(mean, log_std)


def action_log_probs(policy: PolicyLike, episodes: Episodes, params: Params | None) -> Tensor:
    """log pi(a_t | o_<=t) of the episodes' actions, [T, K, B]."""
    dist = policy_distribution(policy, episodes, params)
    return dist.log_prob(zero_masked(episodes.actions, episodes.mask))


def inner_loss(policy: PolicyLike, episodes: ProcessedEpisodes, params: Params | None) -> Tensor:
    """REINFORCE loss of each task, [K]: ``-sum(log_prob * adv * mask) / sum(mask)``."""
    require_processed(episodes, "episodes")
    log_probs = action_log_probs(policy, episodes, params)
    advantages = torch.where(episodes.mask > 0, episodes.advantages, 0.0)
    return -task_mean(log_probs * advantages, episodes.mask)


def adapt(
    policy: PolicyLike,
    train_episodes: Sequence[ProcessedEpisodes],
    fast_lr: float,
    first_order: bool = False,
    params: Params | None = None,
) -> Params:
    """Adapted per-task parameters after ``len(train_episodes)`` inner steps.

    train_episodes: step i's processed episodes, sampled with the parameters after i
    steps; all with the same K. params: starting parameters {name: [K, *shape]} with every
    name, or None for ``policy.batched_params(K)``. Returns a new dict {name: [K, *shape]}:
    adapted tensors for ``policy.adaptable_names()``, the starting tensors (same objects) for
    every other name.

    Works under ``torch.no_grad()`` too (e.g. to adapt for evaluation): gradients are enabled
    here, and a starting adaptable tensor that does not require grad is treated as a new leaf.
    """
    names = policy.adaptable_names()
    if params is None:
        if len(train_episodes) == 0:
            raise ValueError("train_episodes: empty and params is None, cannot infer the number of tasks")
        with torch.enable_grad():  # under no_grad, expand would give views that hide gradients
            params = policy.batched_params(train_episodes[0].num_tasks)
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"params: adaptable names {missing} are missing (got {sorted(params)})")
    params = dict(params)
    with torch.enable_grad():
        for name in names:
            value = params[name]
            # Detached tensors, or views made under no_grad (they claim requires_grad but route
            # no gradient to themselves): adapt from them as new leaves.
            if not value.requires_grad or (value.grad_fn is None and value._base is not None):
                params[name] = value.detach().requires_grad_(True)
        for step, episodes in enumerate(train_episodes):
            num_tasks = params[names[0]].shape[0] if names else episodes.num_tasks
            if episodes.num_tasks != num_tasks:
                raise ValueError(
                    f"train_episodes[{step}]: expected {num_tasks} tasks, got {episodes.num_tasks}"
                )
            if not names or fast_lr == 0.0:
                continue
            # Sum over tasks: task k's loss depends only on slice k, so this is every task's gradient.
            loss = inner_loss(policy, episodes, params).sum()
            grads = torch.autograd.grad(
                loss,
                [params[n] for n in names],
                create_graph=not first_order,
                materialize_grads=True,
            )
            for name, grad in zip(names, grads):
                params[name] = params[name] - fast_lr * grad
    return params


class TaskTangents:
    """Flat vectors over named meta-parameters <-> per-task tangents ``{name: [K, *shape]}``.

    A flat vector (as ``flat_grad`` of the module parameters, in ``names`` order) is the same for
    every task, so ``split`` expands it over the K tasks; the meta-parameters are shared by the
    tasks, so ``join`` sums the task slices (a missing name is a zero tangent).
    """

    def __init__(self, named: Mapping[str, Tensor], names: Sequence[str], num_tasks: int) -> None:
        self.names = list(names)
        self.shapes = [named[n].shape for n in self.names]
        self.num_tasks = num_tasks
        self._like = named[self.names[0]] if self.names else None

    def split(self, flat: Tensor) -> dict[str, Tensor]:
        out, offset = {}, 0
        for name, shape in zip(self.names, self.shapes):
            n = shape.numel()
            out[name] = flat[offset : offset + n].view(shape).expand(self.num_tasks, *shape)
            offset += n
        if offset != flat.numel():
            raise ValueError(f"vector: expected {offset} elements, got {flat.numel()}")
        return out

    def join(self, per_task: Mapping[str, Tensor]) -> Tensor:
        parts = []
        for name, shape in zip(self.names, self.shapes):
            value = per_task.get(name)
            if value is None:
                assert self._like is not None  # set when names is not empty
                parts.append(self._like.new_zeros(shape.numel()))
            else:
                parts.append(value.sum(dim=0).reshape(-1))
        return torch.cat(parts) if parts else torch.zeros(0)


class AdaptationJacobian:
    """Products with the Jacobian of the (second-order) inner adaptation map, per task.

    The map is ``theta -> phi = S_n o ... o S_1 (theta)`` with one inner step
    ``S_i(x) = x - fast_lr * P_A grad L_i(x)`` (``P_A``: the adaptable names; other names pass
    through unchanged), so ``J_i = I - fast_lr * P_A H_i`` with ``H_i`` the Hessian of step i's
    inner loss at the step's starting point, w.r.t. every name in ``names``. Tangents are dicts
    ``{name: Tensor [K, *shape]}`` over ``names`` (a missing name is a zero tangent); task k's
    slice only meets task k's Hessian. Each ``H_i u`` is one backward pass through the retained
    graph of step i's inner gradient (double backward), so the adaptation is never recomputed.
    """

    def __init__(
        self,
        fast_lr: float,
        names: Sequence[str],
        adaptable: Sequence[str],
        steps: Sequence[tuple[dict[str, Tensor], dict[str, Tensor]]],
    ) -> None:
        self.fast_lr = fast_lr
        self.names = list(names)
        self.adaptable = [n for n in self.names if n in set(adaptable)]
        # Per step: (leaves {name: x [K, *shape]}, inner gradients {name: g [K, *shape]}) over names.
        self.steps = list(steps)

    @staticmethod
    def _hessian_product(
        leaves: dict[str, Tensor], grads: dict[str, Tensor], vector: dict[str, Tensor],
        out_names: Sequence[str],
    ) -> dict[str, Tensor]:
        """``{n: (H vector)[n] for n in out_names}`` with H the Hessian behind ``grads``.

        ``(H u)[a] = d/dx_a (sum_n grads[n] . u[n])``: one backward through the gradient graph.
        """
        outputs, cotangents = [], []
        for name, u in vector.items():
            g = grads.get(name)
            if g is not None and g.requires_grad:
                outputs.append(g)
                cotangents.append(u)
        if not outputs:
            return {n: torch.zeros_like(leaves[n]) for n in out_names}
        products = torch.autograd.grad(
            outputs,
            [leaves[n] for n in out_names],
            grad_outputs=cotangents,
            retain_graph=True,
            materialize_grads=True,
        )
        return dict(zip(out_names, products))

    def jvp(self, tangent: dict[str, Tensor]) -> dict[str, Tensor]:
        """``J u``: ``u <- u - fast_lr * P_A H_i u`` for i = 1..n."""
        u = {n: t for n, t in tangent.items() if n in set(self.names)}
        for leaves, grads in self.steps:
            hu = self._hessian_product(leaves, grads, u, self.adaptable)
            for name in self.adaptable:
                u[name] = u[name] - self.fast_lr * hu[name] if name in u else -self.fast_lr * hu[name]
        return u

    def vjp(self, cotangent: dict[str, Tensor]) -> dict[str, Tensor]:
        """``J^T w``: ``w <- w - fast_lr * H_i P_A w`` for i = n..1."""
        w = {n: t for n, t in cotangent.items() if n in set(self.names)}
        for leaves, grads in reversed(self.steps):
            adaptable_part = {n: w[n] for n in self.adaptable if n in w}
            hw = self._hessian_product(leaves, grads, adaptable_part, self.names)
            for name in self.names:
                w[name] = w[name] - self.fast_lr * hw[name] if name in w else -self.fast_lr * hw[name]
        return w


def adapt_linearized(
    policy: PolicyLike,
    train_episodes: Sequence[ProcessedEpisodes],
    fast_lr: float,
    names: Sequence[str],
) -> tuple[Params, AdaptationJacobian]:
    """Adapted parameters (detached, as ``adapt``) and the Jacobian of the adaptation map.

    names: the parameters the Jacobian acts on (the meta-parameters that get a gradient); the
    adaptable names are added to them (an adaptable parameter that is not meta-trained still moves
    with the others through the inner gradient). The graph of every inner gradient is kept
    (``create_graph=True``) for ``AdaptationJacobian``; the values are those of ``adapt``.
    """
    adaptable = policy.adaptable_names()
    if len(train_episodes) == 0:
        raise ValueError("train_episodes: empty, cannot infer the number of tasks")
    num_tasks = train_episodes[0].num_tasks
    with torch.enable_grad():  # under no_grad, expand would give views that hide gradients
        start = policy.batched_params(num_tasks)
    missing = [n for n in adaptable if n not in start]
    if missing:
        raise ValueError(f"params: adaptable names {missing} are missing (got {sorted(start)})")
    wanted = set(names) | set(adaptable)
    active = [n for n in start if n in wanted]
    params: dict[str, Tensor] = {n: v.detach() for n, v in start.items()}
    steps = []
    with torch.enable_grad():
        for step, episodes in enumerate(train_episodes):
            if episodes.num_tasks != num_tasks:
                raise ValueError(
                    f"train_episodes[{step}]: expected {num_tasks} tasks, got {episodes.num_tasks}"
                )
            if not adaptable or fast_lr == 0.0:
                continue
            leaves = dict(params)
            for name in active:
                leaves[name] = params[name].detach().requires_grad_(True)
            loss = inner_loss(policy, episodes, leaves).sum()
            grads = torch.autograd.grad(
                loss, [leaves[n] for n in active], create_graph=True, materialize_grads=True
            )
            grads_by_name = dict(zip(active, grads))
            steps.append(({n: leaves[n] for n in active}, grads_by_name))
            for name in adaptable:
                params[name] = (leaves[name] - fast_lr * grads_by_name[name]).detach()
    return params, AdaptationJacobian(fast_lr, active, adaptable, steps)
