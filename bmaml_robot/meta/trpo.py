"""Trust-region pieces (Schulman et al. 2015), independent of MAML.

TRPO maximises a surrogate inside a KL ball::

    min_theta L(theta)   s.t.   KL(pi_old || pi_theta) <= max_kl

Around theta_old, L ~ g . d and KL ~ 0.5 d^T H d with H the Hessian of the KL (the Fisher
matrix). The solution direction is s = H^{-1} g, found by conjugate gradient using only
Hessian-vector products; the step that puts the quadratic KL exactly on the boundary is
``d = - sqrt(2 max_kl / s^T H s) * s``. Because both approximations are local, a backtracking line
search then shrinks d until the true surrogate improves and the true KL is within max_kl.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor


def flat_concat(tensors: Sequence[Tensor]) -> Tensor:
    """Concatenate tensors into one flat vector [sum of numel]."""
    return torch.cat([t.reshape(-1) for t in tensors])


def flat_grad(
    output: Tensor, params: Sequence[Tensor], *, retain_graph: bool = False, create_graph: bool = False
) -> Tensor:
    """Gradient of a scalar w.r.t. params as one flat vector (zeros for unused params)."""
    grads = torch.autograd.grad(
        output,
        list(params),
        retain_graph=retain_graph,
        create_graph=create_graph,
        materialize_grads=True,
    )
    return flat_concat(grads)


def hessian_vector_product(
    kl: Tensor, params: Sequence[Tensor], damping: float = 0.0
) -> Callable[[Tensor], Tensor]:
    """Return ``v -> (H + damping I) v`` with H the Hessian of the scalar ``kl`` w.r.t. params.

    kl must have been computed from params with a graph that is twice differentiable (e.g.
    through a second-order inner adaptation). The gradient of the KL is taken once with
    ``create_graph=True``; each product is then one more backward pass of ``grad_kl . v``
    (Pearlmutter's trick), so the forward pass (and the adaptation) is not recomputed.
    """
    params = list(params)
    grad_kl = flat_grad(kl, params, retain_graph=True, create_graph=True)

    def hvp(vector: Tensor) -> Tensor:
        if not grad_kl.requires_grad:  # KL independent of params: H = 0
            return damping * vector
        product = flat_grad(grad_kl @ vector.detach(), params, retain_graph=True)
        return product + damping * vector

    return hvp


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor], b: Tensor, iters: int = 10, residual_tol: float = 1e-10
) -> Tensor:
    """Approximately solve ``A x = b`` for symmetric positive definite A given as ``matvec``.

    b: [n] -> x: [n]. Stops after ``iters`` products or once ``|r|^2 < residual_tol``.
    """
    return conjugate_gradient_with_product(matvec, b, iters, residual_tol)[0]


def conjugate_gradient_with_product(
    matvec: Callable[[Tensor], Tensor], b: Tensor, iters: int = 10, residual_tol: float = 1e-10
) -> tuple[Tensor, Tensor]:
    """``conjugate_gradient`` that also returns ``A x`` at no extra product.

    ``A x = sum_i alpha_i A p_i`` is accumulated from the products CG computes anyway (equal to
    ``matvec(x)`` up to float rounding), which saves the product TRPO's step scaling needs.
    """
    x = torch.zeros_like(b)
    ax = torch.zeros_like(b)
    r = b.clone()  # residual b - A x with x = 0
    p = r.clone()
    r_dot_r = r @ r
    for _ in range(iters):
        if r_dot_r < residual_tol:
            break
        Ap = matvec(p)
        alpha = r_dot_r / (p @ Ap)
        x = x + alpha * p
        ax = ax + alpha * Ap
        r = r - alpha * Ap
        new_r_dot_r = r @ r
        p = r + (new_r_dot_r / r_dot_r) * p
        r_dot_r = new_r_dot_r
    return x, ax


def trust_region_step(direction: Tensor, hvp_direction: Tensor, max_kl: float) -> Tensor | None:
    """Scale the CG direction s so that the quadratic KL ``0.5 d^T H d`` equals max_kl.

    Returns ``sqrt(2 max_kl / s^T H s) * s`` (to be SUBTRACTED from the params), or None if
    ``s^T H s`` is not a positive finite number (zero gradient or a broken curvature).
    """
    shs = float(direction @ hvp_direction)
    if not math.isfinite(shs) or shs <= 0.0:
        return None
    return direction * math.sqrt(2.0 * max_kl / shs)


@torch.no_grad()
def write_flat(params: Sequence[Tensor], flat: Tensor) -> None:
    """Copy a flat vector into params in place (like ``vector_to_parameters``, but a copy:
    the parameters keep their own storage and are never aliased to ``flat``)."""
    offset = 0
    for p in params:
        n = p.numel()
        p.copy_(flat[offset : offset + n].view_as(p))
        offset += n
    if offset != flat.numel():
        raise ValueError(f"flat: expected {offset} elements, got {flat.numel()}")


class LineSearchResult(NamedTuple):
    accepted: bool
    """Whether a step was accepted (params now hold it) or not (params restored exactly)."""
    step: int
    """1-based index of the accepted line-search step, 0 if rejected (metrics' ``ls_steps``)."""
    step_fraction: float
    """Fraction of the full step that was accepted, 0.0 if rejected."""
    loss: float
    """Surrogate at the resulting params (the old value if rejected)."""
    kl: float
    """KL at the resulting params (0.0 if rejected)."""


def backtracking_line_search(
    params: Sequence[Tensor],
    full_step: Tensor,
    evaluate: Callable[[], tuple[float, float]],
    loss_before: float,
    max_kl: float,
    max_steps: int = 15,
    backtrack: float = 0.8,
) -> LineSearchResult:
    """Try ``theta_old - backtrack^i * full_step`` for i = 0, 1, ...; keep the first that improves.

    params: the tensors to update in place (trainable parameters only). full_step: flat [n].
    evaluate: returns (surrogate, kl) at the params as currently written. A step is accepted
    iff ``surrogate < loss_before`` and ``kl <= max_kl`` (both finite). If none is, the params
    are restored bit-identically from a copy taken before the first step.
    """
    params = list(params)
    saved = [p.detach().clone() for p in params]
    old_flat = flat_concat(saved)
    fraction = 1.0
    for i in range(max_steps):
        write_flat(params, old_flat - fraction * full_step)
        loss, kl = evaluate()
        if math.isfinite(loss) and math.isfinite(kl) and loss < loss_before and kl <= max_kl:
            return LineSearchResult(True, i + 1, fraction, loss, kl)
        fraction *= backtrack
    with torch.no_grad():
        for p, old in zip(params, saved):
            p.copy_(old)
    return LineSearchResult(False, 0, 0.0, loss_before, 0.0)
