"""Families that change the body or the medium, against Gymnasium's v5 robots.

With the asset's parameters every family's physics is Gymnasium's bit for bit (through the
per-thread model copy the core writes each env's values into); with changed parameters it is a
Gymnasium env whose ``model`` fields were changed the same way. The reference's fields are
written here with numpy from the task dict (from a pristine copy of the asset's values, by
MuJoCo's own name lookup), never through ``envs/physics.py``. States are random (as in
test_gymnasium_parity.py), actions partly out of range.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_gymnasium_parity import our_last_obs, random_actions, random_states, set_reference_state

import bmaml_robot as bm

mujoco = pytest.importorskip("mujoco")

PHYSICS_FAMILIES = [name for name, family in bm.FAMILIES.items() if family.physics]
#: Gymnasium v5's control cost weights for the new robots; the others: the MAML reference code's.
CTRL_COST_WEIGHT = {"HalfCheetah": 0.05, "Ant": 0.5e-2, "Swimmer": 0.05, "Hopper": 1e-3, "Walker2d": 1e-3}
SURVIVE_REWARD = {"Ant": 0.05, "Hopper": 1.0, "Walker2d": 1.0}
MODEL_FIELDS = ("body_mass", "body_inertia", "dof_damping", "geom_friction", "actuator_gear")


def pristine(ref) -> dict:
    values = {field: getattr(ref.model, field).copy() for field in MODEL_FIELDS}
    values["density"], values["viscosity"] = ref.model.opt.density, ref.model.opt.viscosity
    return values


def actuator_id(model, name: str) -> int:
    """By the actuator's name, else (the Ant, the Swimmer) the name of the joint it drives."""
    try:
        return model.actuator(name).id
    except KeyError:
        joint = model.joint(name).id
        return int(np.flatnonzero(model.actuator_trnid[:, 0] == joint)[0])


def write_reference(ref, base: dict, task: dict) -> None:
    """The task's physics into the reference's model, scales times the asset's values."""
    for field in MODEL_FIELDS:
        getattr(ref.model, field)[:] = base[field]
    ref.model.opt.density, ref.model.opt.viscosity = base["density"], base["viscosity"]
    m = ref.model
    for name, s in task.get("body_mass", {}).items():
        m.body_mass[m.body(name).id] = base["body_mass"][m.body(name).id] * s
    for name, s in task.get("body_inertia", {}).items():
        m.body_inertia[m.body(name).id] = base["body_inertia"][m.body(name).id] * np.asarray(s)
    for name, s in task.get("dof_damping", {}).items():
        dof = m.joint(name).dofadr[0]
        m.dof_damping[dof] = base["dof_damping"][dof] * s
    for name, s in task.get("geom_friction", {}).items():
        m.geom_friction[m.geom(name).id] = base["geom_friction"][m.geom(name).id] * np.asarray(s)
    for name, s in task.get("actuator_gear", {}).items():
        a = actuator_id(m, name)
        m.actuator_gear[a, 0] = base["actuator_gear"][a, 0] * s
    if "density" in task:
        m.opt.density = task["density"]
    if "viscosity" in task:
        m.opt.viscosity = task["viscosity"]


def extreme_tasks(family: bm.TaskFamily) -> list[dict]:
    """Outside the distribution, at the edges a sampler never reaches."""
    layout = family.layout
    assert layout is not None
    first = {f: ({layout.names(f)[0]: 0.0 if f == "actuator_gear" else 20.0} if f not in ("density", "viscosity") else 0.0)
             for f in family.physics}
    if family.robot == "HalfCheetah" and "actuator_gear" in family.physics:
        first = {"actuator_gear": {"bthigh": 0.0, "ffoot": 3.0}}  # held-out joint, and a stronger one
    return [{}, first]


def compare(family: bm.TaskFamily, tasks: list[dict], ref, rollout, seed: int, threads: int = 2) -> int:
    """Our batch against the reference, env by env; returns the steps compared."""
    rng = np.random.default_rng(seed)
    num_envs, horizon = len(tasks), 30
    env = bm.make_vec(family.name, num_envs, num_threads=threads, seed=seed, max_episode_steps=1000)
    env.set_tasks(tasks)
    qpos, qvel = random_states(ref, num_envs, rng)
    if family.robot in ("Hopper", "Walker2d"):
        qpos[:, 2] *= 0.5  # most start healthy; a few still fall, so terminations are compared
    first_obs = env.set_state(qpos, qvel)
    actions = random_actions(ref, (horizon, num_envs), rng)
    record = rollout(env, actions)
    low, high = ref.action_space.low, ref.action_space.high
    base = pristine(ref)
    steps = 0
    for i, task in enumerate(tasks):
        write_reference(ref, base, task)
        set_reference_state(ref, qpos[i], qvel[i])
        np.testing.assert_array_equal(first_obs[i], ref._get_obs())
        for t in range(horizon):
            clipped = np.clip(actions[t, i], low, high)
            ref_obs, _, ref_terminated, _, info = ref.step(clipped)
            where = f"{family.name} env {i} ({task}), step {t}"
            np.testing.assert_array_equal(our_last_obs(record, t, i), ref_obs, err_msg=where)
            assert record["x_velocity"][t, i] == info["x_velocity"], where
            assert record["terminated"][t, i] == ref_terminated, where
            assert not record["unstable"][t, i], where
            assert record["reward_task"][t, i] == info["x_velocity"], where  # forward: direction +1
            np.testing.assert_allclose(record["reward_ctrl"][t, i], -CTRL_COST_WEIGHT[family.robot] * np.sum(clipped**2),
                                       rtol=1e-12, err_msg=where)
            if family.robot in ("Hopper", "Walker2d"):
                assert record["reward_survive"][t, i] == info["reward_survive"], where
                np.testing.assert_allclose(record["reward_ctrl"][t, i], info["reward_ctrl"], rtol=1e-12, err_msg=where)
            elif family.robot == "Ant":
                assert record["reward_survive"][t, i] == (0.0 if ref_terminated else SURVIVE_REWARD["Ant"]), where
                np.testing.assert_allclose(record["reward_contact"][t, i], info["reward_contact"], rtol=1e-12, atol=1e-300)
            steps += 1
            if ref_terminated:
                break
    write_reference(ref, base, {})
    return steps


@pytest.mark.parametrize("name", PHYSICS_FAMILIES)
def test_default_and_extreme_physics_equal_gymnasium(name, make_reference, rollout):
    family = bm.FAMILIES[name]
    ref = make_reference(family.robot)
    assert compare(family, extreme_tasks(family), ref, rollout, seed=1) >= 20


@pytest.mark.parametrize("name", PHYSICS_FAMILIES)
def test_sampled_physics_equal_gymnasium_with_changed_fields(name, make_reference, rollout):
    family = bm.FAMILIES[name]
    ref = make_reference(family.robot)
    tasks = family.sample_tasks(4, np.random.default_rng(sum(map(ord, name))))
    assert compare(family, tasks, ref, rollout, seed=2) >= 20


def test_the_core_reads_the_assets_values(make_reference):
    """``physics_defaults`` are the reference model's own values, by the labels' names."""
    ref = make_reference("Hopper")
    env = bm.make_vec("HopperParams", 1)
    values = dict(zip(env._core.physics_columns, env._core.physics_defaults))
    for b in range(1, ref.model.nbody):
        name = ref.model.body(b).name
        assert values[f"body_mass[{name}]"] == ref.model.body_mass[b]
        assert [values[f"body_inertia[{name},{k}]"] for k in range(3)] == list(ref.model.body_inertia[b])
    for j in range(ref.model.njnt):
        assert values[f"dof_damping[{ref.model.joint(j).name}]"] == ref.model.dof_damping[ref.model.joint(j).dofadr[0]]
    assert len(values) == (ref.model.nbody - 1) * 4 + ref.model.nv + 3 * ref.model.ngeom


@pytest.mark.parametrize("name", ["HalfCheetahCrippled", "HopperParams", "SwimmerFluid"])
def test_results_do_not_depend_on_threads_or_on_the_other_envs(name, rollout, same_rollouts):
    """Bit-identical for 1, 2, 3 threads; env 0 of [A, B, ...] equals env 0 of [A, A, ...] (a
    value written for one env cannot leak into another's step)."""
    family = bm.FAMILIES[name]
    tasks = family.sample_tasks(7, np.random.default_rng(3))
    actions = np.random.default_rng(4).uniform(-12, 12, size=(40, 7, bm.make_vec(name, 1).act_dim))

    def run(tasks: list[dict], threads: int) -> dict:
        env = bm.make_vec(name, 7, num_threads=threads, seed=5, max_episode_steps=15)
        env.set_tasks(tasks)
        env.reset(seed=5)
        return rollout(env, actions)

    one = run(tasks, 1)
    for threads in (2, 3):
        same_rollouts(one, run(tasks, threads))
    alone = run([tasks[0]] * 7, 3)
    assert np.array_equal(one["obs"][:, 0], alone["obs"][:, 0])
    assert np.array_equal(one["reward"][:, 0], alone["reward"][:, 0])
    assert not np.array_equal(one["obs"][:, 1], alone["obs"][:, 1])
