"""Command-line entry points."""

from __future__ import annotations

import argparse
import time

import numpy as np

import bmaml_robot as bm


def demo_main(argv: list[str] | None = None) -> None:
    """``bmaml-demo``: step a batch of robots with random actions and report throughput."""
    parser = argparse.ArgumentParser(prog="bmaml-demo", description=demo_main.__doc__)
    parser.add_argument("--task", default="HalfCheetahDir", choices=sorted(bm.FAMILIES))
    parser.add_argument("--num-envs", type=int, default=256)
    parser.add_argument("--num-threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    env = bm.make_vec(args.task, args.num_envs, num_threads=args.num_threads, seed=args.seed, max_episode_steps=args.steps)
    rng = np.random.default_rng(args.seed)
    env.set_tasks(env.sample_tasks(args.num_envs, rng))
    env.reset(seed=args.seed)
    returns = np.zeros(args.num_envs)
    start = time.perf_counter()
    for _ in range(args.steps):
        actions = rng.uniform(-1.0, 1.0, size=(args.num_envs, env.act_dim))
        _, reward, _, _, _ = env.step(actions)
        returns += reward
    elapsed = time.perf_counter() - start
    print(
        f"{args.task}: {args.num_envs} envs x {args.steps} steps on {env.num_threads} threads in {elapsed:.2f} s "
        f"({args.num_envs * args.steps / elapsed:,.0f} env-steps/s); random-policy return {returns.mean():.2f} +- {returns.std():.2f}"
    )
    env.close()
