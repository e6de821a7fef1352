"""Unit tests of bmaml_robot.meta: baseline, advantages, adaptation, TRPO, MAML-TRPO learning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from meta_helpers import TinyPolicy, meta_batch, snapshot, synthetic_episodes

from bmaml_robot.meta import (
    Episodes,
    MetaLearner,
    ProcessedEpisodes,
    adapt,
    compute_advantages,
    conjugate_gradient,
    discounted_returns,
    episode_features,
    fit_linear_baseline,
    hessian_vector_product,
    inner_loss,
    mean_kl,
    predict_linear_baseline,
    surrogate_loss,
)
from bmaml_robot.meta.baseline import baseline_features
from bmaml_robot.policies import make_policy

# ----------------------------------------------------------------------------- helpers

# ----------------------------------------------------------------------------- baseline
def test_baseline_recovers_linear_target_exactly():
    g = torch.Generator().manual_seed(0)
    T, K, B, D = 150, 3, 2, 2  # long enough for the time polynomial (t / 100) to be well conditioned
    obs = torch.rand(T, K, B, D, generator=g, dtype=torch.float64) * 4 - 2
    features = episode_features(obs)
    assert features.shape == (T, K, B, 2 * D + 4)
    coeffs = torch.randn(K, 2 * D + 4, generator=g, dtype=torch.float64)
    targets = predict_linear_baseline(features, coeffs)
    fitted = fit_linear_baseline(features, targets, torch.ones(T, K, B), reg_coeff=1e-10)
    torch.testing.assert_close(fitted, coeffs, rtol=1e-6, atol=1e-6)
    # The default ridge (1e-5) only perturbs the predicted values negligibly.
    fitted = fit_linear_baseline(features, targets, torch.ones(T, K, B))
    torch.testing.assert_close(predict_linear_baseline(features, fitted), targets, rtol=0, atol=1e-4)


def test_baseline_ignores_masked_steps_even_nan():
    g = torch.Generator().manual_seed(1)
    T, K, B, D = 10, 2, 3, 3
    obs = torch.randn(T, K, B, D, generator=g)
    targets = torch.randn(T, K, B, generator=g)
    mask = (torch.rand(T, K, B, generator=g) < 0.7).float()
    reference = fit_linear_baseline(episode_features(obs), targets, mask)
    garbage_obs = torch.where(mask.unsqueeze(-1) > 0, obs, torch.full_like(obs, float("nan")))
    garbage_targets = torch.where(mask > 0, targets, torch.full_like(targets, 1e6))
    fitted = fit_linear_baseline(episode_features(garbage_obs), garbage_targets, mask)
    assert torch.equal(fitted, reference)
    # Same as fitting only on the valid rows (explicit selection).
    X = episode_features(obs)
    for k in range(K):
        rows = mask[:, k] > 0
        Xk, yk = X[:, k][rows], targets[:, k][rows].double()
        ridge = 1e-5 * torch.eye(Xk.shape[1], dtype=torch.float64)
        expected = torch.linalg.solve(Xk.T @ Xk + ridge, Xk.T @ yk)
        torch.testing.assert_close(fitted[k], expected, rtol=1e-6, atol=1e-8)


def test_baseline_batched_fit_equals_per_task_fits():
    g = torch.Generator().manual_seed(2)
    T, K, B, D = 8, 4, 5, 2
    obs = torch.randn(T, K, B, D, generator=g) * 3
    targets = torch.randn(T, K, B, generator=g)
    mask = (torch.rand(T, K, B, generator=g) < 0.8).float()
    features = episode_features(obs)
    batched = fit_linear_baseline(features, targets, mask)
    for k in range(K):
        single = fit_linear_baseline(features[:, k : k + 1], targets[:, k : k + 1], mask[:, k : k + 1])
        torch.testing.assert_close(batched[k : k + 1], single, rtol=1e-10, atol=1e-12)


def test_baseline_constant_observation_is_finite():
    # A constant observation is collinear with the bias feature: the ridge keeps the fit well posed.
    T, K, B = 1, 2, 7
    obs = torch.ones(T, K, B, 1)
    targets = torch.randn(T, K, B, generator=torch.Generator().manual_seed(3))
    coeffs = fit_linear_baseline(episode_features(obs), targets, torch.ones(T, K, B))
    values = predict_linear_baseline(episode_features(obs), coeffs)
    assert torch.isfinite(coeffs).all()
    task_means = targets.mean(dim=(0, 2)).view(K, 1).expand(K, B)
    torch.testing.assert_close(values[0].float(), task_means, atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- advantages
def _reference_gae(rewards, values, terminated, truncated, last_values, gamma, lam):
    T = rewards.shape[0]
    adv = np.zeros_like(rewards)
    carry = np.zeros_like(last_values)
    for t in reversed(range(T)):
        next_v = last_values if t == T - 1 else values[t + 1]
        next_v = np.where(terminated[t], 0.0, next_v)
        cont = ~(terminated[t] | truncated[t])
        carry = rewards[t] + gamma * next_v - values[t] + gamma * lam * np.where(cont, carry, 0.0)
        adv[t] = carry
    return adv, adv + values


def test_advantages_terminate_truncate_and_mask():
    gamma, lam = 0.9, 0.95
    T, K, B = 4, 2, 3
    policy = TinyPolicy(2, 1, hidden=4, dtype=torch.float32)
    lengths = torch.tensor([[2, 4, 3], [4, 1, 4]])
    ep = synthetic_episodes(policy, None, T=T, K=K, B=B, seed=4, lengths=lengths)
    # Garbage after the end of each episode must not matter.
    ep = ep._replace(rewards=torch.where(ep.mask > 0, ep.rewards, torch.tensor(float("nan"))))
    out = compute_advantages(ep, gamma, lam, normalize=False)
    assert out.advantages.shape == (T, K, B) and out.advantages.dtype == torch.float32
    assert (out.advantages[ep.mask == 0] == 0).all() and torch.isfinite(out.advantages).all()

    # Reference: same baseline, hand GAE (terminated: no bootstrap; at T-1: bootstrap V(last_obs, T)).
    features = episode_features(ep.observations)
    coeffs = fit_linear_baseline(features, discounted_returns(ep.rewards, ep.mask, gamma), ep.mask)
    values = predict_linear_baseline(features, coeffs).numpy()
    last_features = baseline_features(ep.last_observations, torch.tensor(float(T)))
    last_values = predict_linear_baseline(last_features, coeffs).numpy()
    valid = ep.mask.numpy() > 0
    running = valid[-1] & ~ep.terminated[-1].numpy()
    rewards = np.where(valid, ep.rewards.double().numpy(), 0.0)
    adv, ret = _reference_gae(
        rewards.reshape(T, -1),
        np.where(valid, values, 0).reshape(T, -1),
        ep.terminated.numpy().reshape(T, -1),
        np.zeros((T, K * B), bool),
        np.where(running, last_values, 0).reshape(-1),
        gamma,
        lam,
    )
    adv = np.where(valid, adv.reshape(T, K, B), 0.0)
    np.testing.assert_allclose(out.advantages.numpy(), adv, rtol=1e-5, atol=1e-5)
    ret = np.where(valid, ret.reshape(T, K, B), 0.0)
    np.testing.assert_allclose(out.returns.numpy(), ret, rtol=1e-5, atol=1e-5)

    normalized = compute_advantages(ep, gamma, lam).advantages
    for k in range(K):
        a = normalized[:, k][ep.mask[:, k] > 0].double()
        assert abs(a.mean().item()) < 1e-6 and abs(a.std(unbiased=False).item() - 1) < 1e-5


# ----------------------------------------------------------------------------- TRPO maths
def test_conjugate_gradient_solves_spd_system():
    g = torch.Generator().manual_seed(5)
    M = torch.randn(8, 8, generator=g, dtype=torch.float64)
    A = M @ M.T + 0.5 * torch.eye(8, dtype=torch.float64)
    b = torch.randn(8, generator=g, dtype=torch.float64)
    x = conjugate_gradient(lambda v: A @ v, b, iters=20, residual_tol=1e-20)
    torch.testing.assert_close(x, torch.linalg.solve(A, b), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("first_order", [False, True])
def test_hvp_equals_explicit_kl_hessian_through_adaptation(first_order):
    policy = TinyPolicy(obs_dim=2, act_dim=2, hidden=3)
    train, valid = meta_batch(policy, K=2, B=4, T=3, fast_lr=0.5, dtype=torch.float64)
    names = policy.trainable_names()
    shapes = [p.shape for p in policy.parameters()]
    theta0 = torch.cat([p.detach().reshape(-1) for p in policy.parameters()])

    def unflatten(flat):
        out, i = {}, 0
        for name, shape in zip(names, shapes):
            n = math.prod(shape)
            out[name] = flat[i : i + n].view(shape).expand(2, *shape)
            i += n
        return out

    mean0, log_std0 = policy.sequence(valid.observations, adapt(policy, train, 0.5, True))
    old = policy.distribution(mean0.detach(), log_std0.detach())

    def kl_of(flat):
        params = adapt(policy, train, 0.5, first_order, params=unflatten(flat))
        new = policy.distribution(*policy.sequence(valid.observations, params))
        return mean_kl(old, new, valid.mask)

    hessian = torch.autograd.functional.hessian(kl_of, theta0)
    adapted = adapt(policy, train, 0.5, first_order)
    kl = mean_kl(old, policy.distribution(*policy.sequence(valid.observations, adapted)), valid.mask)
    hvp = hessian_vector_product(kl, list(policy.parameters()), damping=0.0)
    v = torch.randn(theta0.numel(), generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    torch.testing.assert_close(hvp(v), hessian @ v, rtol=1e-8, atol=1e-10)
    damped = hessian_vector_product(kl, list(policy.parameters()), damping=0.1)
    torch.testing.assert_close(damped(v), hessian @ v + 0.1 * v)


# ----------------------------------------------------------------------------- adaptation
def test_first_and_second_order_same_values_different_meta_gradients():
    policy = TinyPolicy(obs_dim=2, act_dim=2, hidden=4)
    train, valid = meta_batch(policy, B=6, adapt_steps=2, dtype=torch.float64)
    grads = {}
    for first_order in (True, False):
        params = adapt(policy, train, 0.3, first_order)
        outer = inner_loss(policy, valid, params).sum()
        grads[first_order] = torch.autograd.grad(outer, list(policy.parameters()))
        grads[first_order, "values"] = {n: p.detach() for n, p in params.items()}
    first, second = grads[True, "values"], grads[False, "values"]
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=1e-12, atol=1e-12)
    difference = sum((a - b).abs().sum() for a, b in zip(grads[True], grads[False]))
    assert difference > 1e-4
    # Adapting under no_grad (evaluation, sampling) gives the same values.
    with torch.no_grad():
        no_grad = adapt(policy, train, 0.3, first_order=False)
    for name, value in no_grad.items():
        torch.testing.assert_close(value, first[name], rtol=1e-12, atol=1e-12)


def test_adaptation_touches_only_adaptable_names_and_never_the_module():
    policy = make_policy("gru", obs_dim=3, act_dim=2, hidden_size=5, recurrence="outer", seed=0)
    recurrent = set(policy.recurrent_names())
    assert recurrent and not recurrent & set(policy.adaptable_names())
    before = snapshot(policy)
    train, _ = meta_batch(policy, K=2, B=3, T=4)
    meta = policy.batched_params(2)
    adapted = adapt(policy, train, 0.5, first_order=False)
    for name, value in adapted.items():
        if name in recurrent:
            assert torch.equal(value, meta[name])
        else:
            assert not torch.equal(value, meta[name]), name
    for name, value in snapshot(policy).items():
        assert torch.equal(value, before[name])


def _tasks(ep, index):
    """The tasks ``index`` (a slice) of a batch of episodes."""
    return type(ep)(*[
        None if x is None else x[index] if name == "last_observations" else x[:, index]
        for name, x in zip(Episodes._fields, ep)
    ])


def _concat_tasks(a, b):
    return type(a)(*[
        None if x is None else torch.cat([x, y], dim=0 if name == "last_observations" else 1)
        for name, x, y in zip(Episodes._fields, a, b)
    ])


def test_tasks_adapt_independently():
    policy = make_policy("mlp", obs_dim=3, act_dim=2, hidden_sizes=(8,), seed=1)
    train, _ = meta_batch(policy, K=3, B=4, T=4)
    adapted = adapt(policy, train, 0.5, first_order=True)
    # Replace the episodes of tasks 1 and 2 only.
    other = compute_advantages(synthetic_episodes(policy, None, T=4, K=3, B=4, seed=42))
    mixed = _concat_tasks(_tasks(train[0], slice(0, 1)), _tasks(other, slice(1, 3)))
    changed = adapt(policy, [mixed], 0.5, True)
    alone = adapt(policy, [_tasks(train[0], slice(0, 1))], 0.5, True)
    for name in adapted:
        torch.testing.assert_close(changed[name][0], adapted[name][0], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(alone[name][0], adapted[name][0], rtol=1e-6, atol=1e-7)
        assert not torch.allclose(changed[name][1:], adapted[name][1:]), name


def test_select_episodes_takes_the_first_episodes_of_every_task():
    policy = TinyPolicy()
    train, valid = meta_batch(policy, K=3, B=5, T=4, dtype=torch.float64)
    sub = train[0].select_episodes(2)
    assert sub.episodes_per_task == 2 and sub.num_tasks == 3 and sub.horizon == 4
    for name, value in train[0]._asdict().items():
        if value is not None:
            part = value[:, :2] if name == "last_observations" else value[:, :, :2]
            assert torch.equal(getattr(sub, name), part), name
    for bad in (0, 6):
        with pytest.raises(ValueError, match=r"count: expected an integer in \[1, 5\], got"):
            valid.select_episodes(bad)


# ----------------------------------------------------------------------------- TRPO step
@pytest.mark.parametrize("first_order", [False, True])
def test_trpo_step_improves_surrogate_within_kl_and_keeps_frozen_weights(first_order):
    policy = make_policy("gru", obs_dim=3, act_dim=2, hidden_size=6, recurrence="frozen", seed=2)
    frozen = policy.recurrent_names()
    assert not set(frozen) & set(policy.trainable_names())
    train, valid = meta_batch(policy, K=3, B=6, T=5, fast_lr=0.3)
    learner = MetaLearner(policy, fast_lr=0.3, first_order=first_order, max_kl=1e-2)
    old_dist = policy.distribution(*policy.sequence(valid.observations, learner.adapted_params(train)))
    before = snapshot(policy)
    stats = learner.update(train, valid)
    assert stats["step_accepted"] and stats["ls_steps"] >= 1
    assert stats["loss_after"] < stats["loss_before"] and 0 < stats["kl_after"] <= 1e-2
    assert abs(stats["kl_before"]) < 1e-5  # sampler and learner agree
    # Independent re-evaluation at the new parameters.
    params = learner.adapted_params(train)
    with torch.no_grad():
        new_dist = policy.distribution(*policy.sequence(valid.observations, params))
        loss = surrogate_loss(new_dist.log_prob(valid.actions), valid)
        kl = mean_kl(old_dist, new_dist, valid.mask)
    assert math.isclose(float(loss), stats["loss_after"], rel_tol=1e-4, abs_tol=1e-6)
    assert math.isclose(float(kl), stats["kl_after"], rel_tol=1e-4, abs_tol=1e-8)
    after = snapshot(policy)
    for name in frozen:
        assert torch.equal(after[name], before[name])
    assert any(not torch.equal(after[n], before[n]) for n in policy.trainable_names())


def test_trpo_restores_params_bit_identically_when_no_step_is_accepted():
    # Only log_std is trainable; the surrogate wants a smaller std. The KL of shrinking the std
    # grows faster than its quadratic model, so the full step (the only trial) exceeds max_kl.
    policy = make_policy("mlp", obs_dim=2, act_dim=2, hidden_sizes=(4,), seed=3)
    for name, p in policy.named_parameters():
        p.requires_grad_(name == "log_std")
    T, K, B = 1, 2, 8
    obs = torch.zeros(T, K, B, 2)
    with torch.no_grad():
        mean, log_std = policy.sequence(obs, None)
    near = torch.arange(B) % 2 == 0
    actions = mean.expand(T, K, B, 2) + torch.where(near, 0.0, 3.0).view(1, 1, B, 1)
    log_probs = policy.distribution(mean, log_std).log_prob(actions).detach()
    advantages = torch.where(near, 1.0, -1.0).view(1, 1, B).expand(T, K, B).clone()
    zeros, ones = torch.zeros(T, K, B), torch.ones(T, K, B)
    ep = ProcessedEpisodes(obs, actions, zeros, ones, ones.bool(), torch.zeros(K, B, 2), log_probs, advantages, zeros)
    before = snapshot(policy)
    learner = MetaLearner(policy, fast_lr=0.0, max_kl=1.0, ls_max_steps=1)
    stats = learner.update([ep], ep)
    assert not stats["step_accepted"] and stats["ls_steps"] == 0 and stats["grad_norm"] > 0
    for name, value in snapshot(policy).items():
        assert torch.equal(value, before[name]), name
    # With backtracking allowed the same problem is solved.
    stats = MetaLearner(policy, fast_lr=0.0, max_kl=1.0, ls_max_steps=10).update([ep], ep)
    assert stats["step_accepted"] and stats["ls_steps"] > 1 and stats["kl_after"] <= 1.0
    assert policy.log_std.detach().lt(before["log_std"]).all()


def test_trpo_zero_gradient_is_rejected_cleanly():
    policy = make_policy("mlp", obs_dim=2, act_dim=1, hidden_sizes=(4,), seed=4)
    train, valid = meta_batch(policy, K=2, B=3, T=3)
    valid = valid._replace(advantages=torch.zeros_like(valid.advantages))
    train = [train[0]._replace(advantages=torch.zeros_like(train[0].advantages))]
    before = snapshot(policy)
    stats = MetaLearner(policy, fast_lr=0.1).update(train, valid)
    assert not stats["step_accepted"] and stats["ls_steps"] == 0 and stats["grad_norm"] == 0
    for name, value in snapshot(policy).items():
        assert torch.equal(value, before[name])


def test_garbage_after_episode_end_does_not_leak():
    policy = make_policy("lstm", obs_dim=3, act_dim=2, hidden_size=4, recurrence="all", seed=5)
    train, valid = meta_batch(policy, K=2, B=4, T=5)
    nan = torch.tensor(float("nan"))

    def spoil(ep):
        m = ep.mask > 0
        return ep._replace(
            observations=torch.where(m.unsqueeze(-1), ep.observations, nan),
            actions=torch.where(m.unsqueeze(-1), ep.actions, nan),
            rewards=torch.where(m, ep.rewards, nan),
            log_probs=torch.where(m, ep.log_probs, nan),
        )

    def raw(ep):  # the sampler's episodes: no advantages yet
        return Episodes(*ep[:7])

    reference = MetaLearner(policy, fast_lr=0.3)
    state = snapshot(policy)
    clean_stats = reference.update([reference.process(raw(t)) for t in train], reference.process(raw(valid)))
    clean_params = snapshot(policy)
    policy.load_state_dict(state)
    learner = MetaLearner(policy, fast_lr=0.3)
    stats = learner.update([learner.process(spoil(raw(t))) for t in train], learner.process(spoil(raw(valid))))
    assert stats["step_accepted"]
    for key in ("loss_before", "loss_after", "kl_after", "grad_norm"):
        assert math.isclose(stats[key], clean_stats[key], rel_tol=1e-5, abs_tol=1e-7), key
    for name, value in snapshot(policy).items():
        torch.testing.assert_close(value, clean_params[name])


# ----------------------------------------------------------------------------- learning
def _bandit_episodes(policy, params, goals, B, g):
    """1-step episodes: constant observation, reward -|a - goal_k|^2, terminated after one step."""
    K = goals.shape[0]
    obs = torch.ones(1, K, B, 1)
    with torch.no_grad():
        mean, log_std = policy.sequence(obs, params)
        actions = mean + log_std.exp() * torch.randn(mean.shape, generator=g)
        log_probs = policy.distribution(mean, log_std).log_prob(actions)
    rewards = -((actions - goals[None, :, None]) ** 2).sum(-1)
    ones = torch.ones(1, K, B)
    return Episodes(obs, actions, rewards, ones, ones.bool(), torch.ones(K, B, 1), log_probs)


# First order needs a smaller inner step: with a large one, (I - fast_lr * Hessian) is far from I
# and the first-order direction often fails the line search.
@pytest.mark.parametrize("first_order, fast_lr", [(False, 0.5), (True, 0.1)])
def test_maml_trpo_learns_to_adapt_on_a_bandit_family(first_order, fast_lr):
    g = torch.Generator().manual_seed(0)
    policy = make_policy("mlp", obs_dim=1, act_dim=2, hidden_sizes=(16,), init_log_std=-0.5, seed=0)
    learner = MetaLearner(policy, fast_lr=fast_lr, first_order=first_order, max_kl=0.05)
    K, B = 20, 20

    def iteration(update: bool):
        goals = torch.rand(K, 2, generator=g) * 2 - 1 + torch.tensor([1.5, -1.0])
        train = learner.process(_bandit_episodes(policy, None, goals, B, g))
        valid = learner.process(_bandit_episodes(policy, learner.adapted_params([train]), goals, B, g))
        if update:
            return learner.update([train], valid)
        return {
            "return_before": train.episode_returns().mean().item(),
            "return_after": valid.episode_returns().mean().item(),
        }

    start = [iteration(False) for _ in range(5)]
    for _ in range(25):
        stats = iteration(True)
        assert math.isfinite(stats["loss_after"])
    end = [iteration(False) for _ in range(5)]

    def mean(rows: list[dict], key: str) -> float:
        return float(np.mean([r[key] for r in rows]))

    # After meta-training: adaptation helps, and the adapted return beats the untrained one.
    assert mean(end, "return_after") > mean(end, "return_before") + 0.05
    assert mean(end, "return_after") > mean(start, "return_after") + 0.5
