"""The UDP robot link under attack, on 127.0.0.1: the controller talks only to its robot (pinned
address), gives the safe action on anything it cannot trust, and counts it.

- a stranger (another source address) can neither feed observations nor receive actions;
- a sequence number far ahead is dropped and does not make the real stream look stale;
- with a shared key (HMAC-SHA256 tags): tampered packets (one bit flipped), replayed or older
  ones (also after the watchdog fired) and packets signed with another key are dropped;
- closing the loop with a robot thread while an attacker injects such packets: the robot only
  ever applies actions computed from its own observations, and each injected packet is counted;
- ``bmaml-control`` and ``python -m bmaml_robot_deploy.udp_sim`` with ``--udp-key-file`` (the
  two closing the loop with the MuJoCo robot need the main package: in
  ``tests/integration/test_deploy_loop.py``).
"""

from __future__ import annotations

import re
import socket
import threading
import time

import numpy as np
import pytest
from deploy_helpers import (
    KEY,
    OTHER_KEY,
    FakeClock,
    Peer,
    RecordingUdpRobot,
    free_port,
    settle,
    toy_robot,
)

from bmaml_robot_deploy import Controller, UdpRobot, UdpRobotServer, run_control_loop
from bmaml_robot_deploy.cli import main as control_main
from bmaml_robot_deploy.udp_server import ServerStats
from bmaml_robot_deploy.udp_wire import (
    ACTION_MAGIC,
    FLAG_AUTHENTICATED,
    FLAG_NEW_EPISODE,
    FLAG_WATCHDOG,
    HELLO_MAGIC,
    OBS_MAGIC,
    WELCOME_MAGIC,
    new_nonce,
    pack_handshake,
    pack_packet,
    parse_handshake,
    session_key,
)


@pytest.fixture(scope="module")
def gru_policy(policies: dict[str, str]) -> str:
    """A toy HalfCheetahDir GRU (obs 17, act 6): forged observations would change its state."""
    return policies["gru"]


# --- pinning --------------------------------------------------------------------------------------


def test_without_an_address_the_first_valid_sender_is_pinned():
    """With the default robot_address=None, actions used to go to whoever sent the last
    observation: one packet from any host took the robot over."""
    robot_side, stranger = Peer(), Peer()
    with UdpRobot(17, 6, bind=("127.0.0.1", 0), receive_timeout=0, watchdog_timeout=60) as robot:
        assert robot.robot_address is None
        stranger.sock.sendto(b"garbage", robot.address)  # not a valid packet: pins nothing
        settle()
        assert robot.read_observation() is None and robot.robot_address is None and robot.dropped_malformed == 1
        robot_side.send_obs(robot.address, 1, np.ones(17), FLAG_NEW_EPISODE)
        settle()
        assert np.array_equal(robot.read_observation(), np.ones(17)) and robot.robot_address == robot_side.address
        robot.send_action(np.full(6, 0.25))
        assert robot_side.receive_action()[0] == 1
        # The stranger's well-formed, newer observations are dropped and counted; it gets nothing.
        for sequence in (2, 3, 1000):
            stranger.send_obs(robot.address, sequence, np.full(17, 9.0), FLAG_NEW_EPISODE)
        settle()
        assert robot.read_observation() is None and robot.dropped_unknown_sender == 3
        robot.send_action(np.full(6, 0.5))  # answers the robot's observation 1, to the robot
        assert robot_side.receive_action()[0] == 1 and stranger.nothing_received()
        # The real stream goes on as if nothing happened.
        robot_side.send_obs(robot.address, 2, np.full(17, 2.0))
        settle()
        assert np.array_equal(robot.read_observation(), np.full(17, 2.0)) and not robot.new_episode
        assert robot.counters()["dropped_unknown_sender"] == 3 and robot.observations_received == 2
    robot_side.close()
    stranger.close()


# --- sequence jumps -------------------------------------------------------------------------------


def test_a_sequence_far_ahead_is_dropped_and_does_not_silence_the_real_stream():
    """One packet with sequence last + 10**6 used to be accepted, and every real observation
    after it dropped as stale until the watchdog fired."""
    robot_side = Peer()
    clock = FakeClock()
    with UdpRobot(17, 6, bind=("127.0.0.1", 0), robot_address=robot_side.address, receive_timeout=0,
                  watchdog_timeout=0.1, max_sequence_jump=10, clock=clock) as robot:
        robot_side.send_obs(robot.address, 5, np.ones(17))
        settle()
        assert robot.read_observation() is not None
        robot_side.send_obs(robot.address, 5 + 10**6, np.full(17, 9.0), FLAG_NEW_EPISODE)  # forged source
        robot_side.send_obs(robot.address, 16, np.full(17, 9.0))  # 11 ahead: past the bound of 10
        settle()
        assert robot.read_observation() is None and robot.dropped_sequence_jump == 2
        robot_side.send_obs(robot.address, 6, np.full(17, 6.0))
        settle()
        assert np.array_equal(robot.read_observation(), np.full(17, 6.0)) and not robot.new_episode
        robot_side.send_obs(robot.address, 16, np.full(17, 16.0))  # 10 ahead: within the bound (losses)
        settle()
        assert np.array_equal(robot.read_observation(), np.full(17, 16.0))
        assert robot.dropped_stale == 0 and robot.counters()["dropped_sequence_jump"] == 2
        # After an outage the watchdog reports, a jump is a restart or the robot's own count: accepted.
        clock.now = 1.0
        assert robot.read_observation() is None and robot.watchdog_trips == 1
        robot_side.send_obs(robot.address, 10**6, np.full(17, 7.0))
        settle()
        assert np.array_equal(robot.read_observation(), np.full(17, 7.0))
    robot_side.close()


# --- authentication -------------------------------------------------------------------------------


def test_replayed_and_older_authenticated_packets_are_dropped_even_after_the_watchdog():
    robot_side = Peer(KEY)
    clock = FakeClock()
    with UdpRobot(17, 6, bind=("127.0.0.1", 0), key=KEY, receive_timeout=0, watchdog_timeout=0.1, clock=clock) as robot:
        assert robot.authenticated
        robot_side.handshake(robot)
        recorded = {s: robot_side.send_obs(robot.address, s, np.full(17, float(s))) for s in (10, 11)}
        settle()
        assert np.array_equal(robot.read_observation(), np.full(17, 11.0)) and robot.dropped_superseded == 1
        robot.send_action(np.full(6, 0.5))
        sequence, flags, _ = robot_side.receive_action()
        assert sequence == 11 and flags == FLAG_AUTHENTICATED
        robot_side.sock.sendto(recorded[10], robot.address)  # replays, from the robot's address
        settle()
        assert robot.read_observation() is None and robot.dropped_stale == 1
        # The watchdog fires; without a key the next packet would be accepted whatever its
        # sequence: with one, replays stay replays.
        clock.now = 1.0
        assert robot.read_observation() is None and robot.watchdog_tripped
        sequence, flags, action = robot_side.receive_action()
        assert flags == FLAG_WATCHDOG | FLAG_AUTHENTICATED and np.array_equal(action, np.zeros(6))
        robot_side.sock.sendto(recorded[10], robot.address)
        robot_side.sock.sendto(recorded[11], robot.address)  # the last accepted one: our action is re-sent
        settle()
        assert robot.read_observation() is None and robot.dropped_stale == 3 and robot.observations_received == 2
        robot_side.receive_action()  # the re-sent action of observation 11 (the robot ignores it: it has it)
        # Within the session, starting over at 1 is refused; far ahead after the watchdog is fine.
        robot_side.send_obs(robot.address, 1, np.ones(17))
        settle()
        assert robot.read_observation() is None and robot.dropped_stale == 4
        robot_side.send_obs(robot.address, 5000, np.full(17, 3.0))
        settle()
        assert np.array_equal(robot.read_observation(), np.full(17, 3.0)) and not robot.watchdog_tripped
        # A restarted robot starts a new session (handshake) and may start over at 1.
        robot_side.handshake(robot)
        robot_side.send_obs(robot.address, 1, np.ones(17))
        settle()
        assert np.array_equal(robot.read_observation(), np.ones(17)) and robot.sessions == 2
    robot_side.close()


@pytest.mark.parametrize(
    ("robot_key", "controller_key"),
    [(OTHER_KEY, KEY), (None, KEY), (KEY, None)],
    ids=["wrong key", "robot without key", "controller without key"],
)
def test_a_wrong_or_missing_key_is_rejected(robot_key, controller_key):
    """Nothing is accepted, nothing pinned, nothing sent back; every packet is counted."""
    robot_side = Peer(robot_key)
    with UdpRobot(17, 6, bind=("127.0.0.1", 0), key=controller_key, receive_timeout=0, watchdog_timeout=0) as robot:
        for sequence in range(1, 6):
            robot_side.send_obs(robot.address, sequence, np.ones(17), FLAG_NEW_EPISODE)
        assert not robot.wait_for_robot(0.2)
        assert robot.read_observation() is None and robot.robot_address is None
        assert robot.dropped_unauthenticated == 5 and robot.observations_received == 0
        robot.send_action(np.ones(6))
        assert robot.actions_sent == 0 and robot_side.nothing_received()
    robot_side.close()


def test_a_tampered_packet_is_dropped_and_the_real_one_is_taken():
    robot_side = Peer(KEY)
    with UdpRobot(17, 6, bind=("127.0.0.1", 0), key=KEY, receive_timeout=0, watchdog_timeout=60) as robot:
        robot_side.handshake(robot)
        robot_side.send_obs(robot.address, 1, np.ones(17))
        settle()
        robot.read_observation()
        real = pack_packet(OBS_MAGIC, 2, np.full(17, 2.0), key=robot_side.session)
        for byte in (5, 11, 20, len(real) - 1):  # sequence, flags, payload, tag
            tampered = bytearray(real)
            tampered[byte] ^= 0x10
            robot_side.sock.sendto(bytes(tampered), robot.address)
        settle()
        assert robot.read_observation() is None and robot.dropped_unauthenticated == 4
        robot_side.sock.sendto(real, robot.address)
        settle()
        assert np.array_equal(robot.read_observation(), np.full(17, 2.0)) and robot.dropped_stale == 0
    robot_side.close()


# --- closing the loop under attack ----------------------------------------------------------------


class AttackedServer(UdpRobotServer):
    """The reference robot, with an attacker that, before each real observation but the first
    (before it, a forged sender would be the one pinned, and a jump could not be told from the
    robot's own start: give ``robot_address`` or a key where that matters), injects forged
    packets: ``spoofed`` (valid ones, even signed with the key, from another address: a host on
    the network), and, from the robot's own address (a forged source address), ``jump`` (sequence
    far ahead), ``replayed`` (the robot's packet of two steps ago, and of the last step) and
    ``tampered`` (the real packet with one random bit flipped)."""

    def __init__(self, attack: str, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.attack = attack
        self.injected = 0
        self.sent: list[bytes] = []
        self.stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.stranger.bind(("127.0.0.1", 0))
        self.rng = np.random.default_rng(0)

    def send_observation(self, obs: np.ndarray, *, sequence: int, flags: int = 0) -> bytes:
        forged = np.full(self.obs_dim, 50.0, np.float32)
        to = self.controller_address
        if not self.sent:
            pass
        elif self.attack == "spoofed":
            for s in (sequence, sequence + 1):
                self.stranger.sendto(pack_packet(OBS_MAGIC, s, forged, FLAG_NEW_EPISODE, key=self._session), to)
                self.injected += 1
        elif self.attack == "jump":
            self._socket.sendto(pack_packet(OBS_MAGIC, sequence + 10**6, forged, FLAG_NEW_EPISODE, key=self._session), to)
            self.injected += 1
        elif self.attack == "replayed":
            for old in self.sent[-2:]:
                self._socket.sendto(old, to)
                self.injected += 1
        elif self.attack == "tampered":
            real = bytearray(pack_packet(OBS_MAGIC, sequence, obs, flags, key=self._session))
            bit = int(self.rng.integers(8 * len(real)))
            real[bit // 8] ^= 1 << (bit % 8)
            self._socket.sendto(bytes(real), to)
            self.injected += 1
        packet = super().send_observation(obs, sequence=sequence, flags=flags)
        self.sent.append(packet)
        return packet

    def close(self) -> None:
        self.stranger.close()
        super().close()


@pytest.mark.parametrize(
    ("attack", "key", "counter"),
    [
        ("spoofed", None, "dropped_unknown_sender"),
        ("spoofed", KEY, "dropped_unknown_sender"),
        ("jump", None, "dropped_sequence_jump"),
        ("replayed", None, "dropped_stale"),
        ("replayed", KEY, "dropped_stale"),
        ("tampered", KEY, "dropped_unauthenticated+dropped_malformed"),
    ],
)
def test_an_attacker_never_moves_the_robot(gru_policy, attack, key, counter):
    """A toy robot (UdpRobotServer in a thread) closes the loop for 2 episodes of 8 steps while
    the attacker injects packets before every observation. The robot applies exactly the
    actions the controller computed, which are exactly those a fresh controller computes from
    the robot's own observations (the GRU's state never saw a forged one); no action ever
    answers a forged packet; each one is counted."""
    controller = Controller(gru_policy)
    robot = RecordingUdpRobot.for_controller(controller, bind=("127.0.0.1", 0), key=key, watchdog_timeout=5,
                                             receive_timeout=2)
    reset, step = toy_robot(episode_steps=8)
    server = AttackedServer(attack, robot.address, 17, 6, key=key, action_timeout=5)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("stats", server.run(reset, step, episodes=2)))
    thread.start()
    try:
        assert robot.wait_for_robot(10)
        stats = run_control_loop(controller, robot, realtime=False, steps=16)
        thread.join(10)
    finally:
        server.close()
        robot.close()
    assert "stats" in result, "the robot thread did not finish: it got no action for an observation"
    served = result["stats"]
    assert served.steps == 16 and served.episodes == 2 and served.resends == 0
    assert stats.actions == 16 and stats.episodes == 1 and stats.observations_missing == 0
    assert np.array_equal(np.stack(served.actions), np.stack(robot.sent))  # nothing else was sent
    replay = Controller(gru_policy)
    expected = []
    for t, obs in enumerate(served.observations):
        if t == 8:
            replay.reset()
        expected.append(replay.act(obs))
    assert np.array_equal(np.stack(expected), np.stack(robot.sent))
    counted = sum(robot.counters()[name] for name in counter.split("+"))
    assert server.injected > 0 and counted == server.injected
    assert robot.observations_received == 16 and robot.watchdog_trips == 0


# --- the command lines ------------------------------------------------------------------------------


def test_bmaml_control_with_a_key_in_the_environment_and_a_robot_with_another(gru_policy, tmp_path, monkeypatch, capsys):
    """A robot with the wrong key: the controller never hears it (and says so)."""
    monkeypatch.setenv("BMAML_TEST_UDP_KEY", KEY.hex())
    port = free_port()
    peer = Peer(OTHER_KEY)
    stop = threading.Event()

    def robot() -> None:
        sequence = 0
        while not stop.is_set():
            sequence += 1
            peer.send_obs(("127.0.0.1", port), sequence, np.ones(17), FLAG_NEW_EPISODE)
            time.sleep(0.02)

    thread = threading.Thread(target=robot)
    thread.start()
    try:
        code = control_main([gru_policy, "--link", "udp", "--udp-bind", f"127.0.0.1:{port}", "--udp-key-env",
                             "BMAML_TEST_UDP_KEY", "--wait-for-robot", "0.3"])
    finally:
        stop.set()
        thread.join(5)
        peer.close()
    assert code == 1 and "no observation from the robot within 0.3 s" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--udp-key-file", "{missing}"], r"--udp-key-file: cannot read key file"),
        (["--udp-key-file", "{short}"], r"--udp-key-file: key file .*: expected at least 16 bytes \(32 hex digits\), got 4"),
        (["--udp-key-env", "BMAML_NO_SUCH_VARIABLE"], r"--udp-key-env: environment variable 'BMAML_NO_SUCH_VARIABLE' is not set"),
        (["--udp-key-file", "{short}", "--udp-key-env", "X"], r"argument --udp-key-env: not allowed with argument --udp-key-file"),
        (["--udp-robot", "127.0.0.1:0"], r"--udp-robot: expected HOST:PORT with a port in \[1, 65535\]"),
        (["--udp-robot", "127.0.0.1:99999"], r"--udp-robot: expected HOST:PORT with a port in \[0, 65535\]"),
        (["--udp-max-sequence-jump", "0"], r"--udp-max-sequence-jump: expected an integer in \[1, 2147483647\], got 0"),
    ],
)
def test_bmaml_control_key_and_address_usage_errors(gru_policy, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.delenv("BMAML_NO_SUCH_VARIABLE", raising=False)
    (tmp_path / "short.key").write_text("deadbeef")
    args = [a.format(missing=tmp_path / "missing.key", short=tmp_path / "short.key") for a in args]
    with pytest.raises(SystemExit) as exit_info:
        control_main([gru_policy, "--link", "udp", "--udp-bind", "127.0.0.1:0", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: bmaml-control") and re.search(message, err), err
    assert "deadbeef" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--udp-key-file", "{missing}"], r"--udp-key-file: cannot read key file"),
        (["--controller", "127.0.0.1:0"], r"--controller: expected HOST:PORT with a port in \[1, 65535\]"),
        (["--first-sequence", "-1"], r"--first-sequence: expected an integer in \[0, 4294967295\], got -1"),
    ],
)
def test_udp_sim_key_and_address_usage_errors(gru_policy, tmp_path, capsys, args, message):
    from bmaml_robot_deploy import udp_sim

    args = [a.format(missing=tmp_path / "missing.key") for a in args]
    base = ["--policy", gru_policy, "--steps", "1"]
    if "--controller" not in args:
        base += ["--controller", "127.0.0.1:9"]
    with pytest.raises(SystemExit) as exit_info:
        udp_sim.main([*base, *args])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


# --- sessions: a fresh one per start of either side -------------------------------------------------


def serve(robot: UdpRobot, actions: int, until: threading.Thread | None = None, timeout: float = 5.0) -> None:
    """The controller's loop, by hand: answer each observation until ``actions`` were sent."""
    deadline = time.monotonic() + timeout
    while robot.actions_sent < actions and time.monotonic() < deadline and (until is None or until.is_alive()):
        if robot.read_observation() is not None:
            robot.send_action(np.full(6, 0.125))


def run_server(server: UdpRobotServer, steps: int) -> tuple[threading.Thread, dict]:
    result: dict = {}
    reset, step = toy_robot()
    thread = threading.Thread(target=lambda: result.setdefault("stats", server.run(reset, step, steps=steps)))
    thread.start()
    return thread, result


def test_an_action_recorded_in_an_earlier_session_is_never_applied_by_a_restarted_robot():
    """The tag used to cover no session: a robot restarted under the same key (first_sequence=1
    again) took a recorded action packet for sequence 1 and executed it."""
    controller = Peer(KEY)
    recorded = []
    for run in range(2):
        with UdpRobotServer(controller.address, 17, 6, key=KEY, first_sequence=1) as server:
            stats = ServerStats()
            hello = server.start_session()
            assert controller.sock.recvfrom(65536)[0] == hello
            robot_nonce, _ = parse_handshake(hello, HELLO_MAGIC, KEY)
            for old in recorded:  # the earlier session's action, replayed before and after the handshake
                controller.sock.sendto(old, server.address)
            controller_nonce = new_nonce()
            controller.sock.sendto(pack_handshake(WELCOME_MAGIC, KEY, robot_nonce, controller_nonce), server.address)
            assert server.wait_for_session(2.0, stats) and stats.dropped_unauthenticated == len(recorded)
            server.send_observation(np.ones(17), sequence=1)
            assert controller.sock.recvfrom(65536)[0][:4] == b"BMO2"  # version 2: with the reward
            for old in recorded:
                controller.sock.sendto(old, server.address)
            assert server.receive_action(1, 0.2, stats) is None  # never applied
            assert stats.dropped_unauthenticated == 2 * len(recorded) and stats.dropped == 2 * len(recorded)
            real = pack_packet(ACTION_MAGIC, 1, np.full(6, float(run)), key=session_key(KEY, robot_nonce, controller_nonce))
            controller.sock.sendto(real, server.address)
            action, _ = server.receive_action(1, 2.0, stats)
            assert np.array_equal(action, np.full(6, float(run), np.float32))
            recorded.append(real)
    controller.close()


def test_an_observation_recorded_in_an_earlier_session_does_not_stall_a_fresh_controller():
    """A replayed observation with a high sequence used to be accepted first by a restarted
    controller, and the real stream dropped as stale for the whole session."""
    robot_side = Peer(KEY)
    with UdpRobot(17, 6, bind=("127.0.0.1", 0), key=KEY, receive_timeout=0, watchdog_timeout=60) as first:
        robot_side.handshake(first)
        recorded = robot_side.send_obs(first.address, 90, np.full(17, 9.0), FLAG_NEW_EPISODE)
        settle()
        assert first.read_observation() is not None
    with UdpRobot(17, 6, bind=("127.0.0.1", 0), key=KEY, receive_timeout=0, watchdog_timeout=60) as robot:
        robot_side.sock.sendto(recorded, robot.address)  # before any session
        settle()
        assert robot.read_observation() is None and robot.dropped_unauthenticated == 1 and robot.robot_address is None
        robot_side.handshake(robot)
        robot_side.sock.sendto(recorded, robot.address)  # during the new session, first
        for sequence in (1, 2):
            robot_side.send_obs(robot.address, sequence, np.full(17, float(sequence)))
            settle()
            assert np.array_equal(robot.read_observation(), np.full(17, float(sequence)))
        assert robot.dropped_unauthenticated == 2 and robot.dropped_stale == 0 and robot.sessions == 1
    robot_side.close()


def test_tampered_and_replayed_handshake_packets_are_rejected():
    robot_side = Peer(KEY)
    with UdpRobot(17, 6, bind=("127.0.0.1", 0), key=KEY, receive_timeout=0, watchdog_timeout=60) as robot:
        hello = pack_handshake(HELLO_MAGIC, KEY, new_nonce())
        for byte in (4, 12, 30, 50, len(hello) - 1):  # version, robot nonce, controller nonce, tag
            tampered = bytearray(hello)
            tampered[byte] ^= 0x01
            robot_side.sock.sendto(bytes(tampered), robot.address)
        robot_side.sock.sendto(pack_handshake(HELLO_MAGIC, OTHER_KEY, new_nonce()), robot.address)
        settle()
        assert robot.read_observation() is None and robot.dropped_handshake == 6 and robot_side.nothing_received()
    robot_side.close()
    controller = Peer(KEY)
    with UdpRobotServer(controller.address, 17, 6, key=KEY) as server:
        stats = ServerStats()
        old_welcome = pack_handshake(WELCOME_MAGIC, KEY, new_nonce(), new_nonce())  # answers another HELLO
        robot_nonce, _ = parse_handshake(server.start_session(), HELLO_MAGIC, KEY)
        welcome = pack_handshake(WELCOME_MAGIC, KEY, robot_nonce, new_nonce())
        tampered = bytearray(welcome)
        tampered[40] ^= 0x80
        for packet in (old_welcome, bytes(tampered), pack_handshake(WELCOME_MAGIC, OTHER_KEY, robot_nonce, new_nonce())):
            controller.sock.sendto(packet, server.address)
        assert not server.wait_for_session(0.2, stats) and not server.in_session
        assert stats.dropped_handshake == 3
        controller.sock.sendto(welcome, server.address)
        assert server.wait_for_session(2.0, stats) and server.in_session
    controller.close()


def test_a_restarted_robot_and_a_restarted_controller_each_start_a_new_session():
    port = free_port()
    with UdpRobot(17, 6, bind=("127.0.0.1", 0), key=KEY, receive_timeout=0.01, watchdog_timeout=60) as robot:
        for run in range(2):  # the robot restarts (same address, first_sequence=1 again)
            with UdpRobotServer(robot.address, 17, 6, bind=("127.0.0.1", port), key=KEY, action_timeout=0.1) as server:
                thread, result = run_server(server, 3)
                serve(robot, 3 * (run + 1), until=thread)
                thread.join(5)
            assert result["stats"].steps == 3 and result["stats"].sessions == 1
        assert robot.sessions == 2 and robot.observations_received == 6 and robot.dropped_stale == 0
    controller_port = free_port()
    with UdpRobotServer(("127.0.0.1", controller_port), 17, 6, key=KEY, action_timeout=0.1) as server:
        thread, result = run_server(server, 6)
        for _ in range(2):  # the controller restarts: the robot gets no answer twice, and offers a new session
            with UdpRobot(17, 6, bind=("127.0.0.1", controller_port), key=KEY, receive_timeout=0.01,
                          watchdog_timeout=60) as robot:
                serve(robot, 3, until=thread)
                assert robot.sessions == 1 and robot.observations_received == 3
        thread.join(5)
    stats = result["stats"]
    assert stats.steps == 6 and stats.sessions == 2 and len(stats.actions) == 6


@pytest.mark.parametrize("first_sequence", [0, 2**32 - 2])
def test_any_first_sequence_works_with_a_key(first_sequence):
    """first_sequence=0 used to fail before the first packet (the 'used up' sentinel); near
    2**32 the robot starts a new session instead of wrapping."""
    with UdpRobot(17, 6, bind=("127.0.0.1", 0), key=KEY, receive_timeout=0.01, watchdog_timeout=60) as robot:
        with UdpRobotServer(robot.address, 17, 6, key=KEY, first_sequence=first_sequence, action_timeout=0.2) as server:
            thread, result = run_server(server, 4)
            serve(robot, 4, until=thread)
            thread.join(5)
    assert result["stats"].steps == 4
    assert result["stats"].sessions == robot.sessions == (1 if first_sequence == 0 else 2)
