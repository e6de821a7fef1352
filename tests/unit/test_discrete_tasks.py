"""The discrete tasks of Wang et al. (2018) (issue 15): bandits and the two-step task as batched envs
(``envs/discrete.py``), their random draws (per env, independent of the batch and of the actions),
and the reference agents (``envs/discrete_agents.py``) on the same draws."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

from bmaml_robot.envs import DISCRETE_FAMILIES, BatchedDiscreteEnv
from bmaml_robot.envs.discrete import (
    HIGH_REWARD_PROB,
    LOW_REWARD_PROB,
    NUM_DRAWS,
    REWARD_DRAW,
    DiscreteTaskEnv,
    stream_keys,
    uniforms,
)
from bmaml_robot.envs.discrete_agents import (
    BANDIT_AGENTS,
    cumulative_regret,
    run_bandit_agent,
    run_two_step_agent,
    stay_probabilities,
)


def make_env(family: str, tasks: list[dict], max_episode_steps: int | None = None) -> BatchedDiscreteEnv:
    env = BatchedDiscreteEnv(family, len(tasks), max_episode_steps=max_episode_steps)
    env.set_tasks(tasks)
    return env


def binomial_ok(successes: float, trials: float, p: float, sds: float = 5.0) -> bool:
    """``successes`` within ``sds`` binomial standard deviations of ``trials * p`` (never fails by chance
    in practice: 5 sd is a 1 in 1.7 million event)."""
    sd = np.sqrt(trials * p * (1 - p))
    return abs(successes - trials * p) <= sds * sd + 1e-9


def two_step_task(common_prob: float = 0.8, first_high: int = 0, switch_prob: float = 0.025) -> dict:
    return {"common_prob": common_prob, "first_high": first_high, "switch_prob": switch_prob}


def streams_of(n: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    return np.full(n, seed, dtype=np.uint64), np.arange(n, dtype=np.uint64)


# --- the families --------------------------------------------------------------------------------


def test_families_and_their_tasks():
    assert set(DISCRETE_FAMILIES) == {"BanditIndependent", "BanditCorrelated", "TwoStep", "TwoStepDaw"}
    rng = np.random.default_rng(0)
    correlated = np.array([t["probs"] for t in DISCRETE_FAMILIES["BanditCorrelated"].sample_tasks(4000, rng)])
    np.testing.assert_allclose(correlated.sum(1), 1.0, atol=1e-15)
    assert abs(correlated[:, 0].mean() - 0.5) < 0.03 and abs(correlated[:, 0].var() - 1 / 12) < 0.01  # U[0, 1]
    independent = np.array([t["probs"] for t in DISCRETE_FAMILIES["BanditIndependent"].sample_tasks(4000, rng)])
    assert ((independent >= 0) & (independent <= 1)).all() and abs(np.corrcoef(independent.T)[0, 1]) < 0.06
    for name, common in (("TwoStep", 0.8), ("TwoStepDaw", 0.7)):
        tasks = DISCRETE_FAMILIES[name].sample_tasks(400, rng)
        assert {t["common_prob"] for t in tasks} == {common} and {t["switch_prob"] for t in tasks} == {0.025}
        assert {t["first_high"] for t in tasks} == {0, 1}
        assert DISCRETE_FAMILIES[name].in_distribution(tasks[0])
    assert not DISCRETE_FAMILIES["BanditCorrelated"].in_distribution({"probs": [0.2, 0.2]})
    assert DISCRETE_FAMILIES["TwoStep"].default_episode_steps == 2


# --- rewards, transitions, switches ----------------------------------------------------------------


def test_bandit_rewards_come_with_the_pulled_arms_probability():
    probs = [[0.1, 0.7], [0.5, 0.95], [0.0, 1.0], [0.3, 0.3]]
    env = make_env("BanditIndependent", [{"probs": p} for p in probs], max_episode_steps=50)
    env.reset_streams(*streams_of(4))
    T = 4000
    rng = np.random.default_rng(1)
    pulls, wins = np.zeros((4, 2)), np.zeros((4, 2))
    for _ in range(T):
        action = rng.integers(0, 2, size=4)
        _, reward, terminated, _, info = env.step(action)
        assert set(np.unique(reward)) <= {0.0, 1.0} and not terminated.any()
        np.testing.assert_array_equal(info["expected_reward"], np.array(probs)[np.arange(4), action])
        pulls[np.arange(4), action] += 1
        wins[np.arange(4), action] += reward
    for i in range(4):
        for a in range(2):
            assert binomial_ok(wins[i, a], pulls[i, a], probs[i][a]), (i, a, wins[i, a] / pulls[i, a])
    assert wins[2, 0] == 0 and wins[2, 1] == pulls[2, 1]  # p = 0: never; p = 1: always


def run_two_step(env: BatchedDiscreteEnv, episodes: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random first-stage actions; per episode ``[N, E]``: action, common, second state (1 or 2), high
    (0 or 1), reward."""
    rng = np.random.default_rng(seed)
    N = env.num_envs
    out = {key: np.zeros((N, episodes), dtype=int) for key in ("action", "common", "state", "high", "reward")}
    for e in range(episodes):
        action = rng.integers(0, 2, size=N)
        obs, reward, terminated, truncated, info = env.step(action)
        assert (info["stage"] == 1).all() and (reward == 0).all() and not (terminated | truncated).any()
        assert (obs[:, 0] == 0).all() and (obs.sum(1) == 1).all()
        out["action"][:, e], out["common"][:, e], out["state"][:, e] = action, info["common"], obs.argmax(1)
        obs, reward, terminated, truncated, info = env.step(rng.integers(0, 2, size=N))  # any second action
        assert (info["stage"] == 2).all() and terminated.all() and not truncated.any() and not info["common"].any()
        out["high"][:, e], out["reward"][:, e] = info["high"], reward
        np.testing.assert_array_equal(obs, np.tile([1.0, 0.0, 0.0], (N, 1)))  # the next episode's S0
        np.testing.assert_array_equal(info["final_obs"], np.zeros((N, 3)))  # the terminal state
    return out


@pytest.mark.parametrize(("family", "common_prob"), [("TwoStep", 0.8), ("TwoStepDaw", 0.7)])
def test_two_step_transitions_rewards_and_switches(family, common_prob):
    N, E = 200, 100
    tasks = DISCRETE_FAMILIES[family].sample_tasks(N, np.random.default_rng(3))
    env = make_env(family, tasks)
    env.reset_streams(*streams_of(N))
    run = run_two_step(env, E)
    assert binomial_ok(run["common"].sum(), N * E, common_prob)
    # action 0 commonly leads to S1 (state 1), action 1 to S2
    np.testing.assert_array_equal(run["state"] == 1, (run["action"] == 0) == (run["common"] == 1))
    in_high = run["state"] - 1 == run["high"]
    assert binomial_ok(run["reward"][in_high].sum(), in_high.sum(), HIGH_REWARD_PROB)
    assert binomial_ok(run["reward"][~in_high].sum(), (~in_high).sum(), LOW_REWARD_PROB)
    np.testing.assert_array_equal(run["high"][:, 0], [t["first_high"] for t in tasks])
    switches = (run["high"][:, 1:] != run["high"][:, :-1]).sum()
    assert switches > 0 and binomial_ok(switches, N * (E - 1), 0.025)


def test_switch_probability_is_the_tasks():
    N, E = 100, 60
    env = make_env("TwoStep", [two_step_task(switch_prob=0.3, first_high=i % 2) for i in range(N)])
    env.reset_streams(*streams_of(N))
    high = run_two_step(env, E)["high"]
    assert binomial_ok((high[:, 1:] != high[:, :-1]).sum(), N * (E - 1), 0.3)


def test_the_high_state_persists_across_autoresets_and_restarts_with_reset_streams():
    tasks = [two_step_task(switch_prob=0.0, first_high=0), two_step_task(switch_prob=0.0, first_high=1),
             two_step_task(switch_prob=1.0, first_high=0), two_step_task(switch_prob=1.0, first_high=1)]
    env = make_env("TwoStep", tasks, max_episode_steps=2)
    env.reset_streams(*streams_of(4))
    high = run_two_step(env, 5)["high"]
    np.testing.assert_array_equal(high, [[0] * 5, [1] * 5, [0, 1, 0, 1, 0], [1, 0, 1, 0, 1]])
    env.reset()  # continues the trial: the high state too (5 switches so far)
    np.testing.assert_array_equal(run_two_step(env, 1)["high"][:, 0], [0, 1, 1, 0])
    env.reset_streams(*streams_of(4))  # a new trial: first_high again
    np.testing.assert_array_equal(run_two_step(env, 1)["high"][:, 0], [0, 1, 0, 1])
    run_two_step(env, 1)
    env.reset(seed=3)  # a seeded reset is a new trial too
    np.testing.assert_array_equal(run_two_step(env, 1)["high"][:, 0], [0, 1, 0, 1])
    env.set_tasks([two_step_task(switch_prob=0.0, first_high=1)] * 4)
    env.reset()
    np.testing.assert_array_equal(run_two_step(env, 2)["high"], np.ones((4, 2)))


# --- autoreset -----------------------------------------------------------------------------------


def test_bandit_episodes_are_truncated_with_same_step_autoreset():
    env = make_env("BanditCorrelated", [{"probs": [0.4, 0.6]}] * 2, max_episode_steps=3)
    assert env.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    obs = env.reset_streams(*streams_of(2))
    np.testing.assert_array_equal(obs, np.ones((2, 1)))
    for t in range(1, 10):
        obs, _, terminated, truncated, info = env.step(np.array([0, 1]))
        assert not terminated.any() and truncated.all() == (t % 3 == 0) and truncated.any() == (t % 3 == 0)
        np.testing.assert_array_equal(info["_final_obs"], truncated)
        assert info["final_obs"].shape == (2, 1) and info["final_obs"].dtype == np.float64
        if t % 3 == 0:
            np.testing.assert_array_equal(info["final_obs"], np.ones((2, 1)))
        else:
            assert np.isnan(info["final_obs"]).all()
        np.testing.assert_array_equal(obs, np.ones((2, 1)))


def test_a_two_step_episode_is_two_steps_with_any_longer_limit():
    env = make_env("TwoStep", [two_step_task()] * 3, max_episode_steps=50)
    env.reset(seed=0)
    for t in range(1, 9):
        obs, _, terminated, truncated, info = env.step(np.array([0, 1, 1]))
        ended = t % 2 == 0
        assert (terminated == ended).all() and not truncated.any()
        np.testing.assert_array_equal(info["stage"], np.full(3, 2 - t % 2))
        assert np.isnan(info["final_obs"]).all() != (t % 2 == 0)


# --- randomness: per env, independent of the batch and of the actions ------------------------------


def splitmix64_reference(key: int, count: int) -> list[float]:
    """SplitMix64 seeded with ``key``, its first ``count`` outputs as uniforms (plain Python ints)."""
    mask, state, out = 2**64 - 1, key, []
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z ^= z >> 31
        out.append((z >> 11) * 2.0**-53)
    return out


def test_the_draws_are_splitmix64_of_the_streams_key():
    keys = stream_keys(np.array([0, 5, 2**64 - 1], np.uint64), np.array([0, 3, 2**64 - 1], np.uint64))
    assert keys[0] == np.random.SeedSequence([0, 0]).generate_state(1, np.uint64)[0]
    steps = 4
    for i, key in enumerate(keys):
        expected = splitmix64_reference(int(key), NUM_DRAWS * steps)
        got = np.concatenate([uniforms(keys[i : i + 1], np.array([t], np.uint64))[0] for t in range(steps)])
        assert got.tolist() == expected  # bit for bit
    assert len(set(keys.tolist())) == 3


@pytest.mark.parametrize("family", sorted(DISCRETE_FAMILIES))
def test_an_env_of_a_batch_equals_a_one_env_batch_on_its_stream(family):
    """Whatever the batch size, the other envs (their tasks, seeds) and the actions."""
    N, T = 5, 24
    tasks = DISCRETE_FAMILIES[family].sample_tasks(N, np.random.default_rng(0))
    seeds = np.array([11, 11, 12, 2**63, 0], np.uint64)
    streams = np.array([0, 1, 0, 7, 2**64 - 1], np.uint64)
    actions = np.random.default_rng(1).integers(0, 2, size=(T, N))
    batch = make_env(family, tasks, max_episode_steps=6)
    batch_out = [batch.reset_streams(seeds, streams)] + [batch.step(a) for a in actions]
    for i in range(N):
        one = make_env(family, [tasks[i]], max_episode_steps=6)
        assert np.array_equal(one.reset_streams(seeds[i : i + 1], streams[i : i + 1]), batch_out[0][i : i + 1])
        for t in range(T):
            got, want = one.step(actions[t, i : i + 1]), batch_out[t + 1]
            for k in range(4):
                np.testing.assert_array_equal(got[k], want[k][i : i + 1])
            for key, value in got[4].items():
                np.testing.assert_array_equal(value, want[4][key][i : i + 1], err_msg=key)


def test_reward_draws_do_not_depend_on_the_actions():
    N, T = 6, 40
    probs = np.random.default_rng(4).uniform(size=(N, 2))
    env = make_env("BanditIndependent", [{"probs": p.tolist()} for p in probs])
    seeds, streams = streams_of(N, seed=21)
    u = np.stack([uniforms(stream_keys(seeds, streams), np.full(N, t, np.uint64))[:, REWARD_DRAW] for t in range(T)])
    rewards = {}
    for name, rng_seed in (("a", 0), ("b", 1)):
        actions = np.random.default_rng(rng_seed).integers(0, 2, size=(T, N))
        env.reset_streams(seeds, streams)
        rewards[name] = np.stack([env.step(a)[1] for a in actions])
        chosen = probs[np.arange(N), actions]
        np.testing.assert_array_equal(rewards[name], (u < chosen).astype(float))  # reward = u < p_action
        if name == "a":
            first = actions
    same = first == actions
    assert same.any() and (~same).any()
    np.testing.assert_array_equal(rewards["a"][same], rewards["b"][same])


def test_seeded_resets_are_streams_of_the_seed():
    tasks = DISCRETE_FAMILIES["BanditIndependent"].sample_tasks(3, np.random.default_rng(0))
    env = make_env("BanditIndependent", tasks)
    actions = np.array([0, 1, 1])

    def rewards(reset) -> np.ndarray:
        reset()
        return np.stack([env.step(actions)[1] for _ in range(30)])

    by_int = rewards(lambda: env.reset(seed=9))
    assert np.array_equal(by_int, rewards(lambda: env.reset_streams([9, 9, 9], [0, 1, 2])))
    by_list = rewards(lambda: env.reset(seed=[4, 5, 6]))
    assert np.array_equal(by_list, rewards(lambda: env.reset_streams([4, 5, 6], [0, 0, 0])))
    assert not np.array_equal(by_int, by_list)
    continued = rewards(lambda: env.reset())  # continues the streams: not a repeat
    assert not np.array_equal(continued, by_list)


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "task", "error", "message"),
    [
        ("BanditIndependent", {}, ValueError, r"tasks\[1\]: BanditIndependent tasks have exactly the keys \['probs'\]; missing \['probs'\], unknown \[\]"),
        ("BanditIndependent", {"probs": [0.1, 0.2], "p": 1}, ValueError, r"unknown \['p'\]"),
        ("BanditIndependent", {"probs": [0.1, 1.5]}, ValueError, r"tasks\[1\]\['probs'\]: expected 2 probabilities in \[0, 1\], got \[0.1, 1.5\]"),
        ("BanditIndependent", {"probs": [-0.1, 0.5]}, ValueError, r"tasks\[1\]\['probs'\]: expected 2 probabilities"),
        ("BanditIndependent", {"probs": [float("nan"), 0.5]}, ValueError, r"got \[nan, 0.5\]"),
        ("BanditIndependent", {"probs": [0.1, 0.2, 0.3]}, ValueError, r"expected 2 probabilities"),
        ("BanditIndependent", {"probs": [True, False]}, TypeError, r"expected 2 probabilities"),
        ("BanditIndependent", {"probs": "ab"}, TypeError, r"expected 2 probabilities"),
        ("BanditIndependent", [0.1, 0.2], TypeError, r"tasks\[1\]: expected a dict with keys \['probs'\], got list"),
        ("TwoStep", {"common_prob": 0.8, "first_high": 0}, ValueError, r"missing \['switch_prob'\]"),
        ("TwoStep", two_step_task(common_prob=0.5), ValueError, r"tasks\[1\]\['common_prob'\]: expected a finite number in \(0.5, 1\) \(the common transition's probability\), got 0.5"),
        ("TwoStep", two_step_task(common_prob=1.0), ValueError, r"\['common_prob'\]: expected a finite number in \(0.5, 1\)"),
        ("TwoStep", two_step_task(common_prob=0.3), ValueError, r"got 0.3"),
        ("TwoStep", two_step_task(common_prob=float("nan")), ValueError, r"\['common_prob'\].*got nan"),
        ("TwoStep", two_step_task(common_prob="0.8"), TypeError, r"\['common_prob'\].*got '0.8'"),
        ("TwoStep", two_step_task(first_high=2), ValueError, r"tasks\[1\]\['first_high'\]: expected an integer in \[0, 1\] \(0: S1 starts high, 1: S2\), got 2"),
        ("TwoStep", two_step_task(first_high=True), TypeError, r"\['first_high'\].*got True"),
        ("TwoStep", two_step_task(switch_prob=-0.1), ValueError, r"tasks\[1\]\['switch_prob'\]: expected a finite number in \[0, 1\]"),
    ],
)
def test_bad_tasks_are_named(family, task, error, message):
    env = BatchedDiscreteEnv(family, 2)
    good = DISCRETE_FAMILIES[family].sample_tasks(1, np.random.default_rng(0))[0]
    with pytest.raises(error, match=message):
        env.set_tasks([good, task])
    assert env.tasks == []  # nothing half-set
    with pytest.raises(ValueError, match=r"tasks: expected one task per env \(2\), got 1"):
        env.set_tasks([good])
    with pytest.raises(TypeError, match=r"tasks: expected a list of 2 task dicts, got dict"):
        env.set_tasks(good)


@pytest.fixture()
def bandits() -> BatchedDiscreteEnv:
    env = make_env("BanditCorrelated", [{"probs": [0.2, 0.8]}] * 3)
    env.reset(seed=0)
    return env


@pytest.mark.parametrize(
    ("actions", "error", "message"),
    [
        (np.zeros(2, np.int64), ValueError, r"actions: expected integer action indices in \[0, 1\] of shape \[3\], got shape \[2\]"),
        (np.zeros((3, 1), np.int64), ValueError, r"of shape \[3\], got shape \[3, 1\]"),
        (0, ValueError, r"of shape \[3\], got shape \[\]"),
        (np.array([0, 1, 2]), ValueError, r"actions: expected integer action indices in \[0, 1\], got 2 at index 2"),
        (np.array([0, -1, 0]), ValueError, r"got -1 at index 1"),
        (np.array([0, 2**63, 0], np.uint64), ValueError, r"got 9223372036854775808 at index 1"),
        (np.array([0.0, 0.5, 1.0]), ValueError, r"actions: expected integer action indices in \[0, 1\] \(floats must be whole numbers\), got 0.5 at index 1"),
        (np.array([0.0, np.nan, 1.0]), ValueError, r"got nan at index 1"),
        (np.array([np.inf, 0.0, 1.0]), ValueError, r"got inf at index 0"),
        (np.array([True, False, True]), TypeError, r"actions: expected integer action indices in \[0, 1\], got dtype bool"),
        (np.array(["0", "1", "0"]), TypeError, r"got dtype <U1"),
        ("abc", TypeError, r"actions: expected integer action indices in \[0, 1\], got 'abc'"),
        ([0, [1], 0], TypeError, r"actions: expected integer action indices"),
        (None, TypeError, r"got dtype object"),
    ],
)
def test_bad_actions_are_named(bandits, actions, error, message):
    with pytest.raises(error, match=message):
        bandits.step(actions)
    _, reward, *_ = bandits.step([0, 1, 1])  # still works; a list and whole floats are fine
    bandits.step(np.array([1.0, 0.0, -0.0], np.float32))
    assert reward.shape == (3,)


def test_bad_construction_and_order_of_calls():
    with pytest.raises(ValueError, match=r"max_episode_steps: expected an integer in \[2, 2\*\*30\] or None \(a TwoStep episode is two steps\), got 1"):
        BatchedDiscreteEnv("TwoStep", 2, max_episode_steps=1)
    with pytest.raises(ValueError, match=r"max_episode_steps: expected an integer in \[1, 2\*\*30\] or None, got 0"):
        BatchedDiscreteEnv("BanditCorrelated", 2, max_episode_steps=0)
    with pytest.raises(ValueError, match=r"num_envs: expected an integer in \[1, 2\*\*30\], got 0"):
        BatchedDiscreteEnv("BanditCorrelated", 0)
    with pytest.raises(ValueError, match=r"num_threads: expected an integer in \[1, 256\] \(unused"):
        BatchedDiscreteEnv("BanditCorrelated", 2, num_threads=0)
    with pytest.raises(ValueError, match=r"family: expected one of \['BanditCorrelated', 'BanditIndependent', 'TwoStep', 'TwoStepDaw'\], got 'HalfCheetahDir'"):
        BatchedDiscreteEnv("HalfCheetahDir", 2)
    env = BatchedDiscreteEnv("TwoStep", 2)
    assert env.max_episode_steps == 2
    with pytest.raises(RuntimeError, match=r"reset: no tasks yet: call set_tasks\(tasks\)"):
        env.reset(seed=0)
    with pytest.raises(RuntimeError, match=r"reset_streams: no tasks yet"):
        env.reset_streams([0, 0], [0, 1])
    env.set_tasks(env.sample_tasks(2, np.random.default_rng(0)))
    with pytest.raises(gymnasium.error.ResetNeeded, match=r"step: call reset\(\) or reset_streams\(\) before step\(\)"):
        env.step([0, 0])
    with pytest.raises(ValueError, match=r"seeds: expected 2 integers \(shape \[2\]\), got shape \[3\]"):
        env.reset_streams([0, 0, 0], [0, 1])
    with pytest.raises(ValueError, match=r"streams: expected integers in \[0, 2\*\*64\), got dtype int64 with negative"):
        env.reset_streams([0, 0], [0, -1])
    with pytest.raises(ValueError, match=r"seed\[1\]: expected an integer in \[0, 2\*\*64\), got -3"):
        env.reset(seed=[0, -3])
    with pytest.raises(ValueError, match=r"options: this env takes no reset options"):
        env.reset(options={"x": 1})


def test_every_call_after_close_names_itself():
    env = make_env("BanditCorrelated", [{"probs": [0.2, 0.8]}])
    env.reset()
    env.close()
    env.close()  # again: nothing
    for method, call in [("step", lambda: env.step([0])), ("reset", lambda: env.reset()),
                         ("reset_streams", lambda: env.reset_streams([0], [0])),
                         ("set_tasks", lambda: env.set_tasks([{"probs": [0.2, 0.8]}])),
                         ("sample_tasks", lambda: env.sample_tasks(1, np.random.default_rng(0)))]:
        with pytest.raises(RuntimeError, match=rf"env is closed: {method}\(\) after close\(\)"):
            call()
    assert env.num_envs == 1 and env.tasks == [{"probs": [0.2, 0.8]}]  # attributes stay readable


# --- Gymnasium -----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["BanditCorrelated", "TwoStep"])
def test_gymnasium_make_passes_the_env_checker(family):
    env = gymnasium.make(f"bmaml_robot/{family}-v0")
    assert isinstance(env.unwrapped, DiscreteTaskEnv) and isinstance(env.action_space, gymnasium.spaces.Discrete)
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=5)
    assert env.observation_space.contains(obs) and DISCRETE_FAMILIES[family].encode(info["task"]) is not None
    with pytest.raises(ValueError, match=r"action: expected integer action indices in \[0, 1\], got 2"):
        env.step(2)
    env.close()
    with pytest.raises(RuntimeError, match=r"env is closed: reset\(\) after close\(\)"):
        env.unwrapped.reset()


def test_the_single_env_is_env_0_of_a_batch_and_ends_episodes():
    task = {"probs": [0.3, 0.6]}
    single = DiscreteTaskEnv("BanditCorrelated", task=task, max_episode_steps=4)  # its own limit
    batch = make_env("BanditCorrelated", [task, {"probs": [0.9, 0.1]}], max_episode_steps=4)
    single.reset(seed=8)
    batch.reset(seed=[8, 3])
    for t in range(1, 9):
        _, reward, terminated, truncated, info = single.step(t % 2)
        _, rewards, _, _, infos = batch.step([t % 2, 0])
        assert reward == rewards[0] and info["expected_reward"] == infos["expected_reward"][0]
        assert truncated == (t % 4 == 0) and not terminated
    limited = gymnasium.make("bmaml_robot/BanditCorrelated-v0", task=task, max_episode_steps=3)  # TimeLimit's
    limited.reset(seed=0)
    assert [limited.step(0)[3] for _ in range(3)] == [False, False, True]


def test_gymnasium_make_vec_gives_the_batched_env():
    env = gymnasium.make_vec("bmaml_robot/TwoStepDaw-v0", num_envs=3)
    assert isinstance(env, BatchedDiscreteEnv) and env.num_envs == 3 and len(env.tasks) == 3
    assert isinstance(env.action_space, gymnasium.spaces.MultiDiscrete) and env.single_action_space.n == 2
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, 3) and obs.dtype == np.float64 and env.observation_space.contains(obs)
    obs, reward, *_ = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs) and reward.dtype == np.float64
    fixed = gymnasium.make_vec("bmaml_robot/BanditIndependent-v0", num_envs=2, task={"probs": [0.0, 1.0]},
                               max_episode_steps=7)
    assert fixed.tasks == [{"probs": [0.0, 1.0]}] * 2 and fixed.max_episode_steps == 7


# --- reference agents ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bandit_runs():
    N, T = 200, 100
    env = BatchedDiscreteEnv("BanditCorrelated", N, max_episode_steps=T)
    env.set_tasks(env.sample_tasks(N, np.random.default_rng(5)))
    seeds, streams = streams_of(N, seed=3)
    runs = {agent: run_bandit_agent(agent, env, seeds, streams, T, rng_seed=0) for agent in BANDIT_AGENTS}
    return env.tasks, runs


def test_bandit_agents_regret(bandit_runs):
    tasks, runs = bandit_runs
    regret = {agent: cumulative_regret(run.expected_rewards, tasks)[:, -1].mean() for agent, run in runs.items()}
    assert regret["oracle"] == 0.0
    # random: 100 pulls * E|p0 - p1| / 2 = 25 in expectation
    assert 20 < regret["random"] < 30
    assert regret["thompson"] < 0.25 * regret["random"] and regret["ucb1"] < 0.4 * regret["random"]
    assert regret["thompson"] > 0 and regret["ucb1"] > 0
    for agent, run in runs.items():
        assert run.actions.shape == run.rewards.shape == run.expected_rewards.shape == (200, 100), agent
    np.testing.assert_array_equal(runs["ucb1"].actions[:, :2], np.tile([0, 1], (200, 1)))  # each arm once first


def test_thompsons_reward_is_in_the_expected_range_and_agents_meet_the_same_draws(bandit_runs):
    tasks, runs = bandit_runs
    thompson, oracle = runs["thompson"], runs["oracle"]
    best = np.array([max(t["probs"]) for t in tasks])
    total = thompson.rewards.sum(1).mean()
    # the realised reward is the expected one up to binomial noise
    sd = np.sqrt((thompson.expected_rewards * (1 - thompson.expected_rewards)).sum()) / len(tasks)
    assert abs(total - thompson.expected_rewards.sum(1).mean()) < 5 * sd
    assert 100 * best.mean() - 8 < total < 100 * best.mean() + 5 * sd  # below the oracle's by its small regret
    same = thompson.actions == oracle.actions  # same pull at the same step on the same stream: the same reward
    assert same.mean() > 0.8
    np.testing.assert_array_equal(thompson.rewards[same], oracle.rewards[same])


def test_bandit_agents_are_deterministic_and_checked():
    env = make_env("BanditIndependent", [{"probs": [0.3, 0.5]}] * 4)
    seeds, streams = streams_of(4)
    a = run_bandit_agent("thompson", env, seeds, streams, 30, rng_seed=1)
    b = run_bandit_agent("thompson", env, seeds, streams, 30, rng_seed=1)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match=r"agent: expected one of \['thompson', 'ucb1', 'random', 'oracle'\], got 'greedy'"):
        run_bandit_agent("greedy", env, seeds, streams, 30, 0)
    with pytest.raises(ValueError, match=r"env: expected a bandit family, got TwoStep"):
        run_bandit_agent("thompson", make_env("TwoStep", [two_step_task()]), seeds[:1], streams[:1], 3, 0)
    with pytest.raises(ValueError, match=r"num_steps: expected an integer >= 1, got 0"):
        run_bandit_agent("thompson", env, seeds, streams, 0, 0)
    np.testing.assert_allclose(cumulative_regret([[0.3, 0.5, 0.3]], [{"probs": [0.3, 0.5]}]), [[0.2, 0.2, 0.4]])


def test_stay_probabilities_by_reward_and_transition():
    actions = np.array([[0, 0, 1, 1, 1, 0]])
    common = np.array([[1, 0, 1, 1, 0, 0]])
    rewarded = np.array([[1, 1, 0, 1, 0, 0]])
    # pairs: (R,C) stay; (R,rare) switch; (U,C) stay; (R,C) stay; (U,rare) switch
    np.testing.assert_array_equal(stay_probabilities(actions, common, rewarded), [[1.0, 0.0], [1.0, 0.0]])
    assert np.isnan(stay_probabilities([[0, 1]], [[1, 1]], [[1, 1]])[1]).all()
    with pytest.raises(ValueError, match=r"common: expected shape \[1, 6\] \(as first_actions\), got shape \[1, 5\]"):
        stay_probabilities(actions, common[:, 1:], rewarded)
    with pytest.raises(ValueError, match=r"first_actions: expected shape \[num_envs, E\] with E >= 2, got shape \[6\]"):
        stay_probabilities(actions[0], common[0], rewarded[0])


def test_two_step_agents_have_the_model_free_and_model_based_signatures():
    N, E = 200, 150
    env = BatchedDiscreteEnv("TwoStep", N)
    env.set_tasks(env.sample_tasks(N, np.random.default_rng(2)))
    seeds, streams = streams_of(N, seed=1)
    stay, runs = {}, {}
    for agent in ("model_free", "model_based"):
        runs[agent] = run = run_two_step_agent(agent, env, seeds, streams, E, rng_seed=0)
        stay[agent] = stay_probabilities(run.first_actions, run.common, run.rewards)
    (rc, rr), (uc, ur) = stay["model_free"]
    # model-free: a reward makes it stay, whatever the transition
    assert rc > uc + 0.2 and rr > ur + 0.05
    (brc, brr), (buc, bur) = stay["model_based"]
    # model-based: the interaction; after a rewarded rare transition it switches (stays less than when unrewarded)
    assert brc > brr + 0.3 and bur > buc + 0.3 and brr < bur - 0.3
    assert abs((brc + brr) - (buc + bur)) / 2 < 0.05  # no main effect of reward
    interaction = {agent: (p[0, 0] - p[0, 1]) - (p[1, 0] - p[1, 1]) for agent, p in stay.items()}
    assert interaction["model_based"] > interaction["model_free"] + 0.4
    # the same env draws: where both chose the same first action, the same transition
    same = runs["model_free"].first_actions == runs["model_based"].first_actions
    np.testing.assert_array_equal(runs["model_free"].common[same], runs["model_based"].common[same])
    assert 0.75 < runs["model_based"].common.mean() < 0.85


# --- RL^2 ----------------------------------------------------------------------------------------


def test_the_rl2_sampler_runs_the_bandits_on_the_same_draws():
    torch = pytest.importorskip("torch")
    from bmaml_robot.meta.sampler import task_seeds
    from bmaml_robot.rl2 import RL2Policy, TrialSampler

    sampler = TrialSampler("BanditCorrelated", 4, episodes_per_trial=1, horizon=20)
    try:
        assert sampler.discrete and isinstance(sampler.env, BatchedDiscreteEnv)
        tasks = DISCRETE_FAMILIES["BanditCorrelated"].sample_tasks(4, np.random.default_rng(0))
        sampler.set_tasks(tasks)
        policy = RL2Policy(sampler.obs_dim, sampler.act_dim, discrete=True, hidden_size=16, seed=0)
        trials = sampler.sample(policy, seed=3)
        again = sampler.sample(policy, seed=3)
    finally:
        sampler.close()
    for name, a, b in zip(trials._fields, trials, again, strict=True):
        assert torch.equal(a, b), name
    actions = trials.actions[..., 0]
    assert trials.actions.shape == (20, 4, 1) and set(actions.unique().tolist()) <= {0.0, 1.0}
    assert set(trials.rewards.unique().tolist()) <= {0.0, 1.0} and bool((trials.mask == 1).all())
    # The trial's rewards are the env's draws on the task's stream: a reference agent reset there meets them.
    env = make_env("BanditCorrelated", tasks, max_episode_steps=20)
    env.reset_streams(task_seeds(3, 0, 4)[0], np.zeros(4, np.uint64))
    replay = np.stack([env.step(actions[t].numpy().astype(np.int64))[1] for t in range(20)])
    np.testing.assert_array_equal(replay, trials.rewards.numpy())
