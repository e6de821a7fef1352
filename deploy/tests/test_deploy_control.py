"""The deploy runtime's control loop, UDP link and command line, with the deploy runtime only (no
torch, no MuJoCo): deadline accounting on a fake clock, the UDP link's packet checks and
watchdog, a toy robot served by ``UdpRobotServer`` in a thread closing the loop, and
``bmaml-control``'s argument checks. The loop driving the MuJoCo simulator and a simulator
process over UDP need the main package: ``tests/integration/test_deploy_loop.py``.
"""

from __future__ import annotations

import re
import sys
import threading
import time

import numpy as np
import pytest
from deploy_helpers import FakeClock, Peer, RecordingUdpRobot, settle, toy_robot

from bmaml_robot_deploy import Controller, UdpRobot, UdpRobotServer, run_control_loop
from bmaml_robot_deploy.cli import build_parser
from bmaml_robot_deploy.cli import main as control_main
from bmaml_robot_deploy.sim import SimulatedRobot
from bmaml_robot_deploy.udp_wire import ACTION_MAGIC, FLAG_NEW_EPISODE, FLAG_WATCHDOG, OBS_MAGIC, pack_packet

# --- the loop's timing ------------------------------------------------------------------------


class ScriptedRobot:
    """Observations of zeros; ``send_action`` takes ``durations[tick]`` seconds of fake time and
    records when each tick started (its read)."""

    def __init__(self, clock: FakeClock, durations: list[float], obs_dim: int = 17) -> None:
        self.clock, self.durations, self.obs = clock, durations, np.zeros(obs_dim)
        self.new_episode = False
        self.tick_starts: list[float] = []
        self.actions: list[np.ndarray] = []

    def read_observation(self) -> np.ndarray:
        self.tick_starts.append(self.clock.now)
        return self.obs

    def send_action(self, action: np.ndarray) -> None:
        self.actions.append(action)
        self.clock.now += self.durations[len(self.actions) - 1]

    def close(self) -> None:
        pass


def test_deadline_misses_are_counted_and_the_grid_never_drifts(policies):
    clock = FakeClock()
    period = 0.01
    durations = [0.001] * 12
    durations[5] = 0.025  # tick 5 overruns into slot 7: one miss, slot 6 skipped
    durations[9] = 0.0105  # tick 9 ends just after tick 10's release: one miss, nothing skipped
    robot = ScriptedRobot(clock, durations)
    controller = Controller(policies["mlp"])
    stats = run_control_loop(controller, robot, rate_hz=1 / period, steps=12, spin_s=0, clock=clock, sleep=clock.sleep)
    starts = np.array(robot.tick_starts)
    expected = [0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.08, 0.09, 0.1, 0.1105, 0.12]
    np.testing.assert_allclose(starts, expected, atol=1e-12)  # back on the grid right after overruns
    assert stats.steps == stats.actions == 12
    assert stats.deadline_misses == 2 and stats.skipped_ticks == 1
    assert stats.rate_hz == 100 and stats.observations_missing == 0
    np.testing.assert_allclose(stats.elapsed_s, 0.121, atol=1e-12)


def test_the_default_rate_is_the_files_control_rate(policies):
    clock = FakeClock()
    robot = ScriptedRobot(clock, [0.0] * 5)
    stats = run_control_loop(Controller(policies["mlp"]), robot, steps=5, spin_s=0, clock=clock, sleep=clock.sleep)
    assert stats.rate_hz == 20  # control_dt 0.05
    np.testing.assert_allclose(robot.tick_starts, [0.0, 0.05, 0.1, 0.15, 0.2], atol=1e-12)


def test_without_realtime_ticks_run_back_to_back(policies):
    clock = FakeClock()
    robot = ScriptedRobot(clock, [0.002] * 4)
    stats = run_control_loop(Controller(policies["mlp"]), robot, steps=4, realtime=False, clock=clock, sleep=clock.sleep)
    np.testing.assert_allclose(robot.tick_starts, [0.0, 0.002, 0.004, 0.006], atol=1e-12)
    assert stats.rate_hz is None and stats.deadline_misses == 0


class SlowRobot(ScriptedRobot):
    """A real robot that needs 15 ms per action (the loop runs at 100 Hz)."""

    def send_action(self, action: np.ndarray) -> None:
        self.actions.append(action)
        time.sleep(0.015)


def test_a_slow_robot_misses_every_deadline_in_real_time(policies):
    robot = SlowRobot(FakeClock(), [])
    stats = run_control_loop(Controller(policies["mlp"]), robot, rate_hz=100, steps=8)
    assert stats.deadline_misses == 8 and stats.actions == 8
    assert stats.elapsed_s >= 8 * 0.015
    assert stats.act_latency_p50_us > 0 and stats.tick_latency_p99_us >= 15000


def test_a_paced_loop_keeps_its_rate(policies):
    robot = ScriptedRobot(FakeClock(), [0.0] * 20)
    robot.read_observation = lambda: robot.obs  # noqa: E731 (real time here)
    stats = run_control_loop(Controller(policies["mlp"]), robot, rate_hz=200, steps=20)
    # 20 ticks at 200 Hz: the last starts at 95 ms; sleeping may overshoot, never undershoot.
    assert 0.095 <= stats.elapsed_s < 0.5


def test_bad_loop_arguments(policies):
    controller = Controller(policies["mlp"])
    robot = ScriptedRobot(FakeClock(), [0.0])
    for kwargs, message in [
        (dict(rate_hz=0), r"rate_hz: expected a finite number > 0, got 0"),
        (dict(rate_hz=float("nan")), r"rate_hz: expected a finite number > 0"),
        (dict(steps=-1), r"steps: expected an integer >= 0 or None, got -1"),
        (dict(max_episodes=0), r"max_episodes: expected an integer >= 1 or None, got 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            run_control_loop(controller, robot, **kwargs)


def test_the_simulator_says_what_to_install_without_the_main_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "bmaml_robot", None)
    with pytest.raises(ImportError, match=r"needs the main package bmaml_robot.*pip install bmaml-robot"):
        SimulatedRobot("HalfCheetahDir", {"direction": 1.0})


# --- the UDP bridge: packets and watchdog ---------------------------------------------------------


def test_packets_malformed_stale_superseded_and_duplicated():
    fake = Peer()
    # Jumps of 2**31 below are fine here: the bound on them is tested on its own.
    with UdpRobot(17, 6, bind=("127.0.0.1", 0), receive_timeout=0, watchdog_timeout=60, max_sequence_jump=2**31 - 1) as robot:
        to = robot.address
        obs = np.arange(17, dtype=np.float32)
        fake.send(b"short", to)
        fake.send(pack_packet(ACTION_MAGIC, 1, obs), to)  # wrong magic
        fake.send(pack_packet(OBS_MAGIC, 1, obs[:16]), to)  # wrong dim
        fake.send(pack_packet(OBS_MAGIC, 1, obs) + b"\0", to)  # wrong length
        fake.send(pack_packet(OBS_MAGIC, 5, obs, FLAG_NEW_EPISODE), to)
        settle()
        got = robot.read_observation()
        assert np.array_equal(got, obs) and robot.new_episode
        assert robot.dropped_malformed == 4 and robot.observations_received == 1
        robot.send_action(np.full(6, 0.25))
        sequence, flags, action = fake.receive_action()
        assert (sequence, flags) == (5, 0) and np.array_equal(action, np.full(6, 0.25, np.float32))
        # A stale packet is dropped; a duplicate of the last one makes us re-send our action.
        fake.send(pack_packet(OBS_MAGIC, 3, obs), to)
        fake.send(pack_packet(OBS_MAGIC, 5, obs), to)
        settle()
        assert robot.read_observation() is None
        assert robot.dropped_stale == 2 and robot.actions_resent == 1
        sequence, flags, action = fake.receive_action()
        assert (sequence, flags) == (5, 0) and np.array_equal(action, np.full(6, 0.25, np.float32))
        # Two new ones queued: the newest wins, the episode start of the older one is kept.
        fake.send(pack_packet(OBS_MAGIC, 6, obs + 1, FLAG_NEW_EPISODE), to)
        fake.send(pack_packet(OBS_MAGIC, 7, obs + 2), to)
        settle()
        got = robot.read_observation()
        assert np.array_equal(got, obs + 2) and robot.new_episode and robot.dropped_superseded == 1
        assert robot.read_observation() is None  # each observation is returned once
        robot.send_action(np.zeros(6))
        assert fake.receive_action()[0] == 7
        # Sequence numbers wrap around: each of these is newer than the one before it.
        for sequence in (2**31 + 6, 2**32 - 1, 0, 1):
            fake.send(pack_packet(OBS_MAGIC, sequence, obs), to)
            settle()
            assert robot.read_observation() is not None, sequence
        fake.send(pack_packet(OBS_MAGIC, 2**32 - 1, obs), to)
        settle()
        assert robot.read_observation() is None and robot.dropped_stale == 3
    fake.close()


def test_packets_from_another_sender_are_dropped():
    robot_side, stranger = Peer(), Peer()
    with UdpRobot(17, 6, bind=("127.0.0.1", 0), robot_address=robot_side.sock.getsockname(), receive_timeout=0) as robot:
        stranger.send(pack_packet(OBS_MAGIC, 1, np.zeros(17)), robot.address)
        settle()
        assert robot.read_observation() is None and robot.dropped_unknown_sender == 1
        robot_side.send(pack_packet(OBS_MAGIC, 1, np.ones(17)), robot.address)
        settle()
        assert np.array_equal(robot.read_observation(), np.ones(17))
    robot_side.close()
    stranger.close()


def test_the_watchdog_sends_the_safe_action_when_observations_stop():
    clock = FakeClock()
    fake = Peer()
    safe = np.array([0.1, -0.1, 0, 0, 0, 0.5], np.float32)
    with UdpRobot(17, 6, bind=("127.0.0.1", 0), safe_action=safe, watchdog_timeout=0.1, receive_timeout=0,
                  clock=clock) as robot:
        assert robot.read_observation() is None and robot.watchdog_trips == 0  # not armed yet
        fake.send(pack_packet(OBS_MAGIC, 41, np.zeros(17)), robot.address)
        settle()
        assert robot.read_observation() is not None
        clock.now = 0.09
        assert robot.read_observation() is None and robot.watchdog_trips == 0 and fake.nothing_received()
        clock.now = 0.11
        assert robot.read_observation() is None and robot.watchdog_trips == 1 and robot.watchdog_tripped
        sequence, flags, action = fake.receive_action()
        assert sequence == 41 and flags == FLAG_WATCHDOG and np.array_equal(action, safe)
        clock.now = 0.2
        assert robot.read_observation() is None and robot.watchdog_trips == 1 and robot.watchdog_actions == 2
        fake.receive_action()
        # The robot comes back (restarted: its sequence starts again) and is accepted.
        fake.send(pack_packet(OBS_MAGIC, 1, np.ones(17)), robot.address)
        settle()
        assert np.array_equal(robot.read_observation(), np.ones(17)) and not robot.watchdog_tripped
    fake.close()


def test_bad_udp_arguments():
    with pytest.raises(ValueError, match=r"obs_dim: expected an integer in \[1, 65535\], got 0"):
        UdpRobot(0, 6)
    with pytest.raises(ValueError, match=r"safe_action: expected 6 finite numbers"):
        UdpRobot(17, 6, safe_action=[0.0] * 5)
    with pytest.raises(ValueError, match=r"watchdog_timeout: expected seconds >= 0, got -1"):
        UdpRobot(17, 6, watchdog_timeout=-1)
    with pytest.raises(ValueError, match=r"bind: cannot bind UDP"):
        UdpRobot(17, 6, bind=("192.0.2.1", 0))  # TEST-NET: not an address of this machine


# --- the UDP bridge: closing the loop -------------------------------------------------------------


def test_a_robot_thread_with_episodes_resets_the_controller(policies):
    """A numpy toy robot (obs = previous obs * 0.9 + action padded) served by UdpRobotServer in
    a thread, 2 episodes of 8 steps: the controller's actions equal a direct rollout's with a
    reset at the episode start."""
    controller = Controller(policies["gru"])
    robot = RecordingUdpRobot.for_controller(controller, bind=("127.0.0.1", 0), watchdog_timeout=5, receive_timeout=2)
    reset, step = toy_robot(episode_steps=8)
    server = UdpRobotServer(robot.address, 17, 6, action_timeout=5)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("stats", server.run(reset, step, episodes=2)))
    thread.start()
    assert robot.wait_for_robot(10)
    stats = run_control_loop(controller, robot, realtime=False, steps=16)
    thread.join(10)
    server.close()
    robot.close()
    served = result["stats"]
    assert served.steps == 16 and served.episodes == 2 and served.episode_lengths == [8, 8]
    assert stats.actions == 16 and stats.episodes == 1 and stats.observations_missing == 0
    assert np.array_equal(np.stack(served.actions), np.stack(robot.sent))
    # Replay: a fresh controller, reset at the second episode, gives the same actions.
    replay = Controller(policies["gru"])
    expected = []
    for t, obs in enumerate(served.observations):
        if t == 8:
            replay.reset()
        expected.append(replay.act(obs))
    assert np.array_equal(np.stack(expected), np.stack(robot.sent))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--link", "tcp"], r"argument --link: invalid choice: 'tcp'"),
        (["--link", "sim", "--steps", "-1"], r"--steps: expected an integer >= 0, got -1"),
        (["--link", "sim", "--steps", "0"], r"--steps: 0 \(no limit\) needs --episodes"),
        (["--link", "udp", "--udp-bind", "9870"], r"--udp-bind: expected HOST:PORT, got '9870'"),
        (["--link", "udp", "--udp-robot", "robot:port"], r"--udp-robot: expected HOST:PORT with an integer port"),
        (["--link", "sim", "--safe-action", "0,0,0"], r"--safe-action: expected 6 finite numbers"),
        (["--link", "sim", "--safe-action", "a,b"], r"--safe-action: expected comma-separated numbers"),
        (["--link", "sim", "--rate-hz", "0"], r"--rate-hz: expected a number > 0, got 0.0"),
        (["--link", "sim", "--max-episode-steps", "0"], r"--max-episode-steps: expected an integer >= 1, got 0"),
        (["--link", "sim", "--expected-robot", "Ant"], r"this policy is for robot 'HalfCheetah', expected 'Ant'"),
    ],
)
def test_bmaml_control_usage_errors(policies, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        control_main([policies["mlp"], *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: bmaml-control") and re.search(message, err), err


def test_bmaml_control_usage_error_for_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(SystemExit):
        control_main([str(bad), "--link", "sim"])
    assert f"{bad}: not a loadable ONNX model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        control_main([str(tmp_path / "missing.onnx"), "--link", "sim"])
    assert "no such policy file" in capsys.readouterr().err


def test_bmaml_control_gives_up_when_no_robot_answers(policies, capsys):
    assert control_main([policies["mlp"], "--link", "udp", "--udp-bind", "127.0.0.1:0", "--wait-for-robot", "0.1"]) == 1
    assert "no observation from the robot within 0.1 s" in capsys.readouterr().err


def test_the_link_option_and_its_deprecated_old_name(policies, capsys):
    """--link names how the controller reaches the robot (--expected-robot names the robot's
    body); --robot, its old name, still works and says so on stderr."""
    parser = build_parser()
    args = parser.parse_args([policies["mlp"], "--link", "udp"])
    assert args.link == "udp" and capsys.readouterr().err == ""
    args = parser.parse_args([policies["mlp"], "--robot", "sim"])
    assert args.link == args.robot == "sim"
    assert "--robot is deprecated, use --link sim" in capsys.readouterr().err
    assert not re.search(r"[\s\[]--robot\b", parser.format_help())  # not advertised any more
    for argv, message in [
        ([], r"one of the arguments --link is required"),
        (["--link", "sim", "--robot", "udp"], r"argument --robot: not allowed with argument --link"),
        (["--robot", "tcp"], r"argument --robot: invalid choice: 'tcp'"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([policies["mlp"], *argv])
        assert exit_info.value.code == 2 and re.search(message, capsys.readouterr().err)
    # The old spelling runs the same loop as the new one.
    assert control_main([policies["mlp"], "--robot", "udp", "--udp-bind", "127.0.0.1:0", "--wait-for-robot", "0.1"]) == 1
    err = capsys.readouterr().err
    assert "--robot is deprecated, use --link udp" in err and "no observation from the robot within 0.1 s" in err
