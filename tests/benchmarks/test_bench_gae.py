"""GAE throughput: ``bm.gae`` (C++) against a numpy implementation vectorised over envs.

The numpy reference is as fast as a careful user would write it: everything that does not depend
on the recursion (bootstrap values, TD errors, the episode-continues mask) is computed for the
whole ``[T, N]`` batch at once, and only the recursion ``A_t = delta_t + gamma lam (1 - done_t)
A_{t+1}`` loops over T in Python, two in-place numpy calls per step over the N envs. Both are
checked to agree (``allclose``) before timing, so the benchmark compares equal work.

Target: ours faster at every size.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import bmaml_robot as bm

GAMMA, LAM = 0.99, 0.95
NUM_ENVS = 800
EPISODE_LENGTH = 100  # truncations (time limit) every EPISODE_LENGTH steps
TERMINATION_RATE = 0.01  # true terminations, as Ant's falls
CASES = [(100, "float32"), (300, "float32"), (1000, "float32"), (1000, "float64")]
ROUNDS = {100: 200, 300: 100, 1000: 40}


def gae_numpy(
    rewards: np.ndarray,
    values: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    last_values: np.ndarray,
    gamma: float,
    lam: float,
    final_values: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference GAE with ``bm.gae``'s semantics; all arrays time first, ``[T, N]``.

    Terminated: no bootstrap. Truncated: bootstrap from ``final_values`` (the value of the cut
    episode's final observation). The advantage carry is cut at every episode end.
    """
    T, N = rewards.shape
    real = rewards.dtype.type
    gamma_r, gl = real(gamma), real(gamma) * real(lam)
    next_values = np.empty_like(values)
    next_values[:-1] = values[1:]
    next_values[-1] = last_values
    next_values = np.where(truncated, final_values, next_values)
    next_values[terminated] = 0
    delta = rewards + gamma_r * next_values - values
    keep = np.where(terminated | truncated, real(0), gl)  # gamma lam where the episode goes on
    adv = np.empty_like(rewards)
    adv[T - 1] = delta[T - 1]
    for t in range(T - 2, -1, -1):
        np.multiply(keep[t], adv[t + 1], out=adv[t])
        adv[t] += delta[t]
    return adv, adv + values


@functools.cache
def _batch(T: int, dtype: str) -> dict[str, np.ndarray]:
    """A realistic batch: episodes cut every EPISODE_LENGTH steps, random terminations."""
    rng = np.random.default_rng(T)
    shape = (T, NUM_ENVS)
    terminated = rng.random(shape) < TERMINATION_RATE
    truncated = np.zeros(shape, bool)
    truncated[EPISODE_LENGTH - 1 :: EPISODE_LENGTH] = True
    truncated &= ~terminated
    return {
        "rewards": rng.standard_normal(shape).astype(dtype),
        "values": rng.standard_normal(shape).astype(dtype),
        "terminated": terminated,
        "truncated": truncated,
        "last_values": rng.standard_normal(NUM_ENVS).astype(dtype),
        "final_values": np.where(truncated, rng.standard_normal(shape), 0).astype(dtype),
    }


def _run(fn, batch: dict[str, np.ndarray]):
    return lambda: fn(batch["rewards"], batch["values"], batch["terminated"], batch["truncated"],
                      batch["last_values"], GAMMA, LAM, final_values=batch["final_values"])


def _case_id(case: tuple[int, str]) -> str:
    return f"T{case[0]}-N{NUM_ENVS}-{case[1]}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_gae_vs_numpy(bench, case: tuple[int, str]) -> None:
    """``bm.gae`` (timed) interleaved with the numpy reference, after checking they agree."""
    T, dtype = case
    bench.benchmark.group = f"gae-{_case_id(case)}"
    batch = _batch(T, dtype)
    adv, ret = _run(bm.gae, batch)()
    ref_adv, ref_ret = _run(gae_numpy, batch)()
    assert adv.dtype == ret.dtype == ref_adv.dtype == np.dtype(dtype)
    tol = 1e-4 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(adv, ref_adv, rtol=tol, atol=tol)
    np.testing.assert_allclose(ret, ref_ret, rtol=tol, atol=tol)
    ours, numpy = f"gae {_case_id(case)}/ours", f"gae {_case_id(case)}/numpy"
    bench.compare((ours, _run(bm.gae, batch)), {numpy: _run(gae_numpy, batch)}, work=T * NUM_ENVS,
                  unit="elements", rounds=ROUNDS[T], warmup_rounds=2)
    bench.ratio(f"GAE {_case_id(case)}: ours / numpy", ours, numpy, target=1.0)
