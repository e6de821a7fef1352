"""bmaml-export: adaptation to one task and the ONNX file it writes.

The exported graph must compute what the adapted torch policy computes (1000-step closed loop on
the robot, hidden state fed back, every policy kind), at any batch size, from one file, with the
metadata the deploy runtime reads; the deploy runtime's controller, run in the simulator, must
reach the torch policy's return. Runs are tiny (one meta-iteration of 2 tasks x 2 episodes),
trained once per module, kind and family.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import bmaml_robot as bm  # noqa: E402
from bmaml_robot.config import TrainConfig  # noqa: E402
from bmaml_robot.envs.families import FAMILIES, get_family  # noqa: E402
from bmaml_robot.export import (  # noqa: E402
    SUGGESTED_REALTIME_LIMIT_S,
    Adaptation,
    TaskDistributionWarning,
    adapt_for_task,
    adapt_run,
    config_for_file,
    export_onnx,
    main,
    out_of_distribution,
    suggested_control_command,
)
from bmaml_robot.provenance import provenance  # noqa: E402
from bmaml_robot.run import load_run  # noqa: E402
from bmaml_robot.train import train  # noqa: E402
from bmaml_robot_deploy import Controller, SimulatedRobot, run_control_loop  # noqa: E402
from bmaml_robot_deploy.cli import build_parser as control_parser  # noqa: E402
from bmaml_robot_deploy.cli import main as control_main  # noqa: E402
from bmaml_robot_deploy.metadata import OPTIONAL_KEYS, REQUIRED_KEYS, PolicyMetadata, read_props  # noqa: E402
from bmaml_robot_deploy.testing import toy_metadata  # noqa: E402

FAMILY = "HalfCheetahDir"
TASK = {"direction": -1.0}
#: A task per family used here.
TASKS = {FAMILY: TASK, "Navigation2D": {"goal": [0.3, -0.2]}, "HalfCheetahCrippled": {"actuator_gear": {"fshin": 0.0}}}
#: Every kind, and between them every recurrence mode.
RECURRENCE = {"mlp": "frozen", "rnn": "outer", "gru": "frozen", "lstm": "all"}
HIDDEN = 16
PARITY_STEPS = 1000
TOLERANCE = 1e-5
#: HalfCheetahDir's default action scale (the policy's Gaussian lives in [-10, 10]).
SCALE = 10.0


def robot_action(mean: torch.Tensor, scale: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """The robot's action for the policy's ``mean``, written as pytorch-maml-rl's
    NormalizedActionWrapper writes it (an independent spelling of ``ActionMap.to_robot``)."""
    clipped = torch.clamp(mean, -scale, scale)
    return (low + (clipped + scale) * (high - low) / (2 * scale)).to(torch.float32)


def tiny(kind: str, family: str = FAMILY) -> TrainConfig:
    return TrainConfig(family=family, policy=kind, recurrence=RECURRENCE[kind], num_tasks=2, episodes_per_task=2,
                       horizon=20, num_iterations=1, num_threads=1, hidden_size=HIDDEN, hidden_sizes=(HIDDEN, HIDDEN),
                       init_log_std=-0.5, seed=0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``run_dir(kind, family=FAMILY)``: a trained tiny run (trained on first use)."""
    made: dict[tuple[str, str], Path] = {}

    def get(kind: str, family: str = FAMILY) -> Path:
        if (kind, family) not in made:
            made[kind, family] = tmp_path_factory.mktemp(f"run-{family}-{kind}")
            train(tiny(kind, family), made[kind, family])
        return made[kind, family]

    return get


@pytest.fixture(scope="module")
def exported(run_dir: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
             ) -> Callable[..., tuple[Adaptation, Path]]:
    """``exported(kind, family=FAMILY)``: the run adapted to the family's task in TASKS with 2
    inner steps, and its ONNX file."""
    made: dict[tuple[str, str], tuple[Adaptation, Path]] = {}

    def get(kind: str, family: str = FAMILY) -> tuple[Adaptation, Path]:
        if (kind, family) not in made:
            adaptation = adapt_run(run_dir(kind, family), TASKS[family], 2, episodes=2, seed=1)
            path = tmp_path_factory.mktemp(f"onnx-{family}-{kind}") / f"{kind}.onnx"
            export_onnx(adaptation.policy, adaptation.params, path, adaptation.metadata())
            made[kind, family] = adaptation, path
        return made[kind, family]

    return get


def session_of(path: Path) -> Any:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def state_inputs(kind: str) -> list[str]:
    return {"mlp": [], "rnn": ["h_in"], "gru": ["h_in"], "lstm": ["h_in", "c_in"]}[kind]


def torch_states(state: Any) -> list[np.ndarray]:
    """A torch state ``[K=1, B, H]`` (or ``(h, c)``) as the graph's ``[layers=1, B, H]`` arrays."""
    if state is None:
        return []
    parts = state if isinstance(state, tuple) else (state,)
    return [s.numpy() for s in parts]


# ----------------------------------------------------------------------------- parity
@pytest.mark.parametrize("kind", list(RECURRENCE))
def test_onnx_matches_the_adapted_torch_policy_over_a_closed_loop_episode(kind: str, exported) -> None:
    adaptation, path = exported(kind)
    policy, params = adaptation.policy, adaptation.params

    # The exported parameters are the adapted ones: every adaptable tensor moved, the others
    # (frozen or outer-loop recurrent weights) are the meta-parameters.
    adaptable = set(policy.adaptable_names())
    for name, value in policy.named_parameters():
        assert torch.equal(params[name][0], value) == (name not in adaptable), name
    if kind in ("rnn", "gru"):
        assert {"cell.weight_hh", "cell.bias_hh"}.isdisjoint(adaptable)
    if kind == "lstm":
        assert {"cell.weight_hh", "cell.bias_hh"} <= adaptable

    session = session_of(path)
    # The deploy runtime's controller on the same observations (its own buffers and state).
    controller = Controller(path)
    worst_controller = 0.0
    env = bm.make_vec(FAMILY, 1, max_episode_steps=PARITY_STEPS, seed=0)
    env.set_tasks([TASK])
    low = torch.from_numpy(env.single_action_space.low).double()
    high = torch.from_numpy(env.single_action_space.high).double()
    assert adaptation.run.config.action_scale == SCALE == adaptation.metadata().action_scale
    obs, _ = env.reset(seed=7)
    state = policy.initial_state((1, 1))
    onnx_state = [np.zeros((1, 1, HIDDEN), np.float32) for _ in state_inputs(kind)]
    worst_action = worst_state = 0.0
    hidden_norms = []
    try:
        for t in range(PARITY_STEPS):
            x = torch.from_numpy(obs).to(torch.float32).view(1, 1, -1)
            with torch.no_grad():
                mean, _, state = policy.step(x, state, params)
            action = robot_action(mean.view(1, -1), SCALE, low, high)
            outputs = session.run(None, {"obs": x.view(1, -1).numpy(), **dict(zip(state_inputs(kind), onnx_state))})
            worst_action = max(worst_action, float(np.abs(outputs[0] - action.numpy()).max()))
            for want, have in zip(torch_states(state), outputs[1:]):
                assert have.shape == want.shape == (1, 1, HIDDEN)
                worst_state = max(worst_state, float(np.abs(have - want).max()))
            onnx_state = outputs[1:]  # fed back, as a controller does
            controller_action = controller.act(obs[0])
            worst_controller = max(worst_controller, float(np.abs(controller_action - action.numpy()[0]).max()))
            for want, have in zip(torch_states(state), controller.state):
                worst_controller = max(worst_controller, float(np.abs(have - want).max()))
            if onnx_state:
                hidden_norms.append(float(np.abs(onnx_state[0]).max()))
            obs, _, terminated, truncated, _ = env.step(action.numpy())
            assert bool(truncated[0]) == (t == PARITY_STEPS - 1) and not terminated[0]
    finally:
        env.close()
    assert worst_action <= TOLERANCE
    assert worst_state <= TOLERANCE
    assert worst_controller <= TOLERANCE
    if kind != "mlp":
        assert min(hidden_norms[10:]) > 1e-3  # the state really is carried (not reset to zeros)


@pytest.mark.parametrize("kind", list(RECURRENCE))
def test_batch_size_is_dynamic(kind: str, exported) -> None:
    adaptation, path = exported(kind)
    policy, params = adaptation.policy, adaptation.params
    model = onnx.load(str(path))
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        batch_axis = 0 if value.name in ("obs", "action") else 1
        assert dims[batch_axis].dim_param and not dims[batch_axis].HasField("dim_value"), value.name
    session = session_of(path)
    generator = torch.Generator().manual_seed(0)
    for batch in (1, 7):
        obs = torch.randn(1, batch, policy.obs_dim, generator=generator)
        state = None
        if kind != "mlp":
            h = torch.randn(1, batch, HIDDEN, generator=generator)
            state = (h, torch.randn(1, batch, HIDDEN, generator=generator)) if kind == "lstm" else h
        feeds = {"obs": obs[0].numpy(), **dict(zip(state_inputs(kind), torch_states(state)))}
        with torch.no_grad():
            mean, _, next_state = policy.step(obs, state, params)
        outputs = session.run(None, feeds)
        assert outputs[0].shape == (batch, policy.act_dim)
        np.testing.assert_allclose(outputs[0], robot_action(mean[0], SCALE, -1.0, 1.0).numpy(), rtol=0, atol=TOLERANCE)
        for want, have in zip(torch_states(next_state), outputs[1:]):
            assert have.shape == (1, batch, HIDDEN)
            np.testing.assert_allclose(have, want, rtol=0, atol=TOLERANCE)


def test_actions_are_clipped_to_the_bounds(exported, tmp_path: Path) -> None:
    adaptation, _ = exported("gru")
    params = dict(adaptation.params)
    params["mean.bias"] = torch.tensor([[100.0, -100.0, 100.0, -100.0, 0.0, 0.0]])
    path = export_onnx(adaptation.policy, params, tmp_path / "clipped.onnx", adaptation.metadata())
    obs = np.zeros((4, adaptation.policy.obs_dim), np.float32)
    action = session_of(path).run(["action"], {"obs": obs, "h_in": np.zeros((1, 4, HIDDEN), np.float32)})[0]
    np.testing.assert_array_equal(action[:, :4], np.tile([1.0, -1.0, 1.0, -1.0], (4, 1)))
    assert np.all(np.abs(action[:, 4:]) < 1.0)


@pytest.mark.parametrize("kind", ["mlp", "gru"])
def test_controller_in_the_simulator_reaches_the_torch_return(kind: str, exported) -> None:
    """Torch's deterministic (mean) actions in the robots vs the exported file run by the deploy
    Controller against the SimulatedRobot, same reset seed, whole episodes.

    On 2D navigation: a closed loop on HalfCheetah amplifies the ~1e-7 float differences between
    torch and onnxruntime by about 1.5x per step (contacts), so two runs part after ~30 steps and
    their returns are equal only in distribution; the 1000-step HalfCheetah parity above feeds
    both the same observations instead.
    """
    family, steps, seed = "Navigation2D", 100, 4
    adaptation, path = exported(kind, family)
    policy, params = adaptation.policy, adaptation.params
    env = bm.make_vec(family, 1, seed=seed, max_episode_steps=steps)
    low, high = torch.tensor(env.action_map().low), torch.tensor(env.action_map().high)
    scale = adaptation.run.config.action_scale
    assert scale == 0.1  # Navigation2D: the policy acts in the robot's units, as the references
    try:
        env.set_tasks([TASKS[family]])
        obs, _ = env.reset(seed=seed)
        state, torch_return, torch_length = policy.initial_state((1, 1)), 0.0, 0
        for _ in range(steps):
            with torch.no_grad():
                mean, _, state = policy.step(torch.from_numpy(obs).to(torch.float32).view(1, 1, -1), state, params)
            obs, reward, terminated, truncated, _ = env.step(robot_action(mean.view(1, -1), scale, low, high).numpy())
            torch_return += float(reward[0])
            torch_length += 1
            if terminated[0] or truncated[0]:
                break
    finally:
        env.close()

    controller = Controller(path, expected_family=family)
    with SimulatedRobot.for_policy(controller.metadata, seed=seed, max_episode_steps=steps) as robot:
        stats = run_control_loop(controller, robot, steps=None, max_episodes=1, realtime=False)
        assert robot.episode_lengths == [torch_length] == [steps]
    assert stats.nonfinite_observations == 0
    assert stats.episode_returns[0] == pytest.approx(torch_return, rel=1e-5)
    assert abs(torch_return) > 1.0  # a real episode, not a trivially zero return


# ----------------------------------------------------------------------------- the file
@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_metadata_round_trip(kind: str, exported, run_dir) -> None:
    adaptation, path = exported(kind)
    props = {entry.key: entry.value for entry in onnx.load(str(path)).metadata_props}
    origin = provenance()
    # Every optional key is written; the commit only when exported from a git checkout.
    absent = {"bmaml.physics"} | ({"bmaml.git_commit"} if origin["git_commit"] is None else set())
    assert set(props) == {*REQUIRED_KEYS, *OPTIONAL_KEYS} - absent  # HalfCheetahDir: no physics
    assert float(props["bmaml.action_scale"]) == SCALE
    env = bm.make_vec(FAMILY, 1)
    try:
        dt, low, high = env.dt, env.single_action_space.low, env.single_action_space.high
    finally:
        env.close()
    assert props["bmaml.format_version"] == "1"
    assert props["bmaml.robot"] == "HalfCheetah"
    assert props["bmaml.family"] == FAMILY
    assert json.loads(props["bmaml.task"]) == TASK
    assert (props["bmaml.obs_dim"], props["bmaml.act_dim"]) == ("17", "6")
    assert json.loads(props["bmaml.action_low"]) == low.tolist()
    assert json.loads(props["bmaml.action_high"]) == high.tolist()
    assert float(props["bmaml.control_dt"]) == dt == pytest.approx(0.05)
    assert props["bmaml.policy_kind"] == kind
    assert props["bmaml.recurrence"] == ("none" if kind == "mlp" else RECURRENCE[kind])
    assert json.loads(props["bmaml.hidden_shape"]) == ([] if kind == "mlp" else [1, HIDDEN])
    assert props["bmaml.adapt_steps"] == "2"
    assert props["bmaml.package_version"] == bm.__version__
    # Provenance: the run's name (not a path of the exporting machine), its training horizon and
    # resolved config, the package version, commit and library versions.
    assert props["bmaml.source_run"] == run_dir(kind).name and "/" not in props["bmaml.source_run"]
    assert props["bmaml.horizon"] == "20" == str(tiny(kind).horizon)
    assert json.loads(props["bmaml.provenance"]) == origin
    assert props.get("bmaml.git_commit") == origin["git_commit"]
    config = json.loads(props["bmaml.train_config"])
    assert config == config_for_file(adaptation.run.config)
    assert config["horizon"] == 20 and config["action_scale"] == SCALE and config["policy"] == kind
    assert config.get("recurrence") == (None if kind == "mlp" else RECURRENCE[kind])
    # What the deploy runtime parses is what export wrote.
    assert PolicyMetadata.from_onnx(path) == adaptation.metadata()
    assert PolicyMetadata.from_onnx(session_of(path)) == adaptation.metadata()


def test_an_mlp_export_never_says_frozen(run_dir, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """An MLP run's config holds the default ``recurrence: frozen``, meaningless for an MLP: the
    file says ``none`` and nothing the export writes or prints says ``frozen``."""
    run = run_dir("mlp")
    assert load_run(run).config.recurrence == "frozen"
    out = tmp_path / "mlp.onnx"
    assert main([str(run), "--task", json.dumps(TASK), "--adapt-steps", "0", "--out", str(out), "--episodes", "1"]) == 0
    captured = capsys.readouterr()
    model = onnx.load(str(out))
    props = {entry.key: entry.value for entry in model.metadata_props}
    assert props["bmaml.recurrence"] == "none" and "recurrence" not in json.loads(props["bmaml.train_config"])
    for text in (captured.out, captured.err, model.doc_string, *props.values()):
        assert "frozen" not in text, text


def test_one_self_contained_file(exported, tmp_path: Path) -> None:
    _, path = exported("gru")
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no .data, no temp file left
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() makes it, not a private temp file
    model = onnx.load(str(path), load_external_data=False)
    assert model.graph.initializer, "the weights are in the graph"
    for tensor in model.graph.initializer:
        assert tensor.data_location == onnx.TensorProto.DEFAULT and not tensor.external_data, tensor.name
    assert all(op.domain in ("", "ai.onnx") and op.version >= 18 for op in model.opset_import)
    alone = tmp_path / "elsewhere" / "policy.onnx"
    alone.parent.mkdir()
    shutil.copy(path, alone)
    feeds = {"obs": np.ones((2, 17), np.float32), "h_in": np.zeros((1, 2, HIDDEN), np.float32)}
    np.testing.assert_array_equal(session_of(alone).run(None, feeds)[0], session_of(path).run(None, feeds)[0])


def test_export_checks_its_arguments_and_keeps_the_old_file(exported, tmp_path: Path) -> None:
    adaptation, _ = exported("mlp")
    path = tmp_path / "policy.onnx"
    path.write_bytes(b"previous")
    two_tasks = {name: value.expand(2, *value.shape[1:]) for name, value in adaptation.params.items()}
    with pytest.raises(ValueError, match=r"params\['.*'\]: expected shape \[1, "):
        export_onnx(adaptation.policy, two_tasks, path, adaptation.metadata())
    wrong = PolicyMetadata(**{**adaptation.metadata().__dict__, "obs_dim": 5})
    with pytest.raises(ValueError, match=r"metadata.obs_dim: expected 17"):
        export_onnx(adaptation.policy, adaptation.params, path, wrong)
    assert path.read_bytes() == b"previous"


# ----------------------------------------------------------------------------- adaptation and CLI
def test_adaptation_is_deterministic(run_dir) -> None:
    _, a = adapt_for_task(run_dir("rnn"), TASK, 1, episodes=2, seed=3)
    _, b = adapt_for_task(run_dir("rnn"), TASK, 1, episodes=2, seed=3)
    _, c = adapt_for_task(run_dir("rnn"), TASK, 1, episodes=2, seed=4)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.equal(a["mean.bias"], c["mean.bias"])
    assert all(value.shape[0] == 1 for value in a.values())


def test_adapt_steps_0_exports_the_meta_policy(run_dir, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = run_dir("lstm")
    out = tmp_path / "meta.onnx"
    assert main([str(run), "--task", '{"direction": 1}', "--adapt-steps", "0", "--out", str(out), "--episodes", "1"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "meta-policy" in printed
    meta = load_run(run).policy
    metadata = PolicyMetadata.from_onnx(out)
    assert metadata.adapt_steps == 0 and metadata.task == {"direction": 1.0}
    generator = torch.Generator().manual_seed(0)
    obs = torch.randn(5, meta.obs_dim, generator=generator)
    h, c = torch.randn(2, 5, HIDDEN, generator=generator)
    with torch.no_grad():
        mean, _, (h_next, c_next) = meta.step(obs, (h, c))  # the module's own parameters
    action, h_out, c_out = session_of(out).run(None, {"obs": obs.numpy(), "h_in": h[None].numpy(), "c_in": c[None].numpy()})
    np.testing.assert_allclose(action, robot_action(mean, SCALE, -1.0, 1.0).numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(h_out[0], h_next.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(c_out[0], c_next.numpy(), rtol=0, atol=1e-6)


def test_cli_adapts_and_reports_returns(run_dir, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sub" / "adapted.onnx"
    assert main([str(run_dir("mlp")), "--task", json.dumps(TASK), "--adapt-steps", "1", "--out", str(out),
                 "--episodes", "2", "--fast-lr", "0.2", "--seed", "5", "--num-threads", "2"]) == 0
    printed = capsys.readouterr().out
    assert "before adaptation" in printed and "after" in printed and "KiB" in printed
    assert PolicyMetadata.from_onnx(out).adapt_steps == 1


def finishes(argv: list[str], timeout: float) -> tuple[bool, float]:
    """Run ``bmaml-control argv`` in-process (a daemon thread); (finished within timeout, seconds)."""
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", control_main(argv)), daemon=True)
    start = time.perf_counter()
    thread.start()
    thread.join(timeout)
    assert result.get("code", 0) == 0
    return not thread.is_alive(), time.perf_counter() - start


@pytest.mark.parametrize("family", ["Navigation2D", FAMILY])
def test_the_suggested_control_command_runs_one_episode_quickly(family: str, run_dir, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    """bmaml-export prints a bmaml-control command to try the file; run exactly that. It used to
    run 1000 steps at Navigation2D's 1 Hz (17 minutes): now one episode of the training horizon,
    unpaced where the control rate is slow."""
    out = tmp_path / "my policies" / "policy.onnx"  # a space: the command must quote the path
    assert main([str(run_dir("mlp", family)), "--task", json.dumps(TASKS[family]), "--adapt-steps", "1", "--out",
                 str(out), "--episodes", "1"]) == 0
    printed = capsys.readouterr().out
    commands = [line.strip() for line in printed.splitlines() if line.strip().startswith("bmaml-control ")]
    assert len(commands) == 1, printed
    argv = shlex.split(commands[0])
    assert argv[:2] == ["bmaml-control", str(out)]
    assert ("--no-realtime" in argv) == (family == "Navigation2D")  # 20 s at 1 Hz, 1 s at 20 Hz
    done, seconds = finishes(argv[1:], timeout=60)
    assert done and seconds < 15, f"{commands[0]!r} ran for {seconds:.1f} s"
    report = capsys.readouterr().out
    steps = int(re.search(r"^steps (\d+) ", report, re.M).group(1))
    # One episode of the training horizon (20 steps; Navigation2D's ends sooner at the goal).
    assert "episodes completed 1" in report and (steps == 20 if family == FAMILY else 1 <= steps <= 20), report


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("horizon", [None, 20, 100, 5000])
def test_the_suggested_control_command_is_short_for_every_family(family: str, horizon: int | None) -> None:
    """For every family's control rate and any horizon (None: a file without one), the command
    parses as bmaml-control's and runs at most a few seconds paced, or unpaced."""
    env = bm.make_vec(family, 1)
    try:
        dt, robot, act_dim, obs_dim = env.dt, env.family.robot, env.act_dim, env.obs_dim
    finally:
        env.close()
    meta = toy_metadata("mlp", obs_dim, act_dim, robot=robot, family=family, control_dt=dt, horizon=horizon,
                        task=get_family(family).sample_tasks(1, np.random.default_rng(0))[0])
    argv, description = suggested_control_command("policy.onnx", meta)
    assert argv[0] == "bmaml-control"
    args = control_parser().parse_args(argv[1:])
    assert args.link == "sim" and args.episodes == 1 and args.steps >= 1
    steps = min(args.steps, horizon or 1000)  # the simulator's episode: the horizon, else 1000 steps
    assert f"one {steps}-step episode" in description if steps == (horizon or 1000) else \
        f"the first 1000 steps of a {horizon}-step episode" in description
    assert not args.realtime or steps * dt <= SUGGESTED_REALTIME_LIMIT_S


def test_a_task_outside_the_training_distribution_is_exported_with_a_warning(run_dir, tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture) -> None:
    run = run_dir("mlp")
    with pytest.warns(TaskDistributionWarning, match=r"\{\"direction\": 0.5\} is outside HalfCheetahDir's "
                                                     r"training distribution \(direction in \{-1, \+1\}\)"):
        adapt_run(run, {"direction": 0.5}, 0, episodes=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TaskDistributionWarning)
        adapt_run(run, TASK, 0, episodes=1)  # in the distribution: silent
    out = tmp_path / "half.onnx"
    assert main([str(run), "--task", '{"direction": 0.5}', "--adapt-steps", "0", "--out", str(out),
                 "--episodes", "1"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and "bmaml-export: warning: task {\"direction\": 0.5} is outside " in err
    assert "(direction in {-1, +1})" in err and PolicyMetadata.from_onnx(out).task == {"direction": 0.5}
    assert main([str(run), "--task", json.dumps(TASK), "--adapt-steps", "0", "--out", str(out), "--episodes", "1"]) == 0
    assert "warning" not in capsys.readouterr().err
    # Every family says its own distribution; the goal families check both coordinates.
    ant_goal, navigation = get_family("AntGoal"), get_family("Navigation2D")
    assert out_of_distribution(ant_goal, {"goal": [-3.0, 2.5]}) is None
    assert "AntGoal's training distribution (goal ~ U[-3, 3]^2)" in out_of_distribution(ant_goal, {"goal": [1.0, 3.5]})
    assert "(goal ~ U[-0.5, 0.5]^2)" in out_of_distribution(navigation, {"goal": [0.6, 0.0]})
    assert "(velocity ~ U[0, 2])" in out_of_distribution(get_family("HalfCheetahVel"), {"velocity": -0.5})
    assert out_of_distribution(get_family("AntDir"), {"direction": -1.0}) is None


@pytest.mark.parametrize("args, message", [
    (["--task", "{direction: -1}"], "--task: expected a JSON object"),
    (["--task", "[-1.0]"], "--task: expected a JSON object"),
    (["--task", '{"velocity": 1.0}'], r"--task: HalfCheetahDir tasks have exactly the keys \['direction'\]"),
    (["--task", '{"direction": "back"}'], r"--task\['direction'\]: expected a number"),
    (["--task", '{"direction": -1}', "--adapt-steps", "-1"], "--adapt-steps: expected an integer >= 0"),
    (["--task", '{"direction": -1}', "--episodes", "0"], "--episodes: expected an integer >= 1"),
    (["--task", '{"direction": -1}', "--fast-lr", "nan"], "--fast-lr: expected a finite number"),
])
def test_cli_errors_before_any_work(args: list[str], message: str, run_dir, tmp_path: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "policy.onnx"
    argv = [str(run_dir("mlp")), *args, "--out", str(out)]
    if "--adapt-steps" not in args:
        argv += ["--adapt-steps", "1"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.parametrize("layout", ["missing", "empty", "corrupt"])
def test_cli_rejects_a_bad_run_dir(layout: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    if layout != "missing":
        run.mkdir()
    if layout == "corrupt":
        (run / "policy.pt").write_bytes(b"not a checkpoint")
    out = tmp_path / "policy.onnx"
    with pytest.raises(SystemExit) as exit_info:
        main([str(run), "--task", '{"direction": -1}', "--adapt-steps", "1", "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "run_dir" in err or "policy.pt" in err
    assert str(run) in err
    assert not out.exists()


def test_a_physics_task_travels_with_the_file_to_the_simulator(exported) -> None:
    """HalfCheetahCrippled: the file holds the task in full and its physics by label (readable),
    and the deploy simulator drives the same crippled robot as the env (not the healthy one)."""
    family = "HalfCheetahCrippled"
    _, path = exported("mlp", family)
    meta = PolicyMetadata.from_props(read_props(path))
    assert meta.task == {"actuator_gear": {"bthigh": 1.0, "bshin": 1.0, "bfoot": 1.0, "fthigh": 1.0, "fshin": 0.0,
                                           "ffoot": 1.0}}
    assert meta.physics is not None and meta.physics["actuator_gear[fshin]"] == 0.0
    assert meta.physics["actuator_gear[fthigh]"] == 120.0  # Gymnasium's gear, in the model's units
    robot = SimulatedRobot.for_policy(meta, seed=3)
    qpos, qvel = robot.env.get_state()
    envs = bm.make_vec(family, 2, seed=0, max_episode_steps=1000)
    envs.set_tasks([TASKS[family], {}])
    envs.set_state(np.repeat(qpos, 2, axis=0), np.repeat(qvel, 2, axis=0))
    actions = np.random.default_rng(0).uniform(-1, 1, (10, envs.act_dim)).astype(np.float32)  # as the loop's
    robot.env.set_state(qpos, qvel)  # both from a fresh set_state: the same solver warm start
    for action in actions:
        robot.send_action(action)
        obs, *_ = envs.step(np.stack([action, action]))
        np.testing.assert_array_equal(robot.read_observation(), obs[0])
    assert not np.array_equal(obs[0], obs[1])
    robot.close()
