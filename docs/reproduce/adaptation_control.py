"""Is a one-step gain adaptation *to the task*, or one more policy-gradient step that helps on any task?

For held-out tasks k (bmaml-eval's tasks and noise), the meta-policy is adapted with one inner step on
task k's episodes (params_k), then params_k is run on task k (matched) and on another task pi(k)
(mismatched: pi moves every task to one that differs from it). The task-specific part of the gain is
return(params_{pi^-1(j)} on j) vs return(params_j on j), paired per task j: if adapting to another task
helps as much as adapting to task j, the "adaptation" is task-agnostic improvement.

    usage: PYTHONPATH=. python docs/reproduce/adaptation_control.py RUN_DIR [--tasks 40] [--episodes 20]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from bmaml_robot.envs.families import get_family
from bmaml_robot.factory import build_learner
from bmaml_robot.meta import MetaLearner, adapt_to_tasks
from bmaml_robot.meta.sampler import MetaSampler
from bmaml_robot.run import load_run
from bmaml_robot.seeds import evaluation_seed, held_out_tasks
from bmaml_robot.stats import mean_ci
from bmaml_robot.torch_threads import one_torch_thread


def derangement(tasks: list[dict], rng: np.random.Generator) -> np.ndarray:
    """pi with tasks[pi[k]] != tasks[k] for every k (a random shift over a shuffled order, redrawn
    until no task lands on an equal one)."""
    keys = [json.dumps(t, sort_keys=True) for t in tasks]
    if len(set(keys)) < 2:
        raise ValueError("tasks: every held-out task is the same; nothing to mismatch")
    while True:
        order = rng.permutation(len(tasks))
        pi = np.empty(len(tasks), dtype=int)
        pi[order] = np.roll(order, 1)
        if all(keys[k] != keys[pi[k]] for k in range(len(tasks))):
            return pi


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run = load_run(args.run_dir)
    config = run.config
    tasks = held_out_tasks(config.family, args.tasks, args.seed)
    pi = derangement(tasks, np.random.default_rng(args.seed))
    with one_torch_thread():
        sampler = MetaSampler(config.family, args.tasks, args.episodes, config.horizon,
                              action_scale=config.action_scale)
        try:
            sampler.set_tasks(tasks)
            learner = build_learner(config, run.policy)
            assert isinstance(learner, MetaLearner)
            loop = adapt_to_tasks(learner, sampler, 1, lambda step: evaluation_seed(args.seed, 1 + step))
            before, matched = loop.episode_returns().mean(axis=2)  # [K] each: on task j
            # params_k on task pi(k): row k of the batch runs task pi(k).
            sampler.set_tasks([tasks[pi[k]] for k in range(args.tasks)])
            episodes = sampler.sample(learner.policy, loop.params, evaluation_seed(args.seed, 2))
            moved = learner.process(episodes).episode_returns().double().numpy().mean(axis=1)  # [K]
        finally:
            sampler.close()
    mismatched = np.empty(args.tasks)
    mismatched[pi] = moved  # on task j = pi(k): adapted to task k != j
    family = get_family(config.family)
    print(f"{args.run_dir}: {family.name}, {args.tasks} held-out tasks x {args.episodes} episodes, one inner step")
    for name, values in (("before adaptation", before), ("adapted to the task", matched),
                         ("adapted to another task", mismatched)):
        mean, low, high, *_ = mean_ci(values)
        print(f"  {name:26s} {mean:8.2f} [{low:.2f}, {high:.2f}]")
    for name, diff in (("gain, adapted to the task", matched - before),
                       ("gain, adapted to another task", mismatched - before),
                       ("task-specific part (matched - other)", matched - mismatched)):
        mean, low, high, *_ = mean_ci(diff)
        print(f"  {name:38s} {mean:+8.2f} [{low:+.2f}, {high:+.2f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
