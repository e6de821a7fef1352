"""bmaml-export of RL^2 runs and the deploy runtime feeding them: the ONNX graph takes the previous
action, the previous reward and the episode-start flag (named and documented in the file), the
``Controller`` driven by ``run_control_loop`` on the simulated robot computes what the torch
``RL2Policy`` computes step by step, over a 1000-step closed loop whose state crosses episode
boundaries; the command line's usage errors; a simulator process over UDP (version-2 packets).

Runs are tiny (one RL^2 iteration of 2 trials x 2 episodes of 20 steps on HalfCheetahVel), trained
once per module and kind.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from bmaml_robot.config import TrainConfig  # noqa: E402
from bmaml_robot.export import (  # noqa: E402
    RL2Export,
    adapt_run,
    export_onnx,
    main,
    rl2_export,
    suggested_control_command,
)
from bmaml_robot.rl2 import RL2Policy  # noqa: E402
from bmaml_robot.train import train  # noqa: E402
from bmaml_robot_deploy import Controller, SimulatedRobot, run_control_loop  # noqa: E402
from bmaml_robot_deploy.cli import build_parser as control_parser  # noqa: E402
from bmaml_robot_deploy.metadata import RL2_INPUT_DOCS, PolicyMetadata  # noqa: E402

DEPLOY_TESTS = Path(__file__).resolve().parents[2] / "deploy" / "tests"
if str(DEPLOY_TESTS) not in sys.path:  # the deploy package's test helpers (a directory, not a package)
    sys.path.insert(0, str(DEPLOY_TESTS))
from deploy_helpers import RecordingUdpRobot  # noqa: E402

FAMILY = "HalfCheetahVel"
TASK = {"velocity": 1.5}
HIDDEN = 16
SCALE = 10.0  # HalfCheetahVel's action scale
PARITY_STEPS, EPISODE_STEPS = 1000, 300
#: Largest |ONNX - torch| accepted, relative to the action (actions are O(0.1-1) in robot units).
RTOL, ATOL = 1e-5, 1e-6
INPUTS = ["obs", "prev_action", "prev_reward", "episode_start"]


def tiny(kind: str, family: str = FAMILY, horizon: int = 20) -> TrainConfig:
    return TrainConfig(algorithm="rl2", family=family, policy=kind, recurrence="all", hidden_size=HIDDEN, num_tasks=2,
                       episodes_per_trial=2, horizon=horizon, num_iterations=1, num_threads=1, ppo_epochs=1,
                       ppo_minibatches=1, seed=0)


@pytest.fixture(scope="module")
def rl2_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``rl2_run(kind, family=FAMILY)``: a tiny trained RL^2 run (trained on first use)."""
    made: dict[tuple[str, str], Path] = {}

    def get(kind: str, family: str = FAMILY) -> Path:
        if (kind, family) not in made:
            made[kind, family] = tmp_path_factory.mktemp(f"rl2-{family}-{kind}")
            train(tiny(kind, family, horizon=5 if family.startswith("Bandit") else 20), made[kind, family])
        return made[kind, family]

    return get


@pytest.fixture(scope="module")
def exported(rl2_run, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[RL2Export, Path]]:
    """``exported(kind)``: the RL^2 run prepared on TASK and its ONNX file."""
    made: dict[str, tuple[RL2Export, Path]] = {}

    def get(kind: str) -> tuple[RL2Export, Path]:
        if kind not in made:
            export = rl2_export(rl2_run(kind), TASK, trials=2, seed=1)
            path = tmp_path_factory.mktemp(f"onnx-rl2-{kind}") / f"{kind}.onnx"
            export_onnx(export.policy, None, path, export.metadata())
            made[kind] = export, path
        return made[kind]

    return get


def robot_action(mean: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """The robot's action for the policy's ``mean`` (pytorch-maml-rl's NormalizedActionWrapper's
    spelling, independent of ``ActionMap``)."""
    clipped = torch.clamp(mean, -SCALE, SCALE)
    return (low + (clipped + SCALE) * (high - low) / (2 * SCALE)).to(torch.float32)


class RecordingController:
    """A ``Controller`` that records what the control loop gave it and what it answered."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.records: list[dict[str, Any]] = []
        self.resets = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.controller, name)

    def reset(self, *args: Any) -> None:
        self.resets += 1
        self.controller.reset(*args)

    def act(self, obs: np.ndarray, **kwargs: Any) -> np.ndarray:
        state_before = self.controller.state
        action = self.controller.act(obs, **kwargs)
        self.records.append({"obs": np.array(obs), **kwargs, "action": action.copy(), "state_before": state_before,
                             "state": self.controller.state, "prev_action": self.controller.previous_action})
        return action


def as_graph_state(state: Any) -> list[np.ndarray]:
    """A torch state ``[K=1, B=1, H]`` (or ``(h, c)``) as the graph's ``[layers=1, B=1, H]`` arrays."""
    parts = state if isinstance(state, tuple) else (state,)
    return [s.numpy() for s in parts]


# ----------------------------------------------------------------------------- parity
@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_onnx_matches_torch_over_a_closed_loop_across_episode_boundaries(kind: str, exported) -> None:
    """``run_control_loop`` drives the exported file on the simulated robot for 1000 steps,
    episodes of 300 (so the state is fed back across three boundaries); then the torch policy is
    stepped on the same observations, rewards and start flags, with its own previous action
    (training's encoding of its own mean) and its own state, carried across the boundaries too."""
    export, path = exported(kind)
    policy = export.policy
    controller = RecordingController(Controller(path, expected_family=FAMILY))
    with SimulatedRobot.for_policy(controller.metadata, seed=3, max_episode_steps=EPISODE_STEPS) as robot:
        low = torch.from_numpy(robot.action_low).double()
        high = torch.from_numpy(robot.action_high).double()
        stats = run_control_loop(controller, robot, steps=PARITY_STEPS, realtime=False)
    assert stats.actions == PARITY_STEPS and stats.episodes == 3 and stats.partial_episode_steps == 100
    records = controller.records
    starts = [t for t, r in enumerate(records) if r["episode_start"]]
    assert starts == [0, 300, 600, 900] and controller.resets == 1  # one trial: reset once, at the start

    state = policy.initial_state((1, 1))
    prev = torch.zeros(policy.act_dim)
    worst_abs = largest = worst_state = worst_prev = 0.0
    with torch.no_grad():
        for t, record in enumerate(records):
            reward = 0.0 if t == 0 else record["reward"]  # (a trial's first step reads 0)
            x = torch.cat([torch.from_numpy(record["obs"]).to(torch.float32), prev,
                           torch.tensor([reward, float(record["episode_start"])], dtype=torch.float32)])
            mean, _, state = policy.step(x.view(1, 1, -1), state)
            want = robot_action(mean.view(-1).double(), low, high).numpy()
            difference = np.abs(record["action"] - want)
            assert np.all(difference <= ATOL + RTOL * np.abs(want)), (t, record["action"], want)
            worst_abs = max(worst_abs, float(difference.max()))
            largest = max(largest, float(np.abs(want).max()))
            for have, expected in zip(record["state"], as_graph_state(state)):
                worst_state = max(worst_state, float(np.abs(have - expected).max()))
            if t in starts[1:]:  # the state crosses the boundary: carried (not zeros), and it matters
                assert float(np.abs(record["state_before"][0]).max()) > 1e-3, t
                reset_mean, _, _ = policy.step(x.view(1, 1, -1), policy.initial_state((1, 1)))
                reset_action = robot_action(reset_mean.view(-1).double(), low, high).numpy()
                assert float(np.abs(reset_action - record["action"]).max()) > 1e-4, t
            prev = policy.previous_action_input(mean.view(-1), SCALE)
            # The controller's next previous-action input (normalised from the robot's action).
            worst_prev = max(worst_prev, float(np.abs(record["prev_action"][0] - prev.numpy()).max()))
    print(f"\n{kind}: {PARITY_STEPS} steps, max |onnx - torch| action {worst_abs:.2e} (max |action| {largest:.3g}), "
          f"state {worst_state:.2e}, previous action input {worst_prev:.2e}")
    assert worst_state <= 1e-5 and worst_prev <= 1e-5
    # The actions move the robot (not a trivially constant controller).
    actions = np.stack([r["action"] for r in records])
    assert actions.std(axis=0).min() > 1e-3


def test_the_controller_matches_onnxruntime_and_torch_at_any_batch(exported) -> None:
    export, path = exported("gru")
    policy = export.policy
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = onnx.load(str(path))
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        batch_axis = 1 if value.name in ("h_in", "c_in", "h_out", "c_out") else 0
        assert dims[batch_axis].dim_param and not dims[batch_axis].HasField("dim_value"), value.name
    generator = torch.Generator().manual_seed(0)
    for batch in (1, 6):
        obs = torch.randn(batch, policy.obs_dim, generator=generator)
        prev = torch.rand(batch, policy.act_dim, generator=generator) * 2 - 1
        reward = torch.randn(batch, 1, generator=generator)
        start = (torch.rand(batch, 1, generator=generator) < 0.5).float()
        h = torch.randn(1, batch, HIDDEN, generator=generator)
        with torch.no_grad():
            mean, _, h_next = policy.step(torch.cat([obs, prev, reward, start], dim=-1), h[0])
        action, h_out = session.run(None, {"obs": obs.numpy(), "prev_action": prev.numpy(),
                                           "prev_reward": reward.numpy(), "episode_start": start.numpy(),
                                           "h_in": h.numpy()})
        np.testing.assert_allclose(action, robot_action(mean, -1.0, 1.0).numpy(), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(h_out[0], h_next.numpy(), rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- the file
def test_the_file_names_and_documents_rl2_inputs(exported, rl2_run) -> None:
    export, path = exported("lstm")
    model = onnx.load(str(path))
    props = {entry.key: entry.value for entry in model.metadata_props}
    assert props["bmaml.format_version"] == "2" and props["bmaml.algorithm"] == "rl2"
    assert props["bmaml.episodes_per_trial"] == "2" and props["bmaml.adapt_steps"] == "0"
    assert json.loads(props["bmaml.input_names"]) == [*INPUTS, "h_in", "c_in"]
    assert json.loads(props["bmaml.task"]) == TASK and props["bmaml.family"] == FAMILY
    assert props["bmaml.policy_kind"] == "lstm" and props["bmaml.recurrence"] == "all"
    assert json.loads(props["bmaml.hidden_shape"]) == [1, HIDDEN] and float(props["bmaml.action_scale"]) == SCALE
    assert json.loads(props["bmaml.train_config"])["algorithm"] == "rl2"
    assert props["bmaml.source_run"] == rl2_run("lstm").name
    assert [value.name for value in model.graph.input] == [*INPUTS, "h_in", "c_in"]
    assert [value.name for value in model.graph.output] == ["action", "h_out", "c_out"]
    docs = {value.name: value.doc_string for value in model.graph.input}
    assert all(docs[name] == RL2_INPUT_DOCS[name] for name in INPUTS[1:])
    assert "prev_action" in model.doc_string and "episodes of a trial" in model.doc_string
    metadata = PolicyMetadata.from_onnx(path)
    assert metadata == export.metadata() and metadata.rl2 and metadata.episodes_per_trial == 2
    # The returns reported: one per episode of the trials on the task.
    assert len(export.returns) == 2 and all(np.isfinite(export.returns)) and export.trials == 2


def test_export_checks_its_rl2_arguments(exported, tmp_path: Path) -> None:
    export, _ = exported("gru")
    path = tmp_path / "policy.onnx"
    params = {name: value.detach()[None] for name, value in export.policy.named_parameters()}
    with pytest.raises(ValueError, match=r"^params: an RL\^2 policy is exported with its own parameters"):
        export_onnx(export.policy, params, path, export.metadata())
    maml = PolicyMetadata(**{**export.metadata().__dict__, "algorithm": "maml", "episodes_per_trial": None,
                             "format_version": "1"})
    with pytest.raises(ValueError, match=r"^metadata.algorithm: expected 'rl2' for an RL\^2 policy, got 'maml'"):
        export_onnx(export.policy, None, path, maml)
    wrong = PolicyMetadata(**{**export.metadata().__dict__, "hidden_shape": (1, 5)})
    with pytest.raises(ValueError, match=r"^metadata.hidden_shape: expected \(1, 16\)"):
        export_onnx(export.policy, None, path, wrong)
    assert not path.exists()


# ----------------------------------------------------------------------------- command line
def test_cli_exports_an_rl2_run_and_its_suggested_command_runs_one_trial(rl2_run, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "rl2 policies" / "hcvel.onnx"
    assert main([str(rl2_run("gru")), "--task", json.dumps(TASK), "--out", str(out), "--episodes", "1"]) == 0
    printed = capsys.readouterr().out
    assert "RL^2 gru policy" in printed and "no gradient step" in printed and "return per episode [" in printed
    assert "'prev_action', 'prev_reward', 'episode_start'" in printed
    metadata = PolicyMetadata.from_onnx(out)
    assert metadata.rl2 and metadata.task == TASK
    # --adapt-steps 0 says the same.
    again = tmp_path / "again.onnx"
    assert main([str(rl2_run("gru")), "--task", json.dumps(TASK), "--adapt-steps", "0", "--out", str(again),
                 "--episodes", "1"]) == 0
    assert PolicyMetadata.from_onnx(again).adapt_steps == 0
    # The suggested command runs one trial (2 episodes of 20 steps).
    commands = [line.strip() for line in printed.splitlines() if line.strip().startswith("bmaml-control ")]
    assert len(commands) == 1
    argv = shlex.split(commands[0])
    assert argv[1] == str(out) and argv[argv.index("--episodes") + 1] == "2"
    from bmaml_robot_deploy.cli import main as control_main

    assert control_main([*argv[1:], "--no-realtime"]) == 0
    report = capsys.readouterr()
    assert "episodes completed 2" in report.out and re.search(r"^steps 40 ", report.out, re.M), report.out
    assert "RL^2 policy: the run is one trial" in report.err


def test_the_suggested_command_for_long_trials() -> None:
    meta = PolicyMetadata(robot="HalfCheetah", family=FAMILY, task=TASK, obs_dim=17, act_dim=6,
                          action_low=[-1.0] * 6, action_high=[1.0] * 6, control_dt=0.05, policy_kind="gru",
                          recurrence="all", hidden_shape=[1, 8], adapt_steps=0, package_version="x",
                          source_run="r", format_version="2", horizon=400, algorithm="rl2", episodes_per_trial=4)
    argv, description = suggested_control_command("p.onnx", meta)
    args = control_parser().parse_args(argv[1:])
    assert (args.episodes, args.steps, args.realtime) == (4, 1600, False)
    assert description.startswith("one trial of 4 400-step episodes, unpaced")


@pytest.mark.parametrize("args, message", [
    (["--adapt-steps", "1"], r"--adapt-steps: .* is an RL\^2 run, which adapts in its activations while it runs, "
                             r"not by gradient steps: give 0 or leave it out, got 1"),
    (["--fast-lr", "0.1"], r"--fast-lr: .* is an RL\^2 run: it has no inner step"),
    (["--task", '{"direction": 1}'], r"--task: HalfCheetahVel tasks have exactly the keys \['velocity'\]"),
])
def test_cli_usage_errors_of_an_rl2_run(args: list[str], message: str, rl2_run, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "policy.onnx"
    argv = [str(rl2_run("gru")), "--out", str(out), *args]
    if "--task" not in args:
        argv += ["--task", json.dumps(TASK)]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and re.search(message, capsys.readouterr().err)
    assert not out.exists()


def test_a_discrete_family_is_refused_naming_it(rl2_run, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = rl2_run("gru", "BanditCorrelated")
    with pytest.raises(ValueError, match=r"^family: BanditCorrelated is a discrete task .* the deploy runtime drives "
                                         r"robots"):
        rl2_export(run, {"p": 0.3})
    out = tmp_path / "bandit.onnx"
    with pytest.raises(SystemExit) as exit_info:
        main([str(run), "--task", '{"p": 0.3}', "--out", str(out)])
    assert exit_info.value.code == 2
    assert "family: BanditCorrelated is a discrete task" in capsys.readouterr().err and not out.exists()


def test_a_maml_run_still_needs_adapt_steps(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "maml"
    train(TrainConfig(family="HalfCheetahDir", policy="mlp", num_tasks=2, episodes_per_task=1, horizon=10,
                      num_iterations=1, num_threads=1, hidden_sizes=(8,), seed=0), run)
    out = tmp_path / "policy.onnx"
    with pytest.raises(SystemExit) as exit_info:
        main([str(run), "--task", '{"direction": 1}', "--out", str(out)])
    assert exit_info.value.code == 2 and not out.exists()
    assert "--adapt-steps: required for a MAML run" in capsys.readouterr().err


def test_maml_commands_say_what_an_rl2_run_needs(rl2_run) -> None:
    with pytest.raises(ValueError, match=r"^adapt_run: .* is an RL\^2 run .* export it with rl2_export\(\)"):
        adapt_run(rl2_run("gru"), TASK, 1)
    assert isinstance(rl2_export(rl2_run("gru"), TASK, trials=1).policy, RL2Policy)


# ----------------------------------------------------------------------------- UDP, a simulator process
def test_an_rl2_file_over_udp_with_a_simulator_process(exported, tmp_path: Path) -> None:
    """``bmaml_robot_deploy.udp_sim`` serves the file's robot for one trial of 2 episodes of 30 steps
    (version-2 packets: each observation with the reward of the step before); a fresh controller
    fed what the robot sent (observations, rewards, episode starts) gives its actions bit for bit."""
    _, path = exported("gru")
    controller = Controller(path)
    robot = RecordingUdpRobot.for_controller(controller, bind=("127.0.0.1", 0), watchdog_timeout=1.0,
                                             receive_timeout=0.5)
    record = tmp_path / "robot.npz"
    command = [
        sys.executable, "-m", "bmaml_robot_deploy.udp_sim", "--policy", str(path),
        "--controller", f"127.0.0.1:{robot.address[1]}", "--episodes", "2", "--max-episode-steps", "30",
        "--seed", "2", "--action-timeout", "5", "--record", str(record),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=dict(os.environ), cwd=tmp_path)
    try:
        assert robot.wait_for_robot(120), process.communicate(timeout=5)[0] if process.poll() is not None else "none"
        stats = run_control_loop(controller, robot, realtime=False, steps=60)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        robot.close()
    assert process.returncode == 0, output
    seen = np.load(record)
    assert list(seen["episode_lengths"]) == [30, 30] and stats.actions == 60 and robot.observation_version == 2
    assert np.array_equal(seen["actions"], np.stack(robot.sent))
    rewards = seen["rewards"]
    assert rewards[0] == 0.0 and np.all(rewards[1:] != 0.0)
    replay = Controller(path)
    actions = [replay.act(obs, reward=float(rewards[t]), episode_start=t in (0, 30))
               for t, obs in enumerate(seen["observations"])]
    assert np.array_equal(np.stack(actions), seen["actions"])
