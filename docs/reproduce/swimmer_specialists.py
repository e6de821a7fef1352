"""How much could a SwimmerFluid policy gain by adapting? Specialists against the meta-policy.

A specialist is trained on one medium only (TRPO: MAML's trainer with ``fast_lr`` 0, so the inner
step does nothing; 20 x 10 episodes, 100 iterations, seed 0), then it and the SwimmerFluid
meta-policies are run on that medium (20 tasks x 20 episodes, evaluation seed 0), before and after
one inner step (``fast_lr`` 0.1). The specialist's return bounds what adapting to that medium could
reach at this training budget.

    usage: PYTHONPATH=. python docs/reproduce/swimmer_specialists.py [OUT_DIR]   (default runs/specialists)
"""

from __future__ import annotations

import sys
from pathlib import Path

import bmaml_robot as bm
from bmaml_robot.config import TrainConfig
from bmaml_robot.envs.families import TaskFamily
from bmaml_robot.factory import build_learner
from bmaml_robot.meta import MetaLearner, adapt_to_tasks
from bmaml_robot.meta.sampler import MetaSampler
from bmaml_robot.run import load_run
from bmaml_robot.seeds import evaluation_seed
from bmaml_robot.train import train

DENSITIES = (10.0, 4000.0)  # near air (viscosity stays Swimmer-v5's 0.1); Swimmer-v5's own medium
META_RUNS = ("docs/reproduce/swimmer-fluid-seed0", "docs/reproduce/swimmer-fluid-seed1")


def medium_family(density: float) -> str:
    """Register (for this process) a family whose every task is this medium."""
    name = f"SwimmerMedium{int(density)}"
    bm.FAMILIES[name] = TaskFamily(name, "Swimmer", "forward", "v_x - 0.05 |a|^2", f"density {density:g}",
                                   lambda n, rng: [{"density": density}] * n, lambda params: True,
                                   physics=("density", "viscosity"))
    return name


def returns_on(run_dir: str | Path, density: float) -> tuple[float, float]:
    """Mean return per episode on the medium, before and after one inner step."""
    run = load_run(run_dir)
    sampler = MetaSampler("SwimmerFluid", 20, 20, 100, action_scale=run.config.action_scale)
    try:
        sampler.set_tasks([{"density": density}] * 20)
        learner = build_learner(run.config.replace(fast_lr=0.1), run.policy)
        assert isinstance(learner, MetaLearner)
        before, after = adapt_to_tasks(learner, sampler, 1, lambda k: evaluation_seed(0, 1 + k)).mean_returns()
    finally:
        sampler.close()
    return before, after


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "runs/specialists")
    for density in DENSITIES:
        name = medium_family(density)
        specialist = out / name
        if not (specialist / "policy.pt").is_file():
            train(TrainConfig(family=name, fast_lr=0.0, num_tasks=20, episodes_per_task=10, horizon=100,
                              num_iterations=100, num_threads=1, seed=0), specialist)
        for label, run in [*((f"meta-policy {Path(r).name}", r) for r in META_RUNS), ("specialist", specialist)]:
            before, after = returns_on(run, density)
            print(f"density {density:6g}  {label:32s} before {before:6.1f}  after one step {after:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
