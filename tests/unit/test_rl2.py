"""RL^2 foundations (issue 15, in progress): the trial sampler's inputs and determinism, the
policy's replay of a trial, and PPO's update."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bmaml_robot.envs.families import get_family
from bmaml_robot.rl2 import PPOLearner, RL2Policy, TrialSampler

FAMILY, HORIZON, EPISODES = "HalfCheetahVel", 12, 2


def tasks(n: int) -> list[dict]:
    return get_family(FAMILY).sample_tasks(n, np.random.default_rng(0))


@pytest.fixture()
def sampler():
    made = TrialSampler(FAMILY, 4, EPISODES, HORIZON)
    made.set_tasks(tasks(4))
    yield made
    made.close()


def policy_for(sampler: TrialSampler, recurrence: str = "all") -> RL2Policy:
    return RL2Policy(sampler.obs_dim, sampler.act_dim, kind="gru", hidden_size=16, recurrence=recurrence, seed=0)


def test_inputs_carry_the_previous_action_reward_and_episode_start(sampler: TrialSampler) -> None:
    policy = policy_for(sampler)
    trials = sampler.sample(policy, seed=5)
    L, obs, act = EPISODES * HORIZON, sampler.obs_dim, sampler.act_dim
    assert trials.inputs.shape == (L, 4, obs + act + 2) and bool((trials.mask == 1).all())
    starts = trials.inputs[:, :, -1]
    expected = torch.zeros(L, 4)
    expected[0] = expected[HORIZON] = 1  # the trial's start and the second episode's first step
    assert torch.equal(starts, expected)
    assert torch.equal(trials.inputs[1:, :, -2], trials.rewards[:-1])
    previous = (trials.actions[:-1] / sampler.action_scale).clamp(-1, 1)
    assert torch.equal(trials.inputs[1:, :, obs : obs + act], previous)
    assert torch.equal(trials.inputs[0, :, obs:], torch.tensor([0.0] * act + [0.0, 1.0]).expand(4, -1))
    assert torch.equal(trials.episode[:, 0], torch.arange(L) // HORIZON)
    assert sampler.env_steps == 4 * L


def test_a_trial_depends_only_on_its_task_its_index_and_the_seed(sampler: TrialSampler) -> None:
    policy = policy_for(sampler)
    full = sampler.sample(policy, seed=9)
    part = TrialSampler(FAMILY, 2, EPISODES, HORIZON, num_threads=2)
    try:
        part.set_tasks(tasks(4)[1:3])
        sliced = part.sample(policy, seed=9, first_task=1)
    finally:
        part.close()
    for name, a, b in zip(full._fields, full, sliced):
        assert torch.equal(a[:, 1:3], b), name
    assert not torch.equal(sampler.sample(policy, seed=10).rewards, full.rewards)


def test_training_replays_the_trial_with_the_sampled_log_probs(sampler: TrialSampler) -> None:
    policy = policy_for(sampler)
    trials = sampler.sample(policy, seed=1)
    out, log_std, values = policy.evaluate(trials.inputs)
    replayed = policy.log_prob(out, log_std, trials.actions)
    torch.testing.assert_close(replayed, trials.log_probs, rtol=0, atol=1e-4)
    assert values.shape == trials.rewards.shape


def test_hidden_sequence_is_what_sequence_reads() -> None:
    policy = RL2Policy(3, 2, kind="lstm", hidden_size=8, seed=1)
    x = torch.randn(7, 5, policy.input_dim)
    mean, _ = policy.core.sequence(x)
    h = policy.core.hidden_sequence(x)
    assert torch.equal(torch.nn.functional.linear(h, policy.core.mean.weight, policy.core.mean.bias), mean)


@pytest.mark.parametrize("recurrence", ["all", "frozen"])
def test_ppo_updates_deterministically_and_frozen_weights_stay(sampler: TrialSampler, recurrence: str) -> None:
    results = []
    for _ in range(2):
        policy = policy_for(sampler, recurrence)
        before = {k: v.clone() for k, v in policy.state_dict().items()}
        learner = PPOLearner(policy, epochs=2, minibatches=2)
        figures = learner.update(sampler.sample(policy, seed=3), seed=4)
        assert all(np.isfinite(v) for v in figures.values()) and figures["approx_kl"] >= 0
        after = policy.state_dict()
        changed = {k for k in after if not torch.equal(after[k], before[k])}
        frozen = {"core.cell.weight_hh", "core.cell.bias_hh"} if recurrence == "frozen" else set()
        assert changed == set(after) - frozen  # every trained parameter moved (the value head too)
        results.append(after)
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def test_the_discrete_head_draws_categorical_actions() -> None:
    policy = RL2Policy(1, 3, discrete=True, hidden_size=8, seed=0)
    logits = torch.tensor([[0.0, 1.0, 2.0]]).expand(20000, 3)
    actions = policy.act(logits, policy.core.log_std, torch.rand(20000, 3, generator=torch.Generator().manual_seed(0)))
    frequencies = torch.bincount(actions.squeeze(-1).long(), minlength=3) / 20000
    torch.testing.assert_close(frequencies, torch.softmax(logits[0], -1), atol=0.015, rtol=0)
    assert torch.equal(policy.previous_action_input(actions[:2], 1.0).sum(-1), torch.ones(2))
    assert not policy.core.log_std.requires_grad


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kind": "mlp"}, "policy: RL\\^2 needs a recurrent cell"),
    ({"recurrence": "outer"}, "recurrence: RL\\^2 takes one of"),
])
def test_bad_policy_arguments_name_themselves(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RL2Policy(3, 2, **kwargs)


def test_ppo_target_kl_stops_the_update_before_a_step_that_goes_too_far(sampler: TrialSampler) -> None:
    """``target_kl``: with a tiny limit the second minibatch (the policy has moved after the first)
    is refused, so only the first epoch's first step runs and the parameters move less; 0 runs
    every epoch and reports what it reported before (no ``ppo_epochs_run``)."""
    trials = sampler.sample(policy_for(sampler), seed=1)
    moved = {}
    for target in (0.0, 1e-9):
        policy = policy_for(sampler)
        before = [p.detach().clone() for p in policy.trainable_parameters()]
        figures = PPOLearner(policy, learning_rate=0.01, epochs=4, minibatches=2, target_kl=target).update(trials, 0)
        moved[target] = sum(float((p - b).abs().sum()) for p, b in zip(policy.trainable_parameters(), before))
        assert ("ppo_epochs_run" in figures) == (target > 0)
    assert figures["ppo_epochs_run"] == 1.0
    assert 0 < moved[1e-9] < moved[0.0]
