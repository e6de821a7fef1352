"""The deploy runtime with the main package: the control loop driving the MuJoCo simulator (same
returns as a hand-written rollout), a simulator process over UDP closing the loop for an episode
(also authenticated, both command lines) and ``bmaml-control --link sim``.

Everything of the deploy runtime that needs neither torch nor MuJoCo is tested with the deploy
package, in ``deploy/tests`` (the helpers used here too live there: ``deploy_helpers``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import bmaml_robot as bm
from bmaml_robot_deploy import Controller, run_control_loop
from bmaml_robot_deploy.cli import main as control_main
from bmaml_robot_deploy.sim import DEFAULT_MAX_EPISODE_STEPS, SimulatedRobot
from bmaml_robot_deploy.testing import toy_metadata, write_toy_policy
from bmaml_robot_deploy.udp_wire import FLAG_AUTHENTICATED

DEPLOY_TESTS = Path(__file__).resolve().parents[2] / "deploy" / "tests"
if str(DEPLOY_TESTS) not in sys.path:  # the deploy package's test helpers (a directory, not a package)
    sys.path.insert(0, str(DEPLOY_TESTS))
from deploy_helpers import KEY, RecordingUdpRobot, free_port, toy_policies  # noqa: E402


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Toy HalfCheetahDir policies (obs 17, act 6): an MLP and a GRU."""
    return toy_policies(tmp_path_factory.mktemp("deploy_policies"))


# --- the simulated robot -----------------------------------------------------------------------


def rollout_by_hand(path: str, steps: int, max_episode_steps: int, seed: int = 0) -> tuple[list[float], np.ndarray]:
    """The same thing the loop should do, written out: bm.make_vec, controller.act, reset at
    episode ends. Returns (episode returns, actions [steps, act_dim])."""
    controller = Controller(path)
    env = bm.make_vec("HalfCheetahDir", 1, seed=seed, max_episode_steps=max_episode_steps)
    env.set_tasks([controller.metadata.task])
    obs, _ = env.reset(seed=seed)
    returns, episode_return, actions = [], 0.0, []
    for _ in range(steps):
        action = controller.act(obs[0])
        actions.append(action)
        obs, reward, terminated, truncated, _ = env.step(action[None])
        episode_return += float(reward[0])
        if terminated[0] or truncated[0]:
            returns.append(episode_return)
            episode_return = 0.0
            controller.reset()
    env.close()
    return returns, np.stack(actions)


@pytest.mark.parametrize("kind", ["mlp", "gru"])
def test_the_loop_in_the_simulator_reaches_the_hand_written_rollouts_returns(policies, kind):
    path = policies[kind]
    controller = Controller(path)
    with SimulatedRobot.for_policy(controller.metadata, seed=3, max_episode_steps=40) as robot:
        stats = run_control_loop(controller, robot, realtime=False, steps=None, max_episodes=2)
        assert robot.episode_lengths == [40, 40] and robot.episode_terminated == [False, False]
    expected_returns, _ = rollout_by_hand(path, 80, 40, seed=3)
    assert stats.episodes == 2 and stats.actions == stats.steps == 80  # no tick after the last episode's end
    assert stats.partial_episode_steps == 0 and stats.partial_episode_return is None
    assert list(stats.episode_returns) == expected_returns  # bitwise: same actions, same physics
    assert stats.deadline_misses == 0 and stats.nonfinite_observations == 0


def test_the_recurrent_state_is_reset_between_episodes(policies):
    """Without the reset at the episode start, the GRU's second episode would differ."""
    path = policies["gru"]
    controller = Controller(path)
    with SimulatedRobot("HalfCheetahDir", {"direction": 1.0}, seed=0, max_episode_steps=30) as robot:
        run_control_loop(controller, robot, realtime=False, steps=60)
        returns = robot.episode_returns
    # The second episode again, from the same simulator state, by a fresh controller (what the
    # reset gives) and by one that carries its state over from the first episode (no reset).
    second_returns = []
    for reset in (True, False):
        controller = Controller(path)
        env = bm.make_vec("HalfCheetahDir", 1, seed=0, max_episode_steps=30)
        env.set_tasks([{"direction": 1.0}])
        obs, _ = env.reset(seed=0)
        for _ in range(30):
            obs, *_ = env.step(controller.act(obs[0])[None])  # first episode (autoreset at its end)
        if reset:
            controller.reset()
        second = 0.0
        for _ in range(30):
            obs, reward, *_ = env.step(controller.act(obs[0])[None])
            second += float(reward[0])
        second_returns.append(second)
        env.close()
    assert returns[1] == second_returns[0] != second_returns[1]


def test_the_simulator_for_a_policy_checks_the_robot(policies):
    meta = toy_metadata("mlp", 17, 6, robot="Ant")
    with pytest.raises(ValueError, match=r"metadata: the simulated HalfCheetahDir has robot 'HalfCheetah' \(metadata says 'Ant'\)"):
        SimulatedRobot.for_policy(meta)


# --- the UDP bridge: a simulator process closing the loop ------------------------------------------


def test_the_udp_bridge_closes_the_loop_with_a_robot_process(policies, tmp_path):
    """bmaml_robot_deploy.udp_sim simulates the policy's robot in a separate process on
    127.0.0.1 for one 50-step episode, then stops sending (and listens for 3 s)."""
    path = policies["gru"]
    controller = Controller(path)
    robot = RecordingUdpRobot.for_controller(controller, bind=("127.0.0.1", 0), watchdog_timeout=1.0, receive_timeout=0.5)
    record = tmp_path / "robot.npz"
    command = [
        sys.executable, "-m", "bmaml_robot_deploy.udp_sim", "--policy", path,
        "--controller", f"127.0.0.1:{robot.address[1]}", "--episodes", "1", "--max-episode-steps", "50",
        "--seed", "4", "--linger", "3", "--action-timeout", "5", "--record", str(record),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ),
                               cwd=tmp_path)  # not the checkout's root: its bmaml_robot has no compiled core
    try:
        assert robot.wait_for_robot(120), process.communicate(timeout=5)[0] if process.poll() is not None else "no robot"
        # Lockstep for the episode (each read waits for the robot), then 4 ticks without robot.
        stats = run_control_loop(controller, robot, realtime=False, steps=54)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        robot.close()
    assert process.returncode == 0, output
    seen = np.load(record)
    assert int(seen["steps"]) == 50 and list(seen["episode_lengths"]) == [50]
    assert stats.actions == 50 and stats.observations_missing == 4
    # The robot applied exactly the controller's actions, bit for bit, in order.
    assert np.array_equal(seen["actions"], np.stack(robot.sent)) and not seen["action_flags"].any()
    # The observations arrived intact: a fresh controller fed them gives the same actions.
    replay = Controller(path)
    assert np.array_equal(np.stack([replay.act(obs) for obs in seen["observations"]]), seen["actions"])
    # And the episode is the one the in-process simulator gives (float32 observations either way).
    with SimulatedRobot.for_policy(controller.metadata, seed=4, max_episode_steps=50) as local:
        run_control_loop(Controller(path), local, realtime=False, steps=50)
        assert local.episode_returns == [pytest.approx(float(seen["episode_returns"][0]), abs=0)]
    # When the robot stopped sending, the watchdog fired once and sent the safe action.
    assert stats.watchdog_trips == 1 and robot.watchdog_actions >= 1
    assert 1 <= int(seen["watchdog_actions_after_stop"]) <= robot.watchdog_actions
    assert robot.dropped_malformed == robot.dropped_stale == 0


def test_bmaml_control_and_udp_sim_with_a_key_file(policies, tmp_path, capsys):
    """Both command lines, authenticated end to end: udp_sim (the MuJoCo robot) in a thread,
    bmaml-control in this one, the key in a file neither prints."""
    from bmaml_robot_deploy import udp_sim

    key_file = tmp_path / "robot.key"
    key_file.write_text(KEY.hex() + "\n")
    key_file.chmod(0o600)
    port = free_port()
    record = tmp_path / "robot.npz"
    codes = {}
    robot_thread = threading.Thread(target=lambda: codes.setdefault("udp_sim", udp_sim.main([
        "--policy", policies["gru"], "--controller", f"127.0.0.1:{port}", "--steps", "20", "--action-timeout", "0.2",
        "--udp-key-file", str(key_file), "--record", str(record),
    ])))
    robot_thread.start()
    try:
        code = control_main([policies["gru"], "--link", "udp", "--udp-bind", f"127.0.0.1:{port}", "--steps", "20",
                             "--no-realtime", "--udp-key-file", str(key_file), "--wait-for-robot", "20", "--json"])
    finally:
        robot_thread.join(30)
    assert code == 0 and codes == {"udp_sim": 0}
    captured = capsys.readouterr()
    report = json.loads(next(line for line in captured.out.splitlines() if line.startswith("{")))
    assert report["actions"] == 20 and report["udp"]["observations_received"] == 20
    assert report["udp"]["dropped_unauthenticated"] == report["udp"]["dropped_unknown_sender"] == 0
    assert "(authenticated)" in captured.err and "(authenticated)" in captured.out
    assert KEY.hex() not in captured.out + captured.err
    seen = np.load(record)
    assert int(seen["steps"]) == 20 and int(seen["dropped_unauthenticated"]) == 0
    assert np.all(seen["action_flags"] == FLAG_AUTHENTICATED)


# --- bmaml-control ----------------------------------------------------------------------------------


def test_bmaml_control_runs_the_simulator_and_prints_json(policies, capsys):
    assert control_main([policies["mlp"], "--link", "sim", "--steps", "30", "--no-realtime", "--max-episode-steps",
                         "10", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["steps"] == report["actions"] == 30 and report["rate_hz"] is None
    # The 30th action ended the third episode: three completed, three returns, nothing unfinished.
    assert report["episodes"] == len(report["episode_returns"]) == 3
    assert report["partial_episode_steps"] == 0 and report["partial_episode_return"] is None


@pytest.mark.parametrize(("steps", "completed", "partial_steps"), [(10, 1, 0), (25, 2, 5), (7, 0, 7)])
def test_bmaml_control_json_counts_agree_with_the_returns(policies, capsys, steps, completed, partial_steps):
    """``episodes`` counts the episodes completed, each with its return; the episode the run
    stopped in is reported apart, as unfinished (it used to be ``episodes: 0`` next to a listed
    return for a run of exactly one episode)."""
    assert control_main([policies["mlp"], "--link", "sim", "--steps", str(steps), "--no-realtime",
                         "--max-episode-steps", "10", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["episodes"] == len(report["episode_returns"]) == completed
    assert report["partial_episode_steps"] == partial_steps
    assert (report["partial_episode_return"] is None) == (partial_steps == 0)
    # The same run by hand: the completed returns, then the unfinished episode's return so far.
    controller = Controller(policies["mlp"])
    with SimulatedRobot.for_policy(controller.metadata, max_episode_steps=10) as robot:
        stats = run_control_loop(controller, robot, steps=steps, realtime=False)
        assert list(stats.episode_returns) == robot.episode_returns == report["episode_returns"]
        if partial_steps:
            assert report["partial_episode_return"] == stats.partial_episode_return == robot.episode_return
    summary = stats.summary()
    assert f"episodes completed {completed}" in summary
    assert ("unfinished episode: " in summary) == (partial_steps > 0)


def test_the_simulated_episode_length_is_the_files_training_horizon(tmp_path, capsys):
    """``bmaml.horizon`` (the run's episode length) is the simulator's default time limit; a file
    without it keeps the old default, and --max-episode-steps still overrides both."""
    with_horizon = write_toy_policy(tmp_path / "h15.onnx", "mlp", hidden_sizes=(8,), seed=1,
                                    metadata=toy_metadata("mlp", 17, 6, horizon=15))[0]
    without = write_toy_policy(tmp_path / "old.onnx", "mlp", hidden_sizes=(8,), seed=1)[0]
    meta = Controller(with_horizon).metadata
    assert meta.horizon == 15 and Controller(without).metadata.horizon is None
    with SimulatedRobot.for_policy(meta) as robot:
        assert robot.max_episode_steps == 15
    with SimulatedRobot.for_policy(meta, max_episode_steps=40) as robot:
        assert robot.max_episode_steps == 40
    with SimulatedRobot.for_policy(Controller(without).metadata) as robot:
        assert robot.max_episode_steps == DEFAULT_MAX_EPISODE_STEPS == 1000
    assert control_main([with_horizon, "--link", "sim", "--steps", "0", "--episodes", "2", "--no-realtime",
                         "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["steps"] == 30 and report["episodes"] == 2 and report["partial_episode_return"] is None
    assert "episodes of at most 15 steps" in captured.err
    assert control_main([with_horizon, "--link", "sim", "--steps", "30", "--max-episode-steps", "10",
                         "--no-realtime", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 3


def test_bmaml_control_prints_a_summary(policies, capsys):
    assert control_main([policies["gru"], "--link", "sim", "--steps", "5", "--rate-hz", "200"]) == 0
    out = capsys.readouterr().out
    assert "steps 5 (200 Hz" in out and "deadline misses" in out and "act latency p50" in out
