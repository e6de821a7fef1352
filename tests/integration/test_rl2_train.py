"""``bmaml-train --algorithm rl2``: the config's RL^2 keys, a run's files, exact resume (the
optimiser's state travels in the checkpoint), and the errors of settings RL^2 does not take."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from bmaml_robot.checkpoint import load_checkpoint, read_jsonl, save_checkpoint
from bmaml_robot.config import TrainConfig, from_dict, run_config
from bmaml_robot.rl2 import RL2Policy
from bmaml_robot.train import train


def rl2(**overrides: Any) -> TrainConfig:
    values = dict(algorithm="rl2", family="HalfCheetahVel", policy="gru", recurrence="all", hidden_size=8,
                  num_tasks=3, episodes_per_trial=2, horizon=6, num_iterations=3, num_threads=1, ppo_epochs=2,
                  ppo_minibatches=2, gae_lambda=0.95)
    return TrainConfig(**{**values, **overrides})


def without_time(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in m.items() if not k.endswith("time_s")} for m in metrics]


@pytest.mark.parametrize("family", ["HalfCheetahVel", "BanditCorrelated"])
def test_a_run_records_per_episode_returns_and_its_optimiser(tmp_path: Path, family: str) -> None:
    config = rl2(family=family)
    result = train(config, tmp_path / "run")
    assert isinstance(result.policy, RL2Policy) and result.policy.discrete == (family == "BanditCorrelated")
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [m["iteration"] for m in metrics] == [0, 1, 2]
    for m in metrics:
        assert m["env_steps"] == 3 * 2 * 6  # no robot falls at 6 steps
        assert m["return_before"] == m["return_episode0"] and m["return_after"] == m["return_episode1"]
        assert {"policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"} <= set(m)
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert checkpoint["config"]["algorithm"] == "rl2" and checkpoint["learner"]["optimizer"]["state"]  # Adam's moments
    policy = RL2Policy(result.policy.obs_dim, result.policy.act_dim, discrete=result.policy.discrete,
                       hidden_size=8)
    policy.load_state_dict(load_checkpoint(tmp_path / "run" / "policy.pt")["policy"])
    assert all(torch.equal(a, b) for a, b in zip(policy.state_dict().values(), result.policy.state_dict().values()))
    # Training changed the weights (the value head starts at zero).
    assert float(policy.value.weight.detach().abs().sum()) > 0


def test_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    whole = train(rl2(num_iterations=4), tmp_path / "whole")
    train(rl2(num_iterations=2), tmp_path / "part")
    resumed = train(rl2(num_iterations=4), tmp_path / "part", resume=True)
    assert without_time(read_jsonl(tmp_path / "part" / "metrics.jsonl")) == without_time(whole.metrics)
    for a, b in zip(whole.policy.state_dict().values(), resumed.policy.state_dict().values()):
        assert torch.equal(a, b)


def test_resume_refuses_a_checkpoint_without_the_optimiser(tmp_path: Path) -> None:
    train(rl2(num_iterations=2), tmp_path / "run")
    path = tmp_path / "run" / "checkpoint.pt"
    state = load_checkpoint(path)
    del state["learner"]
    save_checkpoint(path, state)
    with pytest.raises(ValueError, match=r"checkpoint.pt: missing keys \['learner'\]"):
        train(rl2(num_iterations=4), tmp_path / "run", resume=True)


def test_a_run_made_before_rl2_loads_as_maml() -> None:
    values = TrainConfig().resolved().to_dict()
    for key in ("algorithm", "episodes_per_trial", "learning_rate", "ppo_epochs", "ppo_minibatches", "ppo_clip",
                "value_coef", "entropy_coef", "max_grad_norm"):
        del values[key]
    assert run_config(values, "old run") == TrainConfig().resolved()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"algorithm": "ppo"}, r"algorithm: expected one of \['maml', 'rl2'\], got 'ppo'"),
        ({"policy": "mlp"}, r"policy: algorithm rl2 .* needs one of \['rnn', 'gru', 'lstm'\] \(e.g. --policy gru\), "
                            r"got 'mlp'"),
        ({"recurrence": "outer"}, r"recurrence: expected one of \['frozen', 'all'\], got 'outer'"),
        ({"episodes_per_trial": 0}, r"episodes_per_trial: expected a value >= 1, got 0"),
        ({"ppo_clip": 0.0}, r"ppo_clip: expected a value in \(0, inf\)|ppo_clip: expected a value > 0"),
        ({"entropy_coef": -0.1}, r"entropy_coef: expected a value"),
        ({"learning_rate": float("nan")}, r"learning_rate: expected a finite number"),
        ({"family": "Bandit"}, r"family: expected one of \[.*'BanditCorrelated'.*\], got 'Bandit'"),
    ],
)
def test_bad_rl2_settings_name_the_key(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        from_dict({**rl2().to_dict(), **overrides})


def test_discrete_tasks_need_rl2() -> None:
    with pytest.raises(ValueError, match=r"family: expected one of \[.*\], got 'BanditCorrelated'"):
        TrainConfig(family="BanditCorrelated")


def test_evaluation_of_discrete_tasks_brings_the_reference_agents(tmp_path: Path) -> None:
    from bmaml_robot.evaluate import evaluate, format_table

    train(rl2(family="TwoStep", horizon=2, episodes_per_trial=20, num_iterations=1), tmp_path / "two-step")
    result = evaluate(tmp_path / "two-step", num_tasks=4, episodes=2, out=tmp_path / "eval")
    assert (tmp_path / "eval" / "stay.png").stat().st_size > 10_000  # the stay-probability plot
    assert result.episode_returns.shape == (20, 4, 2) and result.settings["algorithm"] == "rl2"
    stays = result.settings["two_step"]
    assert set(stays) == {"episodes", "rl2", "model_free", "model_based"} and stays["episodes"] == 20
    for name in ("rl2", "model_free", "model_based"):
        assert 0.0 <= stays[name]["reward_per_episode"] <= 1.0
    assert "interaction" in format_table(result)

    train(rl2(family="BanditIndependent", horizon=10, episodes_per_trial=2, num_iterations=1), tmp_path / "bandit")
    result = evaluate(tmp_path / "bandit", num_tasks=4, episodes=2, write=False)
    bandit = result.settings["bandit"]
    assert bandit["pulls"] == 20 and bandit["trials"] == 8
    assert bandit["oracle"]["expected_regret"] == 0.0
    # The policy's summed rewards are its episodes' returns: the comparison reads the same trials.
    assert abs(bandit["rl2"]["cumulative_reward"] - result.episode_returns.sum(axis=0).mean()) < 1e-9
    with pytest.raises(ValueError, match="fast_lr: an RL\\^2 run adapts in its activations"):
        evaluate(tmp_path / "bandit", num_tasks=2, episodes=1, fast_lr=0.1, write=False)


def test_a_run_does_not_depend_on_the_thread_count(tmp_path: Path) -> None:
    one = train(rl2(num_iterations=2, num_threads=1), tmp_path / "one")
    two = train(rl2(num_iterations=2, num_threads=2), tmp_path / "two")
    assert without_time(one.metrics) == without_time(two.metrics)
    for a, b in zip(one.policy.state_dict().values(), two.policy.state_dict().values()):
        assert torch.equal(a, b)


def test_evaluation_during_training_logs_each_episode_and_changes_nothing_else(tmp_path: Path) -> None:
    plain = train(rl2(num_iterations=2), tmp_path / "plain")
    evaluated = train(rl2(num_iterations=2, eval_every=1, eval_tasks=3, eval_episodes=2), tmp_path / "evaluated")
    for a, b in zip(plain.metrics, evaluated.metrics):
        extra = {k: v for k, v in b.items() if k not in a}
        assert set(extra) == {"eval_return_episode0", "eval_return_episode1"}
        assert {k: v for k, v in b.items() if k in a and not k.endswith("time_s")} == {
            k: v for k, v in a.items() if not k.endswith("time_s")}
    # The same held-out trials as bmaml-eval's (its tasks and noise, evaluation seed 0).
    from bmaml_robot.evaluate import evaluate

    result = evaluate(tmp_path / "evaluated", num_tasks=3, episodes=2, write=False)
    assert abs(result.summary[1]["mean"] - evaluated.metrics[-1]["eval_return_episode1"]) < 1e-4


def test_trials_are_refused_for_a_maml_run(tmp_path: Path) -> None:
    from bmaml_robot.evaluate import evaluate

    train(TrainConfig(family="Navigation2D", num_tasks=2, episodes_per_task=2, horizon=5, num_iterations=1,
                      num_threads=1, hidden_sizes=(8,)), tmp_path / "maml")
    with pytest.raises(ValueError, match=r"episodes_per_trial: only RL\^2 runs have trials; .* is a MAML run"):
        evaluate(tmp_path / "maml", num_tasks=2, episodes=1, episodes_per_trial=3, write=False)
