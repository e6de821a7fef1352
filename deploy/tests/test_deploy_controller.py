"""The deploy runtime's controller: parity with a numpy reference of the same graph, the file
contract (metadata, graph inputs/outputs), clear errors for bad files and bad observations, safe
actions for non-finite values, actions inside the bounds, and a runtime that needs no torch.

Policy files are built here with ``onnx.helper`` (``bmaml_robot_deploy.testing``), so these tests
do not depend on the exporter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import onnx
import pytest

from bmaml_robot_deploy import Controller, PolicyMetadata
from bmaml_robot_deploy.metadata import KEY_OBS_DIM, KEY_ROBOT, KEY_TASK, OPTIONAL_KEYS, REQUIRED_KEYS
from bmaml_robot_deploy.testing import ReferencePolicy, save_model, toy_metadata, toy_policy

DEPLOY_DIR = Path(__file__).resolve().parents[1]  # deploy/
KINDS = ["mlp", "rnn", "gru", "lstm"]


def write(tmp_path: Path, name: str, kind: str = "mlp", **kwargs) -> tuple[str, ReferencePolicy]:
    model, reference = toy_policy(kind, **kwargs)
    return save_model(model, tmp_path / name), reference


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, ReferencePolicy]]:
    """One toy policy file per kind (obs 17, act 6, hidden 24), with its numpy reference."""
    tmp = tmp_path_factory.mktemp("policies")
    return {kind: write(tmp, f"{kind}.onnx", kind, hidden_size=24, seed=3) for kind in KINDS}


# --- parity with the numpy reference ------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_actions_and_state_match_the_numpy_reference(files, kind):
    """200 closed-loop-like steps with the state fed back, a reset in the middle."""
    path, reference = files[kind]
    controller = Controller(path)
    rng = np.random.default_rng(0)
    state = reference.initial_state(1)
    for t in range(200):
        if t == 120:
            controller.reset()
            state = reference.initial_state(1)
        obs = rng.normal(size=17) * 2
        action = controller.act(obs)
        expected, state = reference.step(obs[None], state)
        assert action.dtype == np.float32 and action.shape == (6,)
        np.testing.assert_allclose(action, expected[0], atol=1e-5, rtol=0)
        for got, want in zip(controller.state, state):
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert controller.steps == 200 and controller.nonfinite_count == 0


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_a_batch_matches_the_reference_row_by_row(files, kind):
    path, reference = files[kind]
    controller = Controller(path, batch_size=3)
    rng = np.random.default_rng(1)
    state = reference.initial_state(3)
    for _ in range(30):
        obs = rng.normal(size=(3, 17)).astype(np.float32)
        action = controller.act(obs)
        expected, state = reference.step(obs, state)
        assert action.shape == (3, 6)
        np.testing.assert_allclose(action, expected, atol=1e-5, rtol=0)


def test_the_same_inputs_give_bitwise_the_same_actions(files):
    path, _ = files["gru"]
    obs = np.random.default_rng(2).normal(size=(50, 17))
    first, second = Controller(path), Controller(path)
    a = np.stack([first.act(o) for o in obs])
    b = np.stack([second.act(o) for o in obs])
    first.reset()
    c = np.stack([first.act(o) for o in obs])
    assert np.array_equal(a, b) and np.array_equal(a, c)


def test_observation_dtypes_and_containers(files):
    path, reference = files["mlp"]
    controller = Controller(path)
    obs = np.arange(17) - 8
    expected = reference.step(obs[None].astype(np.float64), ())[0][0]
    for version in (obs, obs.astype(np.float64), obs.astype(np.float32), obs.tolist(), obs[None]):
        action = controller.act(version)
        np.testing.assert_allclose(np.reshape(action, -1), expected, atol=1e-5)
    assert controller.act(obs[None]).shape == (1, 6)


def test_out_receives_the_action_without_allocation(files):
    path, _ = files["gru"]
    controller, twin = Controller(path), Controller(path)
    out = np.empty(6, np.float32)
    obs = np.linspace(-1, 1, 17)
    assert controller.act(obs, out=out) is out
    assert np.array_equal(out, twin.act(obs))
    with pytest.raises(ValueError, match=r"out: expected a float32 array of shape \[6\], got float64 \[6\]"):
        controller.act(obs, out=np.empty(6))


# --- the file contract --------------------------------------------------------------------------


def test_metadata_round_trips_and_is_read_from_path_model_and_session(files):
    meta = toy_metadata("gru", 17, 6, 24)
    props = meta.to_props()
    assert list(props) == list(REQUIRED_KEYS)
    assert all(isinstance(v, str) for v in props.values())
    assert json.loads(props[KEY_TASK]) == {"direction": 1.0}
    assert PolicyMetadata.from_props(props) == meta
    path, _ = files["gru"]
    assert PolicyMetadata.from_onnx(path) == meta
    assert PolicyMetadata.from_onnx(Path(path)) == meta
    assert PolicyMetadata.from_onnx(onnx.load(path)) == meta
    controller = Controller(path)
    assert controller.metadata == meta
    assert meta.input_names == ("obs", "h_in") and meta.output_names == ("action", "h_out")
    assert toy_metadata("lstm", 17, 6).state_names == (("h_in", "h_out"), ("c_in", "c_out"))
    assert toy_metadata("mlp", 17, 6).hidden_shape == ()


def test_optional_provenance_and_horizon_keys_round_trip_and_old_files_still_load(tmp_path):
    """Horizon, git commit, provenance and training config are optional keys: written after the
    required ones when set, read back as written, and None in a file that lacks them."""
    origin = {"package_version": "0.1.0", "git_commit": "3e172f4" * 5 + "abcd", "git_dirty": False, "torch": "2.13.0"}
    config = {"family": "HalfCheetahDir", "policy": "gru", "recurrence": "frozen", "horizon": 100, "hidden_sizes": [64]}
    physics = {"actuator_gear[bthigh]": 120.0, "actuator_gear[fshin]": 0.0}  # a crippled cheetah's
    meta = toy_metadata("gru", 17, 6, 24, horizon=100, git_commit=origin["git_commit"], provenance=origin,
                        train_config=config, action_scale=10.0, source_run="halfcheetah-dir-seed0", physics=physics)
    props = meta.to_props()
    assert list(props) == [*REQUIRED_KEYS, *OPTIONAL_KEYS]
    assert json.loads(props["bmaml.physics"]) == physics and list(json.loads(props["bmaml.physics"])) == list(physics)
    assert props["bmaml.horizon"] == "100" and props["bmaml.git_commit"] == origin["git_commit"]
    assert json.loads(props["bmaml.provenance"]) == origin and json.loads(props["bmaml.train_config"]) == config
    path, _ = write(tmp_path, "new.onnx", "gru", hidden_size=24, metadata=meta)
    assert PolicyMetadata.from_onnx(path) == meta == Controller(path).metadata
    # A file exported before these keys existed (only the required ones) loads; the fields are None.
    old = PolicyMetadata.from_props(toy_metadata("gru", 17, 6, 24).to_props())
    assert (old.horizon, old.git_commit, old.provenance, old.train_config, old.action_scale, old.physics) == (None,) * 6
    # Keys this runtime does not know are ignored.
    assert PolicyMetadata.from_props({**props, "bmaml.future_key": "x", "other": "y"}) == meta


def test_session_options_are_chosen_for_latency(files):
    options = Controller(files["mlp"][0])._session.get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert str(options.execution_mode).endswith("ORT_SEQUENTIAL")
    assert str(options.graph_optimization_level).endswith("ORT_ENABLE_ALL")


def test_a_missing_file(tmp_path):
    path = tmp_path / "nowhere.onnx"
    with pytest.raises(ValueError, match=rf"{path}: no such policy file"):
        Controller(path)


@pytest.mark.parametrize("content", [b"", b"not an onnx model at all", bytes(range(256)) * 8, "truncated"])
def test_a_corrupt_file(tmp_path, files, content):
    path = tmp_path / "corrupt.onnx"
    if content == "truncated":
        content = Path(files["gru"][0]).read_bytes()[:300]
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"{path}: not a loadable ONNX model"):
        Controller(path)


def test_a_directory_is_not_a_policy_file(tmp_path):
    with pytest.raises(ValueError, match=rf"{tmp_path}: expected an ONNX policy file"):
        Controller(tmp_path)


def test_missing_metadata_keys_are_named(tmp_path):
    props = toy_metadata("mlp", 17, 6).to_props()
    del props[KEY_ROBOT], props[KEY_OBS_DIM]
    path, _ = write(tmp_path, "incomplete.onnx", props=props)
    with pytest.raises(ValueError) as error:
        Controller(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "missing metadata keys" in message
    assert "'bmaml.robot'" in message and "'bmaml.obs_dim'" in message and "bmaml.task" not in message


def test_a_model_without_any_metadata(tmp_path):
    path, _ = write(tmp_path, "bare.onnx", props={})
    with pytest.raises(ValueError, match=r"not a bmaml policy file.*missing metadata keys \['bmaml.format_version'"):
        Controller(path)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("bmaml.obs_dim", "seventeen", r"metadata bmaml.obs_dim: expected int, got 'seventeen'"),
        ("bmaml.task", "{direction: 1", r"metadata bmaml.task: expected json"),
        ("bmaml.action_low", "[-1, -1]", r"metadata bmaml.action_low: expected 6 numbers \(act_dim\), got 2"),
        ("bmaml.action_high", "[1, 1, 1, 1, 1, NaN]", r"metadata bmaml.action_high: expected a finite number"),
        ("bmaml.control_dt", "0", r"metadata bmaml.control_dt: expected seconds in \[1e-06, 3600\], got 0.0"),
        # Positive but absurd (a denormal; three thousand years per step): used to be accepted.
        ("bmaml.control_dt", "1e-320", r"metadata bmaml.control_dt: expected seconds in \[1e-06, 3600\], got 1e-320"),
        ("bmaml.control_dt", "1e11", r"metadata bmaml.control_dt: expected seconds in \[1e-06, 3600\], got 100000000000.0"),
        ("bmaml.control_dt", "3600.5", r"metadata bmaml.control_dt: expected seconds in \[1e-06, 3600\]"),
        ("bmaml.policy_kind", "transformer", r"metadata bmaml.policy_kind: expected one of"),
        ("bmaml.recurrence", "frozen", r"metadata bmaml.recurrence: an mlp policy has recurrence 'none'"),
        ("bmaml.format_version", "3", r"metadata bmaml.format_version is '3'; this runtime reads formats \['1', '2'\]"),
        ("bmaml.horizon", "0", r"metadata bmaml.horizon: expected an integer >= 1, got 0"),
        ("bmaml.horizon", "100.5", r"metadata bmaml.horizon: expected int, got '100.5'"),
        ("bmaml.git_commit", "/home/me/bmaml", r"metadata bmaml.git_commit: expected a commit hash \(7 to 64 hex digits\)"),
        ("bmaml.provenance", "[1, 2]", r"metadata bmaml.provenance: expected a JSON object"),
        ("bmaml.train_config", "{horizon: 100", r"metadata bmaml.train_config: expected json"),
        ("bmaml.train_config", '{"x": NaN}', r"metadata bmaml.train_config: expected JSON-serialisable finite values"),
        ("bmaml.physics", '[0.0]', r"metadata bmaml.physics: expected a JSON object"),
        ("bmaml.physics", '{"density": "thick"}', r"metadata bmaml.physics: expected numbers by label, got \{'density': 'thick'\}"),
    ],
)
def test_malformed_metadata_values_are_named(tmp_path, key, value, message):
    props = toy_metadata("mlp", 17, 6).to_props()
    props[key] = value
    path, _ = write(tmp_path, "malformed.onnx", props=props)
    with pytest.raises(ValueError, match=rf"^{path}: {message}"):
        Controller(path)


def test_a_file_for_another_robot_or_family(files):
    path, _ = files["mlp"]
    with pytest.raises(ValueError, match=rf"{path}: this policy is for robot 'HalfCheetah', expected 'Ant'"):
        Controller(path, expected_robot="Ant")
    with pytest.raises(ValueError, match=r"is for task family 'HalfCheetahDir', expected 'HalfCheetahVel'"):
        Controller(path, expected_family="HalfCheetahVel")
    assert Controller(path, expected_robot="HalfCheetah", expected_family="HalfCheetahDir").obs_dim == 17


@pytest.mark.parametrize(
    ("kind", "overrides", "message"),
    [
        # The metadata says recurrent but the graph has no state input/output.
        ("mlp", dict(policy_kind="gru", recurrence="frozen", hidden_shape=[1, 24]), r"graph inputs \['obs'\] do not match"),
        # The metadata says mlp but the graph has a state.
        ("gru", dict(policy_kind="mlp", recurrence="none", hidden_shape=[]), r"unexpected \['h_in'\]"),
        ("lstm", dict(policy_kind="gru"), r"unexpected \['h_in', 'c_in'\]|unexpected \['c_in'\]"),
        ("mlp", dict(obs_dim=18), r"graph input 'obs': shape \['batch', 17\] does not match"),
        ("mlp", dict(act_dim=5, action_low=[-1] * 5, action_high=[1] * 5), r"graph output 'action': shape"),
        ("gru", dict(hidden_shape=[1, 32]), r"graph input 'h_in': shape \[1, 'batch', 24\] does not match"),
        ("gru", dict(hidden_shape=[2, 24]), r"graph input 'h_in': shape"),
    ],
)
def test_graph_inputs_and_outputs_must_match_the_metadata(tmp_path, kind, overrides, message):
    meta_fields = toy_metadata(kind, 17, 6, 24).__dict__ | overrides
    props = PolicyMetadata(**meta_fields).to_props()
    path, _ = write(tmp_path, "mismatch.onnx", kind, hidden_size=24, props=props)
    with pytest.raises(ValueError, match=message) as error:
        Controller(path)
    assert str(error.value).startswith(f"{path}: ")


# --- bad observations, safe actions, bounds -----------------------------------------------------


@pytest.mark.parametrize(
    ("obs", "shown"),
    [(np.zeros(16), r"\[16\]"), (np.zeros(18), r"\[18\]"), (np.zeros((2, 17)), r"\[2, 17\]"), (np.float64(1), r"\[\]")],
)
def test_observations_of_the_wrong_size(files, obs, shown):
    controller = Controller(files["gru"][0])
    with pytest.raises(ValueError, match=rf"obs: expected shape \[17\] or \[1, 17\], got {shown}"):
        controller.act(obs)
    batched = Controller(files["gru"][0], batch_size=4)
    with pytest.raises(ValueError, match=r"obs: expected shape \[4, 17\], got \[17\]"):
        batched.act(np.zeros(17))
    assert controller.steps == 0


@pytest.mark.parametrize(
    ("obs", "error"),
    [
        (np.zeros(17, bool), r"obs: expected real numbers \(float or integer dtype\), got dtype bool"),
        (np.zeros(17, complex), r"got dtype complex128"),
        (np.full(17, "1.0"), r"got dtype <U3"),
        ([[0.0] * 17, [0.0]], r"obs: expected an array of 17 numbers, got list"),
        (None, r"got dtype object"),
    ],
)
def test_observations_of_the_wrong_kind(files, obs, error):
    with pytest.raises(TypeError, match=error):
        Controller(files["mlp"][0]).act(obs)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # 1e300 -> float32
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e300])
def test_non_finite_observations_give_the_safe_action_and_keep_the_state(files, bad):
    path, reference = files["gru"]
    controller = Controller(path, safe_action=[0.5, -0.5, 0, 0, 2.0, -3.0])  # last two clipped to [-1, 1]
    rng = np.random.default_rng(4)
    obs = rng.normal(size=(6, 17))
    state = reference.initial_state(1)
    for t in range(3):
        controller.act(obs[t])
        _, state = reference.step(obs[t][None], state)
    before = controller.state
    garbage = obs[3].copy()
    garbage[5] = bad  # 1e300 is finite in float64 but not in float32
    action = controller.act(garbage)
    assert np.array_equal(action, np.array([0.5, -0.5, 0, 0, 1.0, -1.0], np.float32))
    assert controller.nonfinite_count == 1 and controller.steps == 4
    assert all(np.array_equal(a, b) for a, b in zip(controller.state, before))
    # The garbage never entered the state: the next action is the reference's without it.
    expected, _ = reference.step(obs[4][None], state)
    np.testing.assert_allclose(controller.act(obs[4]), expected[0], atol=1e-5)


def test_the_default_safe_action_is_zeros_clipped_to_the_bounds(tmp_path):
    meta = toy_metadata("mlp", 17, 3, action_low=[0.2, -1, -1], action_high=[1, 1, -0.5])
    path, _ = write(tmp_path, "offset.onnx", "mlp", act_dim=3, metadata=meta)
    controller = Controller(path)
    assert np.array_equal(controller.safe_action, np.array([0.2, 0.0, -0.5], np.float32))
    assert np.array_equal(controller.act(np.full(17, np.nan)), controller.safe_action)


def test_a_batch_replaces_only_the_non_finite_rows(files):
    path, reference = files["gru"]
    controller = Controller(path, batch_size=3)
    obs = np.random.default_rng(5).normal(size=(2, 3, 17))
    controller.act(obs[0])
    _, state = reference.step(obs[0], reference.initial_state(3))
    before = controller.state[0]
    bad = obs[1].copy()
    bad[1, 0] = np.nan
    action = controller.act(bad)
    expected, after = reference.step(obs[1], state)
    assert np.array_equal(action[1], np.zeros(6, np.float32)) and controller.nonfinite_count == 1
    np.testing.assert_allclose(action[[0, 2]], expected[[0, 2]], atol=1e-5)
    h = controller.state[0]
    assert np.array_equal(h[:, 1], before[:, 1])
    np.testing.assert_allclose(h[:, [0, 2]], after[0][:, [0, 2]], atol=1e-5)


def test_actions_are_clipped_to_the_metadata_bounds_even_if_the_graph_is_not(tmp_path):
    # The graph clips to [-1, 1]; the metadata's bounds are narrower and asymmetric.
    weights = toy_policy("mlp", seed=6)[1].weights
    weights["mean.weight"] = weights["mean.weight"] * 50  # saturate
    model, reference = toy_policy("mlp", weights=weights)
    low, high = [-0.1, -0.2, -0.3, 0.0, -1.0, -0.5], [0.1, 0.2, 0.3, 0.4, 1.0, -0.25]
    props = toy_metadata("mlp", 17, 6, action_low=low, action_high=high).to_props()
    model, _ = toy_policy("mlp", weights=weights, props=props)
    controller = Controller(save_model(model, tmp_path / "narrow.onnx"))
    obs = np.random.default_rng(7).normal(size=(100, 17)) * 3
    actions = np.stack([controller.act(o) for o in obs])
    assert np.all(actions >= np.float32(low)) and np.all(actions <= np.float32(high))
    expected = np.clip(reference.step(obs, ())[0], low, high)
    np.testing.assert_allclose(actions, expected, atol=1e-5, rtol=1e-4)  # large pre-activations
    assert np.any(actions == np.float32(low)) and np.any(actions == np.float32(high))


# (onnxruntime's GRU and LSTM kernels turn NaN pre-activations into finite gates; its RNN does not.)
@pytest.mark.parametrize(("kind", "where"), [("gru", "mean.bias"), ("rnn", "cell.bias_ih")])
def test_non_finite_network_outputs_give_the_safe_action_and_keep_the_state(tmp_path, kind, where):
    weights = toy_policy(kind, hidden_size=8)[1].weights
    weights[where] = weights[where].copy()
    weights[where][0] = np.nan
    path = save_model(toy_policy(kind, weights=weights)[0], tmp_path / "nan.onnx")
    controller = Controller(path, safe_action=[0.1] * 6)
    for _ in range(3):
        assert np.array_equal(controller.act(np.ones(17)), np.full(6, 0.1, np.float32))
    assert controller.nonfinite_action_count == 3 and controller.nonfinite_count == 0
    assert all(np.array_equal(s, np.zeros_like(s)) for s in controller.state)


@pytest.mark.parametrize(
    ("safe_action", "message"),
    [([0.0] * 5, r"safe_action: expected 6 finite numbers"), ([0.0] * 5 + [np.nan], r"safe_action: expected 6"),
     ("zeros", r"safe_action: expected 6 finite numbers")],
)
def test_bad_safe_actions(files, safe_action, message):
    with pytest.raises(ValueError, match=message):
        Controller(files["mlp"][0], safe_action=safe_action)


def test_reset_of_some_rows(files):
    path, _ = files["lstm"]
    controller = Controller(path, batch_size=3)
    controller.act(np.ones((3, 17)))
    h, c = controller.state
    controller.reset(rows=[1])
    h2, c2 = controller.state
    assert np.all(h2[:, 1] == 0) and np.all(c2[:, 1] == 0)
    assert np.array_equal(h2[:, [0, 2]], h[:, [0, 2]]) and np.array_equal(c2[:, [0, 2]], c[:, [0, 2]])
    controller.reset()
    assert all(np.all(s == 0) for s in controller.state)
    with pytest.raises(ValueError, match=r"rows: expected batch indices in \[0, 3\)"):
        controller.reset(rows=[3])
    with pytest.raises(ValueError, match=r"batch_size: expected an integer in \[1, 65536\], got 0"):
        Controller(path, batch_size=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "rows",
    [[5], [3], -4, [0, 7], [[0, 1]], [True], "0", [0.5], [[0], [1, 2]]],
)
def test_reset_rows_are_checked_for_every_kind(files, kind, rows):
    """An mlp has no state, but reset(rows=[5]) on a batch of 3 is still the caller's bug."""
    controller = Controller(files[kind][0], batch_size=3)
    controller.act(np.ones((3, 17)))
    before = controller.state
    with pytest.raises(ValueError, match=r"^rows: expected batch indices in \[0, 3\) \(or from -3\), got "):
        controller.reset(rows=rows)
    assert all(np.array_equal(a, b) for a, b in zip(controller.state, before))  # untouched
    controller.reset(rows=[0, -1])  # valid indices still work, for every kind
    controller.reset(rows=np.array([], np.int64))


@pytest.mark.parametrize(
    ("batch_size", "error", "message"),
    [
        (10**12, ValueError, r"batch_size: expected an integer in \[1, 65536\], got 1000000000000"),
        (65537, ValueError, r"batch_size: expected an integer in \[1, 65536\], got 65537"),
        (-1, ValueError, r"batch_size: expected an integer in \[1, 65536\], got -1"),
        (2.0, TypeError, r"batch_size: expected an integer in \[1, 65536\], got 2.0"),
        (True, TypeError, r"batch_size: expected an integer in \[1, 65536\], got True"),
    ],
)
def test_batch_size_is_bounded(files, batch_size, error, message):
    """10**12 used to allocate (MemoryError) before anything said the argument was wrong."""
    with pytest.raises(error, match=message):
        Controller(files["mlp"][0], batch_size=batch_size)


def symbolic(model: onnx.ModelProto) -> onnx.ModelProto:
    """Make every fixed dimension of the graph's inputs and outputs symbolic (as some exporters
    write them), so that only running the graph shows which sizes its weights expect."""
    for value in list(model.graph.input) + list(model.graph.output):
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_value"):
                dim.dim_param = f"d{dim.dim_value}"
    return model


@pytest.mark.parametrize(
    ("kind", "overrides"),
    [("mlp", dict(obs_dim=5)), ("gru", dict(obs_dim=5)), ("lstm", dict(obs_dim=30))],
)
@pytest.mark.parametrize("batch_size", [1, 4])
def test_metadata_that_disagrees_with_a_symbolic_graph_names_the_file(tmp_path, kind, overrides, batch_size):
    """Metadata obs_dim 5, graph weights for 17, graph inputs declared symbolic: this used to pass
    the declared-shape check and fail in warm-up with onnxruntime's bare RuntimeError."""
    props = PolicyMetadata(**(toy_metadata(kind, 17, 6, 24).__dict__ | overrides)).to_props()
    model, _ = toy_policy(kind, hidden_size=24, props=props)
    path = save_model(symbolic(model), tmp_path / "symbolic.onnx")
    with pytest.raises(ValueError) as error:
        Controller(path, batch_size=batch_size)
    message = str(error.value)
    assert message.startswith(f"{path}: the graph does not run on inputs of the shapes its metadata implies")
    assert f"obs [{batch_size}, {overrides['obs_dim']}]" in message and "onnxruntime:" in message
    # The same symbolic graph with metadata that agrees loads and runs.
    good, reference = toy_policy(kind, hidden_size=24)
    controller = Controller(save_model(symbolic(good), tmp_path / "good.onnx"), batch_size=batch_size)
    obs = np.linspace(-1, 1, 17 * batch_size).reshape(batch_size, 17)
    np.testing.assert_allclose(controller.act(obs), reference.step(obs, reference.initial_state(batch_size))[0], atol=1e-5)


# --- a runtime without torch or mujoco ----------------------------------------------------------


def test_the_deploy_distribution_depends_on_numpy_and_onnxruntime_only():
    project = tomllib.loads((DEPLOY_DIR / "pyproject.toml").read_text())["project"]
    names = {dep.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip() for dep in project["dependencies"]}
    assert names == {"numpy", "onnxruntime"}
    assert project["name"] == "bmaml-robot-deploy" and project["version"] == "0.1.0"
    assert project["scripts"]["bmaml-control"] == "bmaml_robot_deploy.cli:main"


def test_the_controller_runs_where_torch_mujoco_and_bmaml_robot_cannot_be_imported(files, tmp_path):
    """A fresh interpreter in which importing torch, mujoco, onnx or bmaml_robot fails."""
    path, reference = files["gru"]
    obs = np.linspace(-1, 1, 17)
    script = f"""
import sys
for name in ("torch", "mujoco", "onnx", "bmaml_robot", "gymnasium"):
    sys.modules[name] = None
import numpy as np
import bmaml_robot_deploy as d
from bmaml_robot_deploy.sim import SimulatedRobot
c = d.Controller({path!r})
print(repr(c.act(np.linspace(-1, 1, 17)).tolist()))
try:
    SimulatedRobot("HalfCheetahDir", {{"direction": 1.0}})
except ImportError as error:
    print(error)
"""
    env = dict(os.environ)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    expected = reference.step(obs[None], reference.initial_state(1))[0][0]
    np.testing.assert_allclose(np.array(eval(lines[0])), expected, atol=1e-5)
    assert "pip install bmaml-robot" in lines[1]
