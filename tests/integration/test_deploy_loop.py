"""The deploy runtime's control loop against robots: deadline accounting on a fake clock, the
MuJoCo simulator driven through the loop (same returns as a hand-written rollout), the UDP
bridge (packet checks, watchdog, a robot in a separate process on 127.0.0.1 closing the loop
for an episode) and the ``bmaml-control`` command line.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import bmaml_robot as bm
from bmaml_robot_deploy import Controller, UdpRobot, UdpRobotServer, run_control_loop
from bmaml_robot_deploy.cli import main as control_main
from bmaml_robot_deploy.sim import DEFAULT_MAX_EPISODE_STEPS, SimulatedRobot
from bmaml_robot_deploy.testing import toy_metadata, write_toy_policy
from bmaml_robot_deploy.udp import (
    ACTION_MAGIC,
    FLAG_NEW_EPISODE,
    FLAG_WATCHDOG,
    OBS_MAGIC,
    pack_packet,
    unpack_packet,
)


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Toy HalfCheetahDir policies (obs 17, act 6): an MLP and a GRU."""
    tmp = tmp_path_factory.mktemp("deploy_policies")
    return {
        "mlp": write_toy_policy(tmp / "mlp.onnx", "mlp", hidden_sizes=(32, 32), seed=1)[0],
        "gru": write_toy_policy(tmp / "gru.onnx", "gru", hidden_size=32, seed=2)[0],
    }


# --- the loop's timing ------------------------------------------------------------------------


class FakeClock:
    """Simulated time: ``sleep`` advances it; ``work(seconds)`` too (a robot being slow)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


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


def test_the_simulator_says_what_to_install_without_the_main_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "bmaml_robot", None)
    with pytest.raises(ImportError, match=r"needs the main package bmaml_robot.*pip install bmaml-robot"):
        SimulatedRobot("HalfCheetahDir", {"direction": 1.0})


# --- the UDP bridge: packets and watchdog ---------------------------------------------------------


class FakeRobotSocket:
    """A raw UDP socket playing the robot: sends crafted packets, receives action packets."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(2.0)

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        self.sock.sendto(data, to)

    def receive_action(self, act_dim: int = 6) -> tuple[int, int, np.ndarray]:
        data, _ = self.sock.recvfrom(65536)
        parsed = unpack_packet(data, ACTION_MAGIC, act_dim)
        assert parsed is not None, data
        return parsed

    def nothing_pending(self) -> bool:
        self.sock.settimeout(0.05)
        try:
            self.sock.recvfrom(65536)
            return False
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(2.0)

    def close(self) -> None:
        self.sock.close()


def settle() -> None:
    time.sleep(0.05)  # let datagrams sent on the loopback arrive


def test_packets_malformed_stale_superseded_and_duplicated():
    fake = FakeRobotSocket()
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
    robot_side, stranger = FakeRobotSocket(), FakeRobotSocket()
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
    fake = FakeRobotSocket()
    safe = np.array([0.1, -0.1, 0, 0, 0, 0.5], np.float32)
    with UdpRobot(17, 6, bind=("127.0.0.1", 0), safe_action=safe, watchdog_timeout=0.1, receive_timeout=0,
                  clock=clock) as robot:
        assert robot.read_observation() is None and robot.watchdog_trips == 0  # not armed yet
        fake.send(pack_packet(OBS_MAGIC, 41, np.zeros(17)), robot.address)
        settle()
        assert robot.read_observation() is not None
        clock.now = 0.09
        assert robot.read_observation() is None and robot.watchdog_trips == 0 and fake.nothing_pending()
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


class RecordingUdpRobot(UdpRobot):
    """Remembers every action the controller sent (not the watchdog's)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[np.ndarray] = []

    def send_action(self, action: np.ndarray) -> None:
        self.sent.append(np.array(action, np.float32))
        super().send_action(action)


def test_a_robot_thread_with_episodes_resets_the_controller(policies):
    """A numpy toy robot (obs = previous obs * 0.9 + action padded) served by UdpRobotServer in
    a thread, 2 episodes of 8 steps: the controller's actions equal a direct rollout's with a
    reset at the episode start."""
    controller = Controller(policies["gru"])
    robot = RecordingUdpRobot.for_controller(controller, bind=("127.0.0.1", 0), watchdog_timeout=5, receive_timeout=2)
    state = {"obs": np.zeros(17), "t": 0}

    def reset() -> np.ndarray:
        state["obs"], state["t"] = np.linspace(-1, 1, 17), 0
        return state["obs"]

    def step(action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        state["obs"] = state["obs"] * 0.9 + np.pad(action, (0, 11))
        state["t"] += 1
        return state["obs"], float(action.sum()), False, state["t"] == 8

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


# --- bmaml-control ----------------------------------------------------------------------------------


def test_bmaml_control_runs_the_simulator_and_prints_json(policies, capsys):
    assert control_main([policies["mlp"], "--robot", "sim", "--steps", "30", "--no-realtime", "--max-episode-steps",
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
    assert control_main([policies["mlp"], "--robot", "sim", "--steps", str(steps), "--no-realtime",
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
    assert control_main([with_horizon, "--robot", "sim", "--steps", "0", "--episodes", "2", "--no-realtime",
                         "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["steps"] == 30 and report["episodes"] == 2 and report["partial_episode_return"] is None
    assert "episodes of at most 15 steps" in captured.err
    assert control_main([with_horizon, "--robot", "sim", "--steps", "30", "--max-episode-steps", "10",
                         "--no-realtime", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 3


def test_bmaml_control_prints_a_summary(policies, capsys):
    assert control_main([policies["gru"], "--robot", "sim", "--steps", "5", "--rate-hz", "200"]) == 0
    out = capsys.readouterr().out
    assert "steps 5 (200 Hz" in out and "deadline misses" in out and "act latency p50" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--robot", "tcp"], r"argument --robot: invalid choice: 'tcp'"),
        (["--robot", "sim", "--steps", "-1"], r"--steps: expected an integer >= 0, got -1"),
        (["--robot", "sim", "--steps", "0"], r"--steps: 0 \(no limit\) needs --episodes"),
        (["--robot", "udp", "--udp-bind", "9870"], r"--udp-bind: expected HOST:PORT, got '9870'"),
        (["--robot", "udp", "--udp-robot", "robot:port"], r"--udp-robot: expected HOST:PORT with an integer port"),
        (["--robot", "sim", "--safe-action", "0,0,0"], r"--safe-action: expected 6 finite numbers"),
        (["--robot", "sim", "--safe-action", "a,b"], r"--safe-action: expected comma-separated numbers"),
        (["--robot", "sim", "--rate-hz", "0"], r"--rate-hz: expected a number > 0, got 0.0"),
        (["--robot", "sim", "--max-episode-steps", "0"], r"--max-episode-steps: expected an integer >= 1, got 0"),
        (["--robot", "sim", "--expected-robot", "Ant"], r"this policy is for robot 'HalfCheetah', expected 'Ant'"),
    ],
)
def test_bmaml_control_usage_errors(policies, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        control_main([policies["mlp"], *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: bmaml-control") and __import__("re").search(message, err), err


def test_bmaml_control_usage_error_for_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(SystemExit):
        control_main([str(bad), "--robot", "sim"])
    assert f"{bad}: not a loadable ONNX model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        control_main([str(tmp_path / "missing.onnx"), "--robot", "sim"])
    assert "no such policy file" in capsys.readouterr().err


def test_bmaml_control_gives_up_when_no_robot_answers(policies, capsys):
    assert control_main([policies["mlp"], "--robot", "udp", "--udp-bind", "127.0.0.1:0", "--wait-for-robot", "0.1"]) == 1
    assert "no observation from the robot within 0.1 s" in capsys.readouterr().err
