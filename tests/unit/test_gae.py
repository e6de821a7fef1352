"""bm.gae against plain per-env Python references, on random data with episode boundaries."""

from __future__ import annotations

import numpy as np
import pytest

import bmaml_robot as bm


def reference_gae(rewards, values, terminated, truncated, last_values, gamma, lam, final_values=None):
    """The recursion, one env and one step at a time, in float64."""
    T, N = rewards.shape
    advantages = np.zeros((T, N))
    for n in range(N):
        carry = 0.0
        for t in reversed(range(T)):
            if terminated[t, n]:
                next_value, carry = 0.0, 0.0
            elif truncated[t, n]:
                next_value = final_values[t, n] if final_values is not None else last_values[n]
                carry = 0.0
            else:
                next_value = last_values[n] if t == T - 1 else values[t + 1, n]
            delta = rewards[t, n] + gamma * next_value - values[t, n]
            carry = delta + gamma * lam * carry
            advantages[t, n] = carry
    return advantages, advantages + values


def discounted_returns(rewards, terminated, truncated, last_values, gamma, final_values):
    """lam = 1 written differently: the discounted sum of the rewards to the episode's end plus
    the discounted bootstrap value (none after a termination), no recursion."""
    T, N = rewards.shape
    returns = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            total, k = 0.0, t
            while True:
                total += gamma ** (k - t) * rewards[k, n]
                if terminated[k, n]:
                    break
                if truncated[k, n]:
                    total += gamma ** (k - t + 1) * final_values[k, n]
                    break
                if k == T - 1:
                    total += gamma ** (k - t + 1) * last_values[n]
                    break
                k += 1
            returns[t, n] = total
    return returns


def random_batch(T, N, dtype, seed=0, p_end=0.15):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(T, N)).astype(dtype)
    values = rng.normal(size=(T, N)).astype(dtype)
    ends = rng.random((T, N)) < p_end
    terminated = ends & (rng.random((T, N)) < 0.5)
    truncated = ends & ~terminated
    last_values = rng.normal(size=N).astype(dtype)
    final_values = rng.normal(size=(T, N)).astype(dtype)
    return rewards, values, terminated, truncated, last_values, final_values


TOLERANCE = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-5)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("gamma", "lam"), [(0.99, 0.95), (0.9, 0.0), (0.97, 1.0), (0.0, 0.5), (1.0, 1.0), (0.5, 0.3)])
def test_matches_the_reference_with_boundaries_inside_the_batch(dtype, gamma, lam):
    r, v, term, trunc, last, final = random_batch(40, 7, dtype, seed=int(gamma * 100 + lam * 10))
    assert term.any() and trunc.any() and (term | trunc)[:-1].any()
    adv, ret = bm.gae(r, v, term, trunc, last, gamma, lam, final_values=final)
    assert adv.dtype == ret.dtype == dtype and adv.shape == ret.shape == (40, 7)
    ref_adv, ref_ret = reference_gae(r.astype(float), v.astype(float), term, trunc, last.astype(float), gamma, lam, final.astype(float))
    np.testing.assert_allclose(adv, ref_adv, **TOLERANCE[dtype])
    np.testing.assert_allclose(ret, ref_ret, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lam_zero_gives_one_step_td_residuals(dtype):
    gamma = 0.9
    r, v, term, trunc, last, final = random_batch(12, 5, dtype, seed=1)
    adv, _ = bm.gae(r, v, term, trunc, last, gamma, 0.0, final_values=final)
    next_values = np.concatenate([v[1:], last[None]]).astype(float)
    next_values = np.where(trunc, final, next_values)
    next_values = np.where(term, 0.0, next_values)
    np.testing.assert_allclose(adv, r + gamma * next_values - v, **TOLERANCE[dtype])


@pytest.mark.parametrize("gamma", [1.0, 0.95])
def test_lam_one_gives_discounted_returns_minus_values(gamma):
    r, v, term, trunc, last, final = random_batch(25, 6, np.float64, seed=2)
    adv, ret = bm.gae(r, v, term, trunc, last, gamma, 1.0, final_values=final)
    expected = discounted_returns(r, term, trunc, last, gamma, final)
    np.testing.assert_allclose(ret, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(adv, expected - v, rtol=1e-12, atol=1e-12)


def test_terminations_do_not_bootstrap_and_truncations_do():
    r = np.array([[1.0, 1.0, 1.0]])
    v = np.array([[0.5, 0.5, 0.5]])
    last = np.array([10.0, 10.0, 10.0])
    final = np.array([[20.0, 20.0, 20.0]])
    term = np.array([[True, False, False]])
    trunc = np.array([[False, True, False]])
    adv, ret = bm.gae(r, v, term, trunc, last, 0.5, 0.9, final_values=final)
    np.testing.assert_array_equal(ret[0], [1.0, 1.0 + 0.5 * 20.0, 1.0 + 0.5 * 10.0])
    np.testing.assert_array_equal(adv, ret - v)
    # Truncated at the last step without final_values: bootstraps from last_values.
    adv, _ = bm.gae(r, v, term, trunc, last, 0.5, 0.9)
    np.testing.assert_array_equal(adv[0], [0.5, 5.5, 5.5])


def test_boundaries_cut_the_carry_between_episodes():
    T = 6
    r = np.ones((T, 1))
    v = np.zeros((T, 1))
    term = np.zeros((T, 1), bool)
    term[2] = True
    adv, _ = bm.gae(r, v, term, np.zeros_like(term), np.array([0.0]), 1.0, 1.0)
    np.testing.assert_array_equal(adv[:, 0], [3, 2, 1, 3, 2, 1])


def test_last_values_bootstrap_the_end_of_the_batch():
    r = np.zeros((3, 2))
    v = np.zeros((3, 2))
    flags = np.zeros((3, 2), bool)
    adv, ret = bm.gae(r, v, flags, flags, np.array([1.0, -2.0]), 0.5, 1.0)
    np.testing.assert_array_equal(ret, [[0.125, -0.25], [0.25, -0.5], [0.5, -1.0]])


def test_flags_of_any_integer_dtype_and_non_contiguous_inputs():
    r, v, term, trunc, last, final = random_batch(30, 8, np.float64, seed=3)
    expected = bm.gae(r, v, term, trunc, last, 0.99, 0.95, final_values=final)
    as_ints = bm.gae(r, v, term.astype(np.int64), (trunc * 7).astype(np.uint8), last, 0.99, 0.95, final_values=final)
    fortran = bm.gae(*(np.asfortranarray(a) for a in (r, v, term, trunc)), last, 0.99, 0.95, final_values=np.asfortranarray(final))
    wide = [np.repeat(a, 2, axis=1)[:, ::2] for a in (r, v, term, trunc, final)]
    strided = bm.gae(*wide[:4], np.repeat(last, 2)[::2], 0.99, 0.95, final_values=wide[4])
    for got in (as_ints, fortran, strided):
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])


def test_inputs_are_not_modified():
    batch = random_batch(10, 3, np.float32, seed=4)
    copies = [a.copy() for a in batch]
    bm.gae(*batch[:5], 0.99, 0.95, final_values=batch[5])
    for a, b in zip(batch, copies):
        np.testing.assert_array_equal(a, b)


def test_on_env_rollouts_with_final_observation_values(rollout):
    """The way the trainer uses it: env outputs [T, N], values of info["final_obs"] where episodes ended."""
    env = bm.make_vec("SwimmerVel", 4, seed=0, max_episode_steps=6)
    env.set_tasks(env.sample_tasks(4, np.random.default_rng(0)))
    obs0, _ = env.reset(seed=0)
    record = rollout(env, np.random.default_rng(1).uniform(-1, 1, (15, 4, 2)))
    w = np.random.default_rng(2).normal(size=8)
    observed = np.concatenate([obs0[None], record["obs"][:-1]])
    values = observed @ w
    final_values = np.where(record["_final_obs"], np.nan_to_num(record["final_obs"]) @ w, 0.0)
    last_values = record["obs"][-1] @ w
    args = (record["reward"], values, record["terminated"], record["truncated"], last_values, 0.99, 0.95)
    adv, ret = bm.gae(*args, final_values=final_values)
    ref_adv, ref_ret = reference_gae(*args, final_values=final_values)
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ret, ref_ret, rtol=1e-12, atol=1e-12)
