"""A MuJoCo instability in one env: no crash, that env is reported, truncated and reset; the other
envs' trajectories are bit-identical to a run in which nothing went wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import bmaml_robot as bm

NUM_ENVS, VICTIM, HORIZON, SEED = 5, 2, 24, 4


def run(name: str, blow_up, actions: np.ndarray) -> tuple[np.ndarray, list[dict], list[tuple]]:
    """Start every env from its seeded reset state, with ``blow_up(qpos, qvel)`` applied to the
    victim's row (or nothing), and step; returns the set_state obs and the per-step outputs."""
    env = bm.make_vec(name, NUM_ENVS, num_threads=2, seed=SEED, max_episode_steps=10)
    env.set_tasks(env.sample_tasks(NUM_ENVS, np.random.default_rng(0)))
    env.reset(seed=SEED)
    qpos, qvel = env.get_state()
    if blow_up is not None:
        blow_up(qpos[VICTIM], qvel[VICTIM])
    start = env.set_state(qpos, qvel)
    steps = [env.step(a) for a in actions]
    return start, [s[4] for s in steps], [s[:4] for s in steps]


def huge_qvel(qpos, qvel):
    qvel[:] = 1e12  # beyond MuJoCo's mjMAXVAL (1e10): its bad-qvel check fires at once


def large_qvel(qpos, qvel):
    qvel[:] = 1e8  # finite and allowed, but the accelerations it causes diverge


def huge_qpos(qpos, qvel):
    qpos[0] = 1e12


CASES = [
    ("HalfCheetahDir", huge_qvel, "bad qvel"),
    ("AntGoal", huge_qvel, "bad qvel"),
    ("SwimmerVel", huge_qvel, "bad qvel"),
    ("HalfCheetahVel", large_qvel, "bad q"),
    ("AntDir", huge_qpos, "bad qpos"),
]


@pytest.mark.parametrize(("name", "blow_up", "reason"), CASES, ids=[f"{c[0]}-{c[1].__name__}" for c in CASES])
def test_unstable_env_is_reported_truncated_and_reset_without_touching_the_others(name, blow_up, reason):
    env = bm.make_vec(name, 1)
    actions = np.random.default_rng(1).uniform(-1, 1, (HORIZON, NUM_ENVS, env.act_dim))
    start, infos, outputs = run(name, blow_up, actions)
    normal_start, normal_infos, normal_outputs = run(name, None, actions)

    # The step where it blew up.
    info = infos[0]
    obs, reward, terminated, truncated = outputs[0]
    assert info["unstable"].tolist() == [i == VICTIM for i in range(NUM_ENVS)]
    assert info["unstable_reason"].dtype == object
    assert all(info["unstable_reason"][i] == "" for i in range(NUM_ENVS) if i != VICTIM)
    message = info["unstable_reason"][VICTIM]
    assert message.startswith(reason), message
    assert ": " in message[len(reason):], f"MuJoCo's own warning should follow the reason: {message!r}"
    assert truncated[VICTIM] and not terminated[VICTIM] and info["_final_obs"][VICTIM]
    assert reward[VICTIM] == 0.0 and info["x_velocity"][VICTIM] == 0.0
    assert all(info[term][VICTIM] == 0.0 for term in bm.REWARD_TERMS)
    # Its episode's last (trusted) observation is the one set_state returned.
    np.testing.assert_array_equal(info["final_obs"][VICTIM], start[VICTIM])
    # It starts a fresh episode: the next draw of its reset stream (the first went to env.reset).
    fresh = bm.make_vec(name, NUM_ENVS, seed=SEED)
    fresh.reset(seed=SEED)
    np.testing.assert_array_equal(obs[VICTIM], fresh.reset()[0][VICTIM])
    assert np.all(np.isfinite(obs))

    # Afterwards it runs normally again.
    for t in range(1, HORIZON):
        assert not infos[t]["unstable"].any(), t
        assert np.all(np.isfinite(outputs[t][0])), t

    # The others never noticed: every output bit-identical to the undisturbed run.
    others = [i for i in range(NUM_ENVS) if i != VICTIM]
    np.testing.assert_array_equal(start[others], normal_start[others])
    for t in range(HORIZON):
        for k, key in enumerate(("obs", "reward", "terminated", "truncated")):
            np.testing.assert_array_equal(outputs[t][k][others], normal_outputs[t][k][others], err_msg=f"{key} t={t}")
        for key in ("x_velocity", "final_obs", "_final_obs", "unstable", *bm.REWARD_TERMS):
            np.testing.assert_array_equal(infos[t][key][others], normal_infos[t][key][others], err_msg=f"{key} t={t}")
    assert any(info["_final_obs"][others].any() for info in infos), "the others' time limits were exercised too"


def test_every_env_unstable_at_once():
    env = bm.make_vec("AntDir", 4, num_threads=2, seed=0)
    env.reset(seed=0)
    qpos, qvel = env.get_state()
    obs0 = env.set_state(qpos, np.full_like(qvel, 1e12))
    obs, reward, terminated, truncated, info = env.step(np.zeros((4, 8)))
    assert info["unstable"].all() and truncated.all() and not terminated.any()
    assert all(r.startswith("bad qvel") for r in info["unstable_reason"])
    np.testing.assert_array_equal(info["final_obs"], obs0)
    assert np.all(np.abs(obs[:, 13:27]) < 1.0)  # fresh reset velocities, N(0, 0.1^2)
    obs, *_, info = env.step(np.zeros((4, 8)))
    assert not info["unstable"].any() and "unstable_reason" not in info


def test_non_finite_state_is_refused_before_it_reaches_mujoco():
    env = bm.make_vec("HalfCheetahDir", 3)
    qpos, qvel = env.get_state()
    qvel[1, 4] = np.nan
    with pytest.raises(ValueError, match=r"qvel: expected finite values, got nan in row 1 \(column 4\)"):
        env.set_state(qpos, qvel)


def test_mujoco_error_in_one_env_is_an_instability_not_an_exit(tmp_path):
    """mju_error (here: an arena too small for Ant's contacts) would call exit(); it must end
    only the env that raised it, with MuJoCo's message."""
    from bmaml_robot import _core
    from bmaml_robot.envs.assets import asset_path

    xml = Path(asset_path("Ant")).read_text().replace('<mujoco model="ant">', '<mujoco model="ant"><size memory="12K"/>', 1)
    small = tmp_path / "ant_small_arena.xml"
    small.write_text(xml)
    core = _core.VecEnvCore("Ant", "direction", str(small), 4, 2, 100, 0)
    core.set_tasks(np.ones((4, 2)))
    core.reset(0)
    for _ in range(60):
        obs, reward, terminated, truncated, *_, instability = core.step(np.ones((4, 8)))
        if instability.any():
            break
    failed = np.flatnonzero(instability)
    assert failed.size, "the small arena never overflowed"
    assert np.all(instability[failed] == _core.INSTABILITY_REASONS.index("MuJoCo error"))
    assert truncated[failed].all() and np.all(reward[failed] == 0.0)
    assert "mj_stackAlloc" in core.warning(int(failed[0]))
    assert np.all(np.isfinite(obs))
