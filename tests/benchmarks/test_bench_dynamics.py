"""Stepping robots whose physics differ per env (issue 16's families) against ``mujoco.rollout``.

Ours: a test-only HalfCheetah family with the widest layout (body mass and inertia, joint damping,
geom friction, actuator gear: 72 values per env), ProMP-style scales (x 1.5^u, u ~ U[-3, 3]), every
env different, 256 envs, closed loop. The core keeps one model copy per thread and writes each
env's values into it before the env's step.

Reference: ``mujoco.rollout`` with a *list of 256 models* (each written with its env's values),
one ``MjData`` per thread, open loop (HalfCheetah never terminates: both sides do equal work).
Target: ours >= 0.9 x its speed at 2 threads (1 thread reported). Also reported: the layout's own
cost (ours with this layout, all values at the asset's, / ours HalfCheetahDir) and memory.
"""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
from mujoco import rollout as mj_rollout
from test_bench_rollout import (
    CHEETAH_ENVS,
    CHEETAH_ROUNDS,
    CHEETAH_STEPS,
    _cheetah_model,
    mujoco_rollout,
    ours,
)

import bmaml_robot as bm
from bmaml_robot.envs.families import TaskFamily
from bmaml_robot.envs.physics import write_fields

LAYOUT = ("body_mass", "body_inertia", "dof_damping", "geom_friction", "actuator_gear")
BENCH_FAMILY = "BenchCheetahPhysics"


def _sample(n: int, rng: np.random.Generator) -> list[dict]:
    layout = bm.FAMILIES[BENCH_FAMILY].layout
    assert layout is not None
    return [{f: layout.named(f, 1.5 ** rng.uniform(-3, 3, layout.defaults(f).shape)) for f in LAYOUT} for _ in range(n)]


@pytest.fixture
def bench_family(monkeypatch: pytest.MonkeyPatch) -> TaskFamily:
    family = TaskFamily(BENCH_FAMILY, "HalfCheetah", "forward", "v_x - 0.05 |a|^2", "benchmark only",
                        _sample, lambda params: True, physics=LAYOUT)
    monkeypatch.setitem(bm.FAMILIES, BENCH_FAMILY, family)
    return family


def models_for(family: TaskFamily, tasks: list[dict]) -> list[mujoco.MjModel]:
    """One HalfCheetah model per task, with the task's absolute values written in."""
    layout = family.layout
    assert layout is not None
    models = []
    for task in tasks:
        model = _cheetah_model()
        write_fields(model, layout.absolute(task))
        models.append(model)
    return models


def test_per_env_physics_vs_rollout_with_a_model_per_env(bench, bench_family: TaskFamily) -> None:
    bench.benchmark.group = f"dynamics-halfcheetah-{CHEETAH_ENVS}"
    n, steps = CHEETAH_ENVS, CHEETAH_STEPS
    tasks = bench_family.sample_tasks(n, np.random.default_rng(0))  # what `ours` sets too
    models = models_for(bench_family, tasks)
    key = {k: f"cheetah-physics{n}/{k}" for k in
           ("ours/2t", "ours/1t", "rollout-models/2t", "rollout-models/1t", "ours-defaults/2t", "ours-dir/2t")}
    defaults_env = bm.make_vec(BENCH_FAMILY, n, num_threads=2, seed=0, max_episode_steps=1000)
    defaults_env.set_tasks([{}] * n)
    defaults_env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-0.3, 0.3, (steps, n, defaults_env.act_dim))

    def defaults_round() -> None:
        for a in actions:
            defaults_env.step(a)

    with mj_rollout.Rollout(nthread=0) as pool1, mj_rollout.Rollout(nthread=2) as pool2:
        references = {
            key["rollout-models/2t"]: mujoco_rollout(pool2, 2, n, steps, models),
            key["rollout-models/1t"]: mujoco_rollout(pool1, 1, n, steps, models),
            key["ours/1t"]: ours(BENCH_FAMILY, n, 1, steps),
            key["ours-defaults/2t"]: defaults_round,
            key["ours-dir/2t"]: ours("HalfCheetahDir", n, 2, steps),
        }
        bench.compare((key["ours/2t"], ours(BENCH_FAMILY, n, 2, steps)), references, work=n * steps,
                      rounds=CHEETAH_ROUNDS)
    width = bench_family.task_width
    bench.ratio(f"HalfCheetah {n} envs, per-env physics ({width - 2} values) 2t: ours / mujoco.rollout (a model per env)",
                key["ours/2t"], key["rollout-models/2t"], target=0.9,
                note=f"memory per env: the task row, {8 * width} B; per thread: one model copy, "
                     f"{_cheetah_model().nbuffer // 1024} KB")
    bench.ratio(f"HalfCheetah {n} envs, per-env physics 1t: ours / mujoco.rollout (a model per env)",
                key["ours/1t"], key["rollout-models/1t"])
    bench.ratio(f"HalfCheetah {n} envs 2t: ours with the layout at the asset's values / ours HalfCheetahDir",
                key["ours-defaults/2t"], key["ours-dir/2t"], note="the cost of writing the values, ideal 1")
