"""Policies: shapes, per-task batching, real recurrence, recurrence modes, double backward, init."""

from __future__ import annotations

import copy

import pytest
import torch

from bmaml_robot.policies import (
    POLICY_KINDS,
    RECURRENCE_MODES,
    GaussianMLPPolicy,
    Policy,
    RecurrentGaussianPolicy,
    make_policy,
)

RECURRENT_KINDS = ("rnn", "gru", "lstm")
OBS_DIM, ACT_DIM, HIDDEN = 5, 3, 16
T, K, B = 7, 3, 2


def small_policy(kind: str, recurrence: str = "frozen", seed: int = 0) -> Policy:
    return make_policy(kind, OBS_DIM, ACT_DIM, hidden_sizes=(8, 8), hidden_size=HIDDEN, recurrence=recurrence, seed=seed)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def per_task_params(policy: Policy, num_tasks: int, scale: float = 0.1, seed: int = 1) -> dict[str, torch.Tensor]:
    """Contiguous, task-specific parameters: the meta-parameters plus different noise per task."""
    g = torch.Generator().manual_seed(seed)
    return {
        name: p + scale * torch.randn(p.shape, generator=g)
        for name, p in policy.batched_params(num_tasks).items()
    }


def state_h(state):
    return state[0] if isinstance(state, tuple) else state


class SequenceOf(torch.nn.Module):
    """Runs ``policy.sequence`` with the module's own parameters, for ``functional_call``."""

    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, obs: torch.Tensor):
        return self.policy.sequence(obs)


# ----------------------------------------------------------------------------- construction
def test_constants() -> None:
    assert POLICY_KINDS == ("mlp", "rnn", "gru", "lstm")
    assert RECURRENCE_MODES == ("frozen", "outer", "all")


@pytest.mark.parametrize("kind", POLICY_KINDS)
def test_attributes_and_parameter_names(kind: str) -> None:
    policy = small_policy(kind)
    assert isinstance(policy, Policy) and isinstance(policy, torch.nn.Module)
    assert (policy.obs_dim, policy.act_dim, policy.kind) == (OBS_DIM, ACT_DIM, kind)
    names = [n for n, _ in policy.named_parameters()]
    assert all(p.dtype == torch.float32 for p in policy.parameters())
    if kind == "mlp":
        assert isinstance(policy, GaussianMLPPolicy)
        assert policy.recurrence is None and not policy.is_recurrent and policy.hidden_shape == ()
        assert policy.initial_state((K, B)) is None
        assert policy.recurrent_names() == []
        assert sorted(names) == sorted(
            ["hidden.0.weight", "hidden.0.bias", "hidden.1.weight", "hidden.1.bias", "mean.weight", "mean.bias", "log_std"]
        )
    else:
        assert isinstance(policy, RecurrentGaussianPolicy)
        assert policy.recurrence == "frozen" and policy.is_recurrent and policy.hidden_shape == (1, HIDDEN)
        assert policy.recurrent_names() == ["cell.weight_hh", "cell.bias_hh"]
        assert sorted(names) == sorted(
            ["cell.weight_ih", "cell.bias_ih", "cell.weight_hh", "cell.bias_hh", "mean.weight", "mean.bias", "log_std"]
        )
        gates = {"rnn": 1, "gru": 3, "lstm": 4}[kind]
        assert policy.cell.weight_ih.shape == (gates * HIDDEN, OBS_DIM)
        assert policy.cell.weight_hh.shape == (gates * HIDDEN, HIDDEN)


def test_init_log_std() -> None:
    for kind in POLICY_KINDS:
        policy = make_policy(kind, OBS_DIM, ACT_DIM, init_log_std=-0.5, seed=0)
        assert torch.equal(policy.log_std.detach(), torch.full((ACT_DIM,), -0.5))


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("kind", POLICY_KINDS)
@pytest.mark.parametrize("batched", [False, True], ids=["shared", "per_task"])
def test_shapes(kind: str, batched: bool) -> None:
    policy = small_policy(kind)
    params = per_task_params(policy, K) if batched else None
    state = policy.initial_state((K, B))
    if kind == "mlp":
        assert state is None
    else:
        for part in state if kind == "lstm" else (state,):
            assert part.shape == (K, B, HIDDEN) and part.dtype == torch.float32 and not part.any()
        assert isinstance(state, tuple) == (kind == "lstm")

    mean, log_std, next_state = policy.step(randn(K, B, OBS_DIM), state, params)
    assert mean.shape == (K, B, ACT_DIM) and mean.dtype == torch.float32
    assert torch.broadcast_shapes(log_std.shape, mean.shape) == mean.shape
    if kind != "mlp":
        assert state_h(next_state).shape == (K, B, HIDDEN)

    mean, log_std = policy.sequence(randn(T, K, B, OBS_DIM), params)
    assert mean.shape == (T, K, B, ACT_DIM)
    assert torch.broadcast_shapes(log_std.shape, mean.shape) == mean.shape
    dist = policy.distribution(mean, log_std)
    assert dist.batch_shape == (T, K, B) and dist.event_shape == (ACT_DIM,)


@pytest.mark.parametrize("kind", POLICY_KINDS)
def test_distribution_is_diagonal_gaussian(kind: str) -> None:
    policy = make_policy(kind, OBS_DIM, ACT_DIM, init_log_std=-0.7, seed=0)
    mean, log_std = policy.sequence(randn(T, K, B, OBS_DIM), per_task_params(policy, K))
    action = randn(T, K, B, ACT_DIM, seed=3)
    std = log_std.exp()
    expected = (-0.5 * ((action - mean) / std) ** 2 - std.log() - 0.5 * torch.log(torch.tensor(2 * torch.pi))).sum(-1)
    torch.testing.assert_close(policy.distribution(mean, log_std).log_prob(action), expected)


# ----------------------------------------------------------------------------- sequence == loop of step
@pytest.mark.parametrize("kind", POLICY_KINDS)
@pytest.mark.parametrize("batched", [False, True], ids=["shared", "per_task"])
def test_sequence_equals_loop_of_step(kind: str, batched: bool) -> None:
    policy = small_policy(kind, recurrence="all")
    params = per_task_params(policy, K) if batched else None
    obs = randn(T, K, B, OBS_DIM)
    seq_mean, seq_log_std = policy.sequence(obs, params)
    state = policy.initial_state((K, B))
    for t in range(T):
        mean, log_std, state = policy.step(obs[t], state, params)
        torch.testing.assert_close(seq_mean[t], mean, atol=1e-6, rtol=0)
        torch.testing.assert_close(seq_log_std.expand_as(seq_mean)[t], log_std.expand_as(mean), atol=0, rtol=0)


@pytest.mark.parametrize("kind", POLICY_KINDS)
def test_forward_is_step_for_functional_call(kind: str) -> None:
    policy = small_policy(kind)
    obs = randn(K, B, OBS_DIM)
    state = policy.initial_state((K, B))
    task = {name: p[1] for name, p in per_task_params(policy, K).items()}
    mean, log_std, _ = torch.func.functional_call(policy, task, (obs, state))
    with torch.no_grad():
        twin = copy.deepcopy(policy)
        for name, value in task.items():
            twin.get_parameter(name).copy_(value)
    expected_mean, expected_log_std, _ = twin.step(obs, state)
    torch.testing.assert_close(mean, expected_mean, atol=0, rtol=0)
    torch.testing.assert_close(log_std, expected_log_std, atol=0, rtol=0)


# ----------------------------------------------------------------------------- cells vs torch.nn
@pytest.mark.parametrize("kind", RECURRENT_KINDS)
def test_cell_matches_torch_cell(kind: str) -> None:
    policy = small_policy(kind, recurrence="all")
    with torch.no_grad():  # non-zero biases everywhere, so every bias path is compared
        for p in policy.parameters():
            p.add_(0.2 * randn(*p.shape, seed=p.numel()))
    cell_type = {"rnn": torch.nn.RNNCell, "gru": torch.nn.GRUCell, "lstm": torch.nn.LSTMCell}[kind]
    reference = cell_type(OBS_DIM, HIDDEN)
    reference.load_state_dict({n.removeprefix("cell."): p for n, p in policy.state_dict().items() if n.startswith("cell.")})

    obs = randn(T, K, B, OBS_DIM)
    state = policy.initial_state((K, B))
    ref_state = None
    seq_mean, _ = policy.sequence(obs)
    for t in range(T):
        mean, _, state = policy.step(obs[t], state)
        ref_state = reference(obs[t].reshape(K * B, OBS_DIM), ref_state)
        ref_parts = ref_state if kind == "lstm" else (ref_state,)
        parts = state if kind == "lstm" else (state,)
        for part, ref_part in zip(parts, ref_parts):
            torch.testing.assert_close(part.reshape(K * B, HIDDEN), ref_part, atol=1e-6, rtol=0)
        ref_mean = torch.nn.functional.linear(ref_parts[0], policy.mean.weight, policy.mean.bias)
        torch.testing.assert_close(mean.reshape(K * B, ACT_DIM), ref_mean, atol=1e-6, rtol=0)
        torch.testing.assert_close(seq_mean[t].reshape(K * B, ACT_DIM), ref_mean, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- per-task batching
@pytest.mark.parametrize("kind", POLICY_KINDS)
def test_batched_params_equal_separate_forwards(kind: str) -> None:
    policy = small_policy(kind, recurrence="all")
    params = per_task_params(policy, K, scale=0.3)
    obs = randn(T, K, B, OBS_DIM)
    mean, log_std = policy.sequence(obs, params)
    step_mean, step_log_std, _ = policy.step(obs[0], policy.initial_state((K, B)), params)

    wrapper = SequenceOf(policy)
    outputs = []
    for k in range(K):
        task = {f"policy.{name}": value[k] for name, value in params.items()}
        task_mean, task_log_std = torch.func.functional_call(wrapper, task, (obs[:, k],))
        torch.testing.assert_close(mean[:, k], task_mean, atol=1e-6, rtol=0)
        torch.testing.assert_close(log_std.expand_as(mean)[:, k], task_log_std.expand_as(task_mean), atol=0, rtol=0)
        task_step = {name: value[k] for name, value in params.items()}
        one_mean, one_log_std, _ = torch.func.functional_call(policy, task_step, (obs[0, k], policy.initial_state((B,))))
        torch.testing.assert_close(step_mean[k], one_mean, atol=1e-6, rtol=0)
        torch.testing.assert_close(step_log_std.expand_as(step_mean)[k], one_log_std.expand_as(one_mean), atol=0, rtol=0)
        outputs.append(task_mean)
    # The tasks really differ, so the comparison above is not trivially true.
    assert not torch.allclose(outputs[0], outputs[1], atol=1e-3)


@pytest.mark.parametrize("kind", POLICY_KINDS)
def test_batched_params_are_expanded_views_of_the_meta_parameters(kind: str) -> None:
    policy = small_policy(kind, recurrence="all")
    batched = policy.batched_params(4)
    assert set(batched) == {n for n, _ in policy.named_parameters()}
    for name, p in policy.named_parameters():
        assert batched[name].shape == (4, *p.shape)
        assert batched[name].stride(0) == 0 and batched[name].data_ptr() == p.data_ptr()  # expand, not copy
    # With the expanded meta-parameters every task computes what the shared module computes.
    obs = randn(T, 4, B, OBS_DIM)
    torch.testing.assert_close(policy.sequence(obs, batched)[0], policy.sequence(obs)[0], atol=1e-6, rtol=0)
    # Gradients taken through the batched tensors reach the meta-parameters.
    policy.sequence(obs, batched)[0].square().sum().backward()
    for name, p in policy.named_parameters():
        if name != "log_std":
            assert p.grad is not None and p.grad.abs().sum() > 0, name


# ----------------------------------------------------------------------------- real recurrence
@pytest.mark.parametrize("kind", POLICY_KINDS)
@pytest.mark.parametrize("recurrence", ["frozen", "all"])
def test_earlier_observations_change_later_actions_only_if_recurrent(kind: str, recurrence: str) -> None:
    policy = small_policy(kind, recurrence=recurrence)
    obs = randn(T, K, B, OBS_DIM)
    perturbed = obs.clone()
    perturbed[1] += 1.0  # change only the observation at t = 1
    mean, _ = policy.sequence(obs)
    mean_p, _ = policy.sequence(perturbed)
    assert torch.equal(mean[0], mean_p[0])  # the past does not depend on the future
    later_change = (mean[2:] - mean_p[2:]).abs().amax()
    if kind == "mlp":
        assert later_change == 0
    else:
        assert later_change > 1e-4

    # The same through step: the state carries obs[t-1] into the action at t.
    state = policy.initial_state((K, B))
    _, _, state = policy.step(obs[0], state)
    carried, _, _ = policy.step(obs[1], state)
    fresh, _, _ = policy.step(obs[1], policy.initial_state((K, B)))
    assert torch.equal(carried, fresh) == (kind == "mlp")


@pytest.mark.parametrize("kind", POLICY_KINDS)
def test_gradient_flows_through_time(kind: str) -> None:
    policy = small_policy(kind, recurrence="frozen")
    obs = randn(T, K, B, OBS_DIM).requires_grad_(True)
    mean, _ = policy.sequence(obs, policy.batched_params(K))
    (grad,) = torch.autograd.grad(mean[T - 1].sum(), obs)
    first_step = grad[0].abs().amax()
    if kind == "mlp":
        assert first_step == 0
    else:
        assert first_step > 1e-6
    assert grad[T - 1].abs().amax() > 0


# ----------------------------------------------------------------------------- recurrence modes
@pytest.mark.parametrize("kind", POLICY_KINDS)
@pytest.mark.parametrize("recurrence", RECURRENCE_MODES)
def test_recurrence_mode_name_sets(kind: str, recurrence: str) -> None:
    policy = small_policy(kind, recurrence=recurrence)
    names = {n for n, _ in policy.named_parameters()}
    recurrent = set(policy.recurrent_names())
    requires_grad = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert set(policy.trainable_names()) == requires_grad
    if kind == "mlp":
        assert policy.recurrence is None
        assert set(policy.adaptable_names()) == set(policy.trainable_names()) == names
        return
    assert policy.recurrence == recurrence
    assert recurrent == {"cell.weight_hh", "cell.bias_hh"}
    expected_adaptable = names if recurrence == "all" else names - recurrent
    expected_trainable = names - recurrent if recurrence == "frozen" else names
    assert set(policy.adaptable_names()) == expected_adaptable
    assert set(policy.trainable_names()) == expected_trainable
    for name in recurrent:
        assert policy.get_parameter(name).requires_grad == (recurrence != "frozen")


@pytest.mark.parametrize("kind", RECURRENT_KINDS)
def test_frozen_recurrent_weights_stay_bit_identical(kind: str) -> None:
    policy = small_policy(kind, recurrence="frozen")
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    # Every parameter handed to the optimizer, with weight decay: frozen ones must still not move.
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2, weight_decay=0.1)
    obs = randn(T, K, B, OBS_DIM)
    for _ in range(2):
        # A MAML-style loss: one inner step on the adaptable names, then an outer loss.
        batched = policy.batched_params(K)
        adaptable = policy.adaptable_names()
        mean, log_std = policy.sequence(obs, batched)
        inner = mean.square().mean() + log_std.square().mean()
        grads = torch.autograd.grad(inner, [batched[n] for n in adaptable], create_graph=True)
        adapted = dict(batched)
        adapted.update({n: batched[n] - 0.1 * g for n, g in zip(adaptable, grads)})
        mean, log_std = policy.sequence(obs, adapted)
        optimizer.zero_grad()
        (mean - 1.0).square().mean().backward()
        optimizer.step()
    for name, p in policy.named_parameters():
        if name in policy.recurrent_names():
            assert p.grad is None, name
            assert torch.equal(p.detach(), before[name]), name
        elif name != "log_std":
            assert not torch.equal(p.detach(), before[name]), name


def test_outer_mode_never_adapts_recurrent_weights() -> None:
    policy = small_policy("gru", recurrence="outer")
    batched = policy.batched_params(K)
    assert not set(policy.recurrent_names()) & set(policy.adaptable_names())
    mean, _ = policy.sequence(randn(T, K, B, OBS_DIM), batched)
    # The recurrent weights do get meta-gradients (they are trained by the outer loop).
    grads = torch.autograd.grad(mean.square().sum(), [policy.cell.weight_hh, policy.cell.weight_ih])
    assert all(g.abs().sum() > 0 for g in grads)


def test_frozen_guard_refuses_thawed_weights() -> None:
    policy = small_policy("rnn", recurrence="frozen")
    policy.requires_grad_(True)  # a stray call that would unfreeze W_hh
    with pytest.raises(RuntimeError, match="frozen"):
        policy.trainable_names()


# ----------------------------------------------------------------------------- second order
@pytest.mark.parametrize("kind", POLICY_KINDS)
def test_double_backward(kind: str) -> None:
    policy = small_policy(kind, recurrence="frozen")
    obs = randn(T, K, B, OBS_DIM)
    actions = randn(T, K, B, ACT_DIM, seed=5)
    batched = policy.batched_params(K)
    adaptable = policy.adaptable_names()
    log_prob = policy.distribution(*policy.sequence(obs, batched)).log_prob(actions)
    grads = torch.autograd.grad(log_prob.mean(), [batched[n] for n in adaptable], create_graph=True)
    assert all(g.requires_grad for g in grads)
    grad_norm = sum(g.square().sum() for g in grads)
    trainable = [policy.get_parameter(n) for n in policy.trainable_names()]
    second = torch.autograd.grad(grad_norm, trainable)
    for name, g in zip(policy.trainable_names(), second):
        assert torch.isfinite(g).all() and g.abs().sum() > 0, name


@pytest.mark.parametrize("kind", POLICY_KINDS)
def test_second_order_gradient_matches_finite_differences(kind: str) -> None:
    # float64 copy of a tiny policy, so torch's numerical gradgradcheck is meaningful.
    policy = make_policy(kind, 2, 2, hidden_sizes=(3,), hidden_size=3, recurrence="all", seed=0).double()
    names = [n for n, _ in policy.named_parameters()]
    obs = randn(4, 2, 1, 2).double()
    actions = randn(4, 2, 1, 2, seed=1).double()
    start = [p.detach().expand(2, *p.shape).clone().requires_grad_(True) for p in policy.parameters()]

    def loss(*values: torch.Tensor) -> torch.Tensor:
        params = dict(zip(names, values))
        return policy.distribution(*policy.sequence(obs, params)).log_prob(actions).sum()

    assert torch.autograd.gradgradcheck(loss, start, atol=1e-5)


# ----------------------------------------------------------------------------- initialisation
@pytest.mark.parametrize("kind", POLICY_KINDS)
def test_seeded_init_is_deterministic_and_independent_of_global_rng(kind: str) -> None:
    torch.manual_seed(123)
    a = small_policy(kind, seed=7)
    torch.randn(100)  # move the global RNG
    b = small_policy(kind, seed=7)
    c = small_policy(kind, seed=8)
    state_a, state_b, state_c = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(state_a[n], state_b[n]) for n in state_a)
    assert not all(torch.equal(state_a[n], state_c[n]) for n in state_a)
    # A seeded construction leaves the global RNG where it was.
    torch.manual_seed(9)
    expected = torch.rand(3)
    torch.manual_seed(9)
    small_policy(kind, seed=7)
    assert torch.equal(torch.rand(3), expected)
    # Without a seed, initialisation follows the global RNG.
    torch.manual_seed(5)
    d = make_policy(kind, OBS_DIM, ACT_DIM, hidden_size=HIDDEN)
    torch.manual_seed(5)
    e = make_policy(kind, OBS_DIM, ACT_DIM, hidden_size=HIDDEN)
    assert all(torch.equal(x, y) for x, y in zip(d.parameters(), e.parameters()))


@pytest.mark.parametrize("kind", RECURRENT_KINDS)
def test_recurrent_weights_are_scaled_orthogonal_blocks(kind: str) -> None:
    policy = small_policy(kind)
    gain = 0.95 if kind == "rnn" else 1.0
    for block in policy.cell.weight_hh.detach().split(HIDDEN, dim=0):
        torch.testing.assert_close(block @ block.T, gain**2 * torch.eye(HIDDEN), atol=1e-5, rtol=0)
    assert not policy.cell.bias_hh.any()


def test_frozen_rnn_is_a_stable_fading_memory() -> None:
    # Echo-state property of the frozen RNN: under the same inputs, two different starting
    # states converge (the state is a function of recent inputs, not of where it started).
    policy = make_policy("rnn", OBS_DIM, ACT_DIM, hidden_size=64, seed=0)
    obs = randn(60, 1, 4, OBS_DIM)
    a = torch.zeros(1, 4, 64)
    b = torch.rand(1, 4, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    start_gap = (a - b).abs().amax()
    with torch.no_grad():
        for t in range(60):
            _, _, a = policy.step(obs[t], a)
            _, _, b = policy.step(obs[t], b)
    assert (a - b).abs().amax() < 1e-2 * start_gap
    assert a.abs().amax() < 1.0 and a.abs().mean() > 1e-2  # neither saturated nor dead


# ----------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(kind="transformer"), "kind"),
        (dict(kind="gru", recurrence="sometimes"), "recurrence"),
        (dict(kind="mlp", recurrence="sometimes"), "recurrence"),
        (dict(kind="mlp", obs_dim=0), "obs_dim"),
        (dict(kind="lstm", act_dim=-1), "act_dim"),
        (dict(kind="mlp", hidden_sizes=()), "hidden_sizes"),
        (dict(kind="mlp", hidden_sizes=(8, 0)), "hidden_sizes"),
        (dict(kind="rnn", hidden_size=0), "hidden_size"),
        (dict(kind="gru", init_log_std=float("nan")), "init_log_std"),
        (dict(kind="mlp", seed=1.5), "seed"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(kwargs: dict, name: str) -> None:
    arguments = dict(obs_dim=OBS_DIM, act_dim=ACT_DIM) | kwargs
    kind = arguments.pop("kind")
    with pytest.raises(ValueError, match=name) as error:
        make_policy(kind, **arguments)
    assert "expected" in str(error.value) and "got" in str(error.value)


def test_unknown_kind_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="'mlp', 'rnn', 'gru', 'lstm'"):
        make_policy("transformer", OBS_DIM, ACT_DIM)
    with pytest.raises(ValueError, match="'frozen', 'outer', 'all'"):
        make_policy("rnn", OBS_DIM, ACT_DIM, recurrence="sometimes")


@pytest.mark.parametrize("kind", POLICY_KINDS)
def test_bad_forward_inputs_raise_value_error(kind: str) -> None:
    policy = small_policy(kind)
    params = policy.batched_params(K)
    with pytest.raises(ValueError, match="obs"):
        policy.sequence(randn(T, K, B, OBS_DIM + 1), params)
    with pytest.raises(ValueError, match="obs"):
        policy.sequence(randn(T, K + 1, B, OBS_DIM), params)  # K does not match params
    with pytest.raises(ValueError, match="obs"):
        policy.sequence(randn(T, K, B, OBS_DIM).double())
    with pytest.raises(ValueError, match="params"):
        policy.sequence(randn(T, K, B, OBS_DIM), {n: p for n, p in params.items() if n != "log_std"})
    with pytest.raises(ValueError, match="params"):
        policy.sequence(randn(T, K, B, OBS_DIM), {n: p[0] for n, p in params.items()})  # no task dim
    if kind != "mlp":
        with pytest.raises(ValueError, match="state"):
            policy.step(randn(K, B, OBS_DIM), torch.zeros(K, B, HIDDEN + 1), params)
