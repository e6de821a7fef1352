"""The Gauss-Newton KL-Hessian products of MAML-TRPO (``outer.py``) against the direct ones.

At theta_old the KL's gradient w.r.t. the adapted parameters is zero, so its Hessian w.r.t. the
meta-parameters is exactly ``J^T F J`` (J: Jacobian of the inner adaptation, F: Fisher of the
validation policy). These tests check that, and the whole ``MetaLearner.update``, against the
direct Pearlmutter product through the (second-order) adaptation: ``exact_kl_hvp``.
"""

from __future__ import annotations

import math

import pytest
import torch
from meta_helpers import TinyPolicy, meta_batch, snapshot

from bmaml_robot.meta import (
    Episodes,
    MetaLearner,
    ProcessedEpisodes,
    adapt,
    backtracking_line_search,
    conjugate_gradient,
    maml_trpo,
    mean_kl,
    surrogate_loss,
    trust_region_step,
    zero_masked,
)
from bmaml_robot.meta.mlp_outer import MLPOuterProblem
from bmaml_robot.meta.outer import AutogradOuterProblem, exact_kl_hvp, make_outer_problem
from bmaml_robot.meta.recurrent_outer import RecurrentOuterProblem
from bmaml_robot.meta.trpo import conjugate_gradient_with_product, flat_grad
from bmaml_robot.policies import linear, make_policy
from bmaml_robot.policies.base import stack_steps


# ----------------------------------------------------------------------------- helpers
def num_trainable(policy):
    named = dict(policy.named_parameters())
    return sum(named[n].numel() for n in policy.trainable_names())


def relative_error(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-30))



CASES = [
    ("mlp", "frozen"),
    ("gru", "frozen"),
    ("gru", "outer"),
    ("gru", "all"),
    ("lstm", "frozen"),
    ("lstm", "outer"),
    ("lstm", "all"),
]


# ----------------------------------------------------------------------------- HVP
@pytest.mark.parametrize("adapt_steps", [1, 2])
@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("kind, recurrence", CASES)
def test_gauss_newton_hvp_equals_exact_pearlmutter(kind, recurrence, first_order, adapt_steps):
    policy = make_policy(kind, obs_dim=3, act_dim=2, hidden_sizes=(5, 4), hidden_size=4,
                         recurrence=recurrence, seed=1)
    train, valid = meta_batch(policy, K=3, B=4, T=5, adapt_steps=adapt_steps, fast_lr=0.3)
    problem = AutogradOuterProblem(policy, train, valid, 0.3, first_order, damping=0.0)
    exact = exact_kl_hvp(policy, train, valid, 0.3, first_order, damping=0.0)
    g = torch.Generator().manual_seed(7)
    for _ in range(2):
        v = torch.randn(num_trainable(policy), generator=g)
        reference = exact(v)
        assert reference.norm() > 0
        assert relative_error(problem.hvp(v), reference) < 1e-5
    # Damping adds damping * v, as before.
    damped = AutogradOuterProblem(policy, train, valid, 0.3, first_order, damping=0.1)
    assert relative_error(damped.hvp(v), reference + 0.1 * v) < 1e-5


@pytest.mark.parametrize("adapt_steps", [1, 2])
@pytest.mark.parametrize("first_order", [False, True])
def test_gauss_newton_hvp_float64_tight_and_partly_trainable(first_order, adapt_steps):
    # w1 adapts in the inner loop but is not meta-trained: in second order it still moves with
    # theta through the inner gradient (a cross term of J), in first order it does not.
    policy = TinyPolicy()
    policy.w1.requires_grad_(False)
    train, valid = meta_batch(policy, K=2, B=4, T=3, adapt_steps=adapt_steps, fast_lr=0.5,
                              dtype=torch.float64)
    problem = AutogradOuterProblem(policy, train, valid, 0.5, first_order)
    exact = exact_kl_hvp(policy, train, valid, 0.5, first_order)
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        v = torch.randn(num_trainable(policy), generator=g, dtype=torch.float64)
        torch.testing.assert_close(problem.hvp(v), exact(v), rtol=1e-10, atol=1e-12)


def test_gauss_newton_hvp_zero_fast_lr_and_non_gaussian_fallback():
    policy = TinyPolicy()
    train, valid = meta_batch(policy, K=2, B=3, T=3, fast_lr=0.0, dtype=torch.float64)
    v = torch.randn(num_trainable(policy), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for first_order in (False, True):
        problem = AutogradOuterProblem(policy, train, valid, 0.0, first_order)
        torch.testing.assert_close(problem.hvp(v), exact_kl_hvp(policy, train, valid, 0.0, first_order)(v))
    # A scale that is not exp(log_std): the Gaussian Fisher does not apply, the direct way is used.
    other = TinyPolicy(softplus_std=True)
    train, valid = meta_batch(other, K=2, B=3, T=3, fast_lr=0.3, dtype=torch.float64)
    problem = AutogradOuterProblem(other, train, valid, 0.3, False)
    assert not problem._gaussian
    torch.testing.assert_close(problem.hvp(v), exact_kl_hvp(other, train, valid, 0.3, False)(v))


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("kind, recurrence", [("mlp", "frozen"), ("gru", "outer")])
def test_outer_gradient_and_loss_equal_direct_ones(kind, recurrence, first_order):
    policy = make_policy(kind, obs_dim=3, act_dim=2, hidden_sizes=(5,), hidden_size=4,
                         recurrence=recurrence, seed=2)
    train, valid = meta_batch(policy, K=3, B=4, T=5, adapt_steps=2)
    problem = AutogradOuterProblem(policy, train, valid, 0.3, first_order)
    adapted = adapt(policy, train, 0.3, first_order)
    dist = policy.distribution(*policy.sequence(zero_masked(valid.observations, valid.mask), adapted))
    loss = surrogate_loss(dist.log_prob(zero_masked(valid.actions, valid.mask)), valid)
    named = dict(policy.named_parameters())
    grad = flat_grad(loss, [named[n] for n in policy.trainable_names()])
    assert math.isclose(problem.loss.item(), loss.item(), rel_tol=1e-6)
    assert relative_error(problem.gradient(), grad) < 1e-5


def assert_same_outer_problem(problem_class, policy, train, valid, first_order):
    """A hand-derived outer problem against OuterProblem (autograd), float64: loss, log-probs, old
    policy, gradient and three KL-Hessian products."""
    fast = problem_class(policy, train, valid, 0.3, first_order, damping=0.01)
    reference = AutogradOuterProblem(policy, train, valid, 0.3, first_order, damping=0.01)
    torch.testing.assert_close(fast.loss, reference.loss.detach(), rtol=1e-12, atol=1e-14)
    valid_steps = valid.mask > 0
    torch.testing.assert_close(fast.log_probs[valid_steps], reference.log_probs.detach()[valid_steps], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast.old_dist.mean, reference.old_dist.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast.old_dist.stddev.expand_as(fast.old_dist.mean),
                               reference.old_dist.stddev.expand_as(reference.old_dist.mean), rtol=1e-12, atol=0)
    torch.testing.assert_close(fast.gradient(), reference.gradient(), rtol=1e-10, atol=1e-13)
    g = torch.Generator().manual_seed(11)
    for _ in range(3):
        v = torch.randn(num_trainable(policy), generator=g, dtype=torch.float64)
        torch.testing.assert_close(fast.hvp(v), reference.hvp(v), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("hidden_sizes", [(5,), (6, 5, 4)])
@pytest.mark.parametrize("adapt_steps", [1, 2])
@pytest.mark.parametrize("first_order", [False, True])
def test_hand_derived_mlp_products_equal_autograd(hidden_sizes, adapt_steps, first_order):
    """MLPOuterProblem (explicit R-forward/R-backward passes) against OuterProblem (autograd),
    in float64 with ragged masks: loss, log-probs, old policy, gradient and KL-Hessian products."""
    policy = make_policy("mlp", obs_dim=3, act_dim=2, hidden_sizes=hidden_sizes, init_log_std=-0.4,
                         seed=6).to(torch.float64)
    assert MLPOuterProblem.supports(policy)
    train, valid = meta_batch(policy, K=3, B=4, T=5, adapt_steps=adapt_steps, fast_lr=0.3, dtype=torch.float64)
    assert_same_outer_problem(MLPOuterProblem, policy, train, valid, first_order)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("recurrence", ["frozen", "outer", "all"])
@pytest.mark.parametrize("adapt_steps, first_order", [(1, False), (2, False), (1, True)])
def test_hand_derived_recurrent_products_equal_autograd(kind, recurrence, adapt_steps, first_order):
    """RecurrentOuterProblem (backpropagation through time and its R-operator, by hand) against
    OuterProblem (autograd through policy.sequence), float64, ragged masks, non-zero recurrent
    biases: loss, log-probs, old policy, gradient and KL-Hessian products, every recurrence mode."""
    policy = make_policy(kind, obs_dim=3, act_dim=2, hidden_size=5, recurrence=recurrence, init_log_std=-0.4,
                         seed=8).to(torch.float64)
    with torch.no_grad():  # exercise every bias path (they start at zero)
        g = torch.Generator().manual_seed(3)
        for name in ("cell.bias_ih", "cell.bias_hh"):
            policy.get_parameter(name).copy_(0.3 * torch.randn(policy.get_parameter(name).shape, generator=g,
                                                               dtype=torch.float64))
    assert RecurrentOuterProblem.supports(policy) and not MLPOuterProblem.supports(policy)
    train, valid = meta_batch(policy, K=3, B=4, T=6, adapt_steps=adapt_steps, fast_lr=0.3, dtype=torch.float64)
    assert_same_outer_problem(RecurrentOuterProblem, policy, train, valid, first_order)


def test_hand_derived_products_only_for_the_plain_mlp():
    assert not MLPOuterProblem.supports(make_policy("gru", obs_dim=3, act_dim=2, hidden_size=4))
    assert not MLPOuterProblem.supports(TinyPolicy())
    assert not RecurrentOuterProblem.supports(TinyPolicy())
    policy = make_policy("mlp", obs_dim=3, act_dim=2, hidden_sizes=(4,))
    policy.log_std.requires_grad_(False)  # not meta-trained: the general path handles it
    assert not MLPOuterProblem.supports(policy)


@pytest.mark.parametrize("kind, implementation", [("mlp", MLPOuterProblem), ("rnn", RecurrentOuterProblem),
                                                  ("gru", RecurrentOuterProblem), ("lstm", RecurrentOuterProblem)])
def test_the_factory_picks_one_implementation_per_policy(kind, implementation):
    policy = make_policy(kind, obs_dim=3, act_dim=2, hidden_sizes=(4,), hidden_size=4, recurrence="outer")
    train, valid = meta_batch(policy, K=2, B=2, T=3)
    assert type(make_outer_problem(policy, train, valid, 0.3)) is implementation
    tiny = TinyPolicy()
    assert type(make_outer_problem(tiny, *meta_batch(tiny, K=2, B=2, T=3, dtype=torch.float64), 0.3)) is AutogradOuterProblem


def test_conjugate_gradient_with_product_returns_a_times_x():
    g = torch.Generator().manual_seed(5)
    M = torch.randn(6, 6, generator=g, dtype=torch.float64)
    A = M @ M.T + 0.5 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    x, ax = conjugate_gradient_with_product(lambda v: A @ v, b, iters=4)
    assert torch.equal(x, conjugate_gradient(lambda v: A @ v, b, iters=4))
    torch.testing.assert_close(ax, A @ x, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- whole step
def reference_step(learner, train, valid, curvature_episodes=None):
    """``MetaLearner.update`` written directly: autograd gradient, direct Pearlmutter products.

    ``curvature_episodes``: how many episodes per task the KL-Hessian products see (all if None).
    """
    policy = learner.policy
    count = curvature_episodes or valid.episodes_per_task
    curvature_train = [e.select_episodes(count) for e in train]
    observations = zero_masked(valid.observations, valid.mask)
    actions = zero_masked(valid.actions, valid.mask)
    named = dict(policy.named_parameters())
    params = [named[n] for n in policy.trainable_names()]
    adapted = adapt(policy, train, learner.fast_lr, learner.first_order)
    mean, log_std = policy.sequence(observations, adapted)
    old_dist = policy.distribution(mean.detach(), log_std.detach())
    loss = surrogate_loss(policy.distribution(mean, log_std).log_prob(actions), valid)
    grad = flat_grad(loss, params)
    hvp = exact_kl_hvp(policy, curvature_train, valid.select_episodes(count), learner.fast_lr,
                       learner.first_order, learner.cg_damping)
    direction = conjugate_gradient(hvp, grad, learner.cg_iters)
    full_step = trust_region_step(direction, hvp(direction), learner.max_kl)

    def evaluate():
        with torch.no_grad():
            new = adapt(policy, train, learner.fast_lr, first_order=True)
            new_dist = policy.distribution(*policy.sequence(observations, {n: p.detach() for n, p in new.items()}))
            return (float(surrogate_loss(new_dist.log_prob(actions), valid)),
                    float(mean_kl(old_dist, new_dist, valid.mask)))

    result = backtracking_line_search(params, full_step, evaluate, loss.item(), learner.max_kl,
                                      learner.ls_max_steps, learner.ls_backtrack)
    return result, float(grad.norm())


@pytest.mark.parametrize("kind, recurrence, adapt_steps, first_order, dtype, rtol", [
    ("mlp", "frozen", 1, False, torch.float64, 1e-7),
    ("mlp", "frozen", 1, True, torch.float64, 1e-7),
    ("gru", "outer", 2, False, torch.float64, 1e-7),
    ("gru", "outer", 2, True, torch.float64, 1e-7),
    # lstm: the hand-derived products equal autograd's to ~1e-12, but CG (10 iterations on a nearly
    # singular KL Hessian) amplifies that to ~1e-7 in the step.
    ("lstm", "all", 1, False, torch.float64, 1e-6),
    ("lstm", "all", 1, True, torch.float64, 1e-7),
    # float32: CG (10 iterations, damping 1e-5) on these tiny, nearly singular KL Hessians turns
    # float32 rounding into step differences of up to ~20% for the direct method itself (against
    # its own float64 result), so only a well-conditioned case is compared in float32.
    ("mlp", "frozen", 1, False, torch.float32, 1e-4),
])
def test_step_accepts_the_same_parameters_as_the_direct_step(kind, recurrence, adapt_steps, first_order,
                                                             dtype, rtol):
    policy = make_policy(kind, obs_dim=3, act_dim=2, hidden_sizes=(8, 8), hidden_size=6,
                         recurrence=recurrence, seed=3).to(dtype)
    train, valid = meta_batch(policy, K=4, B=6, T=6, adapt_steps=adapt_steps, fast_lr=0.3, dtype=dtype)
    start = snapshot(policy)
    learner = MetaLearner(policy, fast_lr=0.3, first_order=first_order, max_kl=1e-2)
    result, grad_norm = reference_step(learner, train, valid)
    expected = snapshot(policy)
    policy.load_state_dict(start)
    stats = learner.update(train, valid)
    assert stats["step_accepted"] and result.accepted
    assert stats["ls_steps"] == result.step
    assert math.isclose(stats["grad_norm"], grad_norm, rel_tol=10 * rtol)
    assert math.isclose(stats["loss_after"], result.loss, rel_tol=10 * rtol, abs_tol=1e-7)
    assert math.isclose(stats["kl_after"], result.kl, rel_tol=100 * rtol, abs_tol=1e-8)
    after = snapshot(policy)
    moved = torch.cat([(expected[n] - start[n]).reshape(-1) for n in start])
    diff = torch.cat([(after[n] - expected[n]).reshape(-1) for n in start])
    assert moved.norm() > 0 and float(diff.norm() / moved.norm()) < rtol


@pytest.mark.parametrize("kind", ["mlp", "gru"])
def test_task_groups_and_threads(kind):
    """Uneven groups (mlp: 4, 4, 2 of 10 tasks; gru: 10, 3 of 13): the step equals the direct step
    over all tasks at once, and is bit-identical on 1 and 3 threads (groups never depend on the
    thread count)."""
    assert maml_trpo.task_chunks(10, 4) == [(0, 4), (4, 8), (8, 10)]
    policy = make_policy(kind, obs_dim=3, act_dim=2, hidden_sizes=(8, 8), hidden_size=6,
                         recurrence="outer", seed=5).to(torch.float64)
    K = 10 if kind == "mlp" else 13
    assert len(maml_trpo.task_chunks(K, maml_trpo.tasks_per_chunk(policy))) == (3 if kind == "mlp" else 2)
    train, valid = meta_batch(policy, K=K, B=3, T=5, adapt_steps=1, fast_lr=0.3, dtype=torch.float64)
    start = snapshot(policy)
    reference_learner = MetaLearner(policy, fast_lr=0.3, max_kl=1e-2)
    result, grad_norm = reference_step(reference_learner, train, valid)
    expected = snapshot(policy)
    outcomes = []
    for threads in (1, 3):
        policy.load_state_dict(start)
        learner = MetaLearner(policy, fast_lr=0.3, max_kl=1e-2, num_threads=threads)
        adapted = learner.adapted_params(train)
        stats = learner.update(train, valid)
        outcomes.append((adapted, stats, snapshot(policy)))
    (adapted_1, stats_1, after_1), (adapted_3, stats_3, after_3) = outcomes
    assert stats_1 == stats_3
    assert all(torch.equal(after_1[n], after_3[n]) for n in after_1)
    assert all(torch.equal(adapted_1[n], adapted_3[n]) for n in adapted_1)
    assert stats_1["step_accepted"] and result.accepted
    assert math.isclose(stats_1["grad_norm"], grad_norm, rel_tol=1e-6)
    moved = torch.cat([(expected[n] - start[n]).reshape(-1) for n in start])
    diff = torch.cat([(after_1[n] - expected[n]).reshape(-1) for n in start])
    assert moved.norm() > 0 and float(diff.norm() / moved.norm()) < 1e-7
    # the adapted parameters used for sampling equal adapting all tasks at once
    policy.load_state_dict(start)
    whole = adapt(policy, train, 0.3, first_order=True)
    for name in adapted_1:
        torch.testing.assert_close(adapted_1[name], whole[name].detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind, share, count", [("mlp", 0.5, 3), ("gru", 0.3, 2)])
def test_subsampled_curvature(kind, share, count):
    """``hvp_subsample``: CG's KL-Hessian products see the first ``ceil(share * B)`` episodes of
    each task (adaptation included), the gradient and the line search all of them. Equal to the
    direct step built that way, bit-identical on 1 and 3 threads, and not the full-batch step."""
    policy = make_policy(kind, obs_dim=3, act_dim=2, hidden_sizes=(8, 8), hidden_size=6,
                         recurrence="outer", seed=7).to(torch.float64)
    train, valid = meta_batch(policy, K=13, B=6, T=5, adapt_steps=1, fast_lr=0.3, dtype=torch.float64)
    start = snapshot(policy)
    full_learner = MetaLearner(policy, fast_lr=0.3, max_kl=1e-2)
    full_stats = full_learner.update(train, valid)
    full = snapshot(policy)
    policy.load_state_dict(start)
    result, grad_norm = reference_step(MetaLearner(policy, fast_lr=0.3, max_kl=1e-2), train, valid, count)
    expected = snapshot(policy)
    outcomes = []
    for threads in (1, 3):
        policy.load_state_dict(start)
        learner = MetaLearner(policy, fast_lr=0.3, max_kl=1e-2, hvp_subsample=share, num_threads=threads)
        assert learner.curvature_episodes(valid).episodes_per_task == count
        outcomes.append((learner.update(train, valid), snapshot(policy)))
    (stats, after), (stats_3, after_3) = outcomes
    assert stats == stats_3 and all(torch.equal(after[n], after_3[n]) for n in after)
    assert stats["step_accepted"] and result.accepted and stats["kl_after"] <= 1e-2
    assert stats["grad_norm"] == full_stats["grad_norm"]  # the gradient sees every episode
    assert math.isclose(stats["grad_norm"], grad_norm, rel_tol=1e-6)
    moved = torch.cat([(expected[n] - start[n]).reshape(-1) for n in start])
    diff = torch.cat([(after[n] - expected[n]).reshape(-1) for n in start])
    assert moved.norm() > 0 and float(diff.norm() / moved.norm()) < 1e-7
    other = torch.cat([(full[n] - expected[n]).reshape(-1) for n in start])
    assert float(other.norm() / moved.norm()) > 1e-3  # a different curvature, a different step


def test_hvp_subsample_is_checked():
    policy = make_policy("mlp", obs_dim=3, act_dim=2, hidden_sizes=(4,), seed=0)
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=r"hvp_subsample: expected a share in \(0, 1\], got"):
            MetaLearner(policy, fast_lr=0.1, hvp_subsample=bad)


def test_num_threads_is_checked():
    policy = make_policy("mlp", obs_dim=3, act_dim=2, hidden_sizes=(4,), seed=0)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"num_threads: expected an integer >= 1, got"):
            MetaLearner(policy, fast_lr=0.1, num_threads=bad)


def test_only_processed_episodes_enter_adaptation_and_the_update():
    """The sampler's episodes are processed once, explicitly (``MetaLearner.process``); raw ones
    are refused by name, and processed ones cannot lose their advantages."""
    policy = make_policy("mlp", obs_dim=3, act_dim=2, hidden_sizes=(8,), seed=4)
    train, valid = meta_batch(policy, K=2, B=3, T=4)
    raw_train, raw_valid = [Episodes(*t[:7]) for t in train], Episodes(*valid[:7])
    learner = MetaLearner(policy, fast_lr=0.3)
    with pytest.raises(TypeError, match=r"train_episodes_per_step\[0\]: expected ProcessedEpisodes"):
        learner.adapted_params(raw_train)
    with pytest.raises(TypeError, match=r"valid_episodes: expected ProcessedEpisodes"):
        learner.update(train, raw_valid)
    with pytest.raises(TypeError, match=r"episodes: expected ProcessedEpisodes"):
        adapt(policy, raw_train, 0.3)
    with pytest.raises(ValueError, match="advantages and returns are required"):
        train[0]._replace(advantages=None)
    processed = [learner.process(e) for e in raw_train]
    assert all(isinstance(e, ProcessedEpisodes) for e in processed)
    assert isinstance(processed[0].select_tasks(0, 1), ProcessedEpisodes)
    first, again = learner.adapted_params(processed), learner.adapted_params(train)
    for name in first:
        torch.testing.assert_close(first[name], again[name])  # meta_batch used the same processing


# ----------------------------------------------------------------------------- policy helpers
def test_stack_steps_matches_torch_stack_to_second_order_and_forward_mode():
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(3, 2, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(4)]
    for dim in (0, 1, 2):
        f = lambda *t: (stack_steps(t, dim) ** 3).sin()  # noqa: E731
        assert torch.equal(stack_steps(xs, dim), torch.stack(xs, dim))
        assert torch.autograd.gradcheck(f, xs)
        assert torch.autograd.gradgradcheck(f, xs)
        assert torch.autograd.gradcheck(f, xs, check_forward_ad=True, check_backward_ad=False,
                                        check_undefined_grad=False, check_batched_grad=False)


def test_linear_per_task_fast_path_equals_general_path():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 5, 3, generator=g)
    w = torch.randn(4, 2, 3, generator=g)
    b = torch.randn(4, 2, generator=g)
    expected = torch.einsum("kri,koi->kro", x, w)
    torch.testing.assert_close(linear(x, w), expected)
    torch.testing.assert_close(linear(x, w, b), expected + b[:, None])
    torch.testing.assert_close(linear(x.unsqueeze(1), w, b).squeeze(1), expected + b[:, None])
