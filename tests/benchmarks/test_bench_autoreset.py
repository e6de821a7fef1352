"""Stepping throughput of NEXT_STEP autoreset against SAME_STEP, same env, same threads.

Both modes run on the threaded core: NEXT_STEP adds only Python-side bookkeeping per step (which
envs ended, their final observations swapped in) and, the step after an episode ended, a held env
(not stepped: its action is ignored and its current observation returned). Target: NEXT_STEP >=
0.9 x SAME_STEP's env-steps/s on HalfCheetahDir, 256 envs, 2 threads, interleaved round by round
(see conftest.py).

Two episode lengths: 1000 (Gymnasium's HalfCheetah limit: no episode ends in the measured rounds,
the per-step overhead alone) and 100 (the package's default: every env ends once per round; an
env-step is one env of one ``step()`` call, so NEXT_STEP's autoreset steps count as env-steps,
as Gymnasium counts them: about 1 in 101 of its env-steps simulates nothing).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import bmaml_robot as bm

ENVS = 256
THREADS = 2
STEPS = 100  # control steps per round
ROUNDS = 7
ACTION_SCALE = 0.3  # actions uniform in [-ACTION_SCALE, ACTION_SCALE] (HalfCheetah's bounds: [-1, 1])


def closed_loop(mode: AutoresetMode, max_episode_steps: int) -> Callable[[], None]:
    """One round: ``STEPS`` calls of ``step`` with new numpy actions each, on a persistent env."""
    env = bm.make_vec("HalfCheetahDir", ENVS, num_threads=THREADS, seed=0, max_episode_steps=max_episode_steps,
                      autoreset_mode=mode)
    assert env.num_threads == THREADS
    env.set_tasks(env.sample_tasks(ENVS, np.random.default_rng(0)))
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-ACTION_SCALE, ACTION_SCALE, (STEPS, ENVS, env.act_dim))

    def run() -> None:
        for a in actions:
            env.step(a)

    return run


@pytest.mark.parametrize("max_episode_steps", [1000, 100])
def test_next_step_vs_same_step(bench, max_episode_steps: int) -> None:
    """HalfCheetahDir, 256 envs, 2 threads: NEXT_STEP (timed) interleaved with SAME_STEP."""
    bench.benchmark.group = f"autoreset-halfcheetah-{ENVS}-{THREADS}t"
    name = f"cheetah{ENVS}/{THREADS}t/episodes of {max_episode_steps}"
    same, nxt = f"{name}/SAME_STEP", f"{name}/NEXT_STEP"
    bench.compare((nxt, closed_loop(AutoresetMode.NEXT_STEP, max_episode_steps)),
                  {same: closed_loop(AutoresetMode.SAME_STEP, max_episode_steps)},
                  work=ENVS * STEPS, rounds=ROUNDS)
    ends = "no episode ends" if max_episode_steps > (ROUNDS + 1) * STEPS else "every env ends once a round"
    bench.ratio(f"HalfCheetah {ENVS} envs {THREADS}t, {ends}: NEXT_STEP / SAME_STEP", nxt, same, target=0.9)
