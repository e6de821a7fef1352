"""Helpers of the deploy runtime's tests, written once: keys, a fake clock, a raw UDP peer (the
robot, the controller or an attacker), sessions, toy policies and a toy robot.

Imported by the tests here (``deploy/tests`` is on ``sys.path`` under pytest) and by those of
the main package's suite that need the main package too (``tests/integration/test_deploy_loop.py``).
Needs only the deploy runtime (and ``onnx`` for the toy policy files).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bmaml_robot_deploy.testing import write_toy_policy
from bmaml_robot_deploy.udp_link import UdpRobot
from bmaml_robot_deploy.udp_wire import (
    ACTION_MAGIC,
    HELLO_MAGIC,
    OBS_MAGIC,
    WELCOME_MAGIC,
    new_nonce,
    pack_handshake,
    pack_packet,
    parse_handshake,
    session_key,
    unpack_packet,
)

#: The shared key of the authenticated tests, and another one (a robot or attacker without it).
KEY = bytes(range(100, 132))
OTHER_KEY = bytes(range(32))

#: Sizes of the toy HalfCheetahDir policies and robots.
OBS_DIM, ACT_DIM = 17, 6


def toy_policies(directory: Path) -> dict[str, str]:
    """Toy HalfCheetahDir policy files (obs 17, act 6) in ``directory``: an MLP and a GRU."""
    return {
        "mlp": write_toy_policy(Path(directory) / "mlp.onnx", "mlp", hidden_sizes=(32, 32), seed=1)[0],
        "gru": write_toy_policy(Path(directory) / "gru.onnx", "gru", hidden_size=32, seed=2)[0],
    }


class FakeClock:
    """Simulated time: ``clock()`` reads it, ``sleep`` advances it (set ``now`` to jump)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


def settle() -> None:
    time.sleep(0.05)  # let datagrams sent on the loopback arrive


def free_port() -> int:
    """A UDP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def open_session(sock: socket.socket, robot: UdpRobot, key: bytes, timeout: float = 2.0) -> bytes:
    """Authenticated mode, the robot's part of the handshake with the controller ``robot``: HELLO
    with a fresh nonce from ``sock``, the controller answers while it reads (no observation comes
    of it), WELCOME parsed (the controller's watchdog packets may come first); returns the
    session key."""
    nonce = new_nonce()
    answered = robot.handshakes_answered
    sock.sendto(pack_handshake(HELLO_MAGIC, key, nonce), robot.address)
    deadline = time.monotonic() + timeout
    while robot.handshakes_answered == answered:
        assert time.monotonic() < deadline, "the controller did not answer the HELLO"
        assert robot.read_observation() is None
    sock.settimeout(timeout)
    welcome = sock.recvfrom(65536)[0]
    while welcome[:4] != b"BMSC":
        welcome = sock.recvfrom(65536)[0]
    nonces = parse_handshake(welcome, WELCOME_MAGIC, key)
    assert nonces is not None and nonces[0] == nonce
    return session_key(key, *nonces)


class Peer:
    """A raw UDP socket on 127.0.0.1: the robot (crafted observation packets, action packets
    received), or an attacker. With ``key``, :meth:`handshake` opens a session and observations
    are tagged under it."""

    def __init__(self, key: bytes | None = None, act_dim: int = ACT_DIM) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(2.0)
        self.key = key
        self.act_dim = act_dim
        self.session: bytes | None = None  # the session key, after handshake()

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()

    def handshake(self, robot: UdpRobot) -> bytes:
        """Open a session with the controller ``robot`` (:func:`open_session`); returns its key,
        used by :meth:`send_obs` from then on."""
        assert self.key is not None
        self.session = open_session(self.sock, robot, self.key)
        self.sock.settimeout(2.0)
        return self.session

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        self.sock.sendto(data, to)

    def send_obs(self, to: tuple[str, int], sequence: int, obs: np.ndarray, flags: int = 0,
                 key: bytes | None | str = "own") -> bytes:
        """An observation packet to ``to``, tagged under our session (or shared) key, or ``key``."""
        own = self.session if self.key is not None and self.session is not None else self.key
        packet = pack_packet(OBS_MAGIC, sequence, obs, flags, key=own if key == "own" else key)
        self.sock.sendto(packet, to)
        return packet

    def receive_action(self) -> tuple[int, int, np.ndarray]:
        """The next action packet, ``(sequence, flags, action)``; it must be valid."""
        data, _ = self.sock.recvfrom(65536)
        parsed = unpack_packet(data, ACTION_MAGIC, self.act_dim, key=self.session if self.key is not None else None)
        assert parsed is not None, data
        return parsed

    def nothing_received(self) -> bool:
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


class RecordingUdpRobot(UdpRobot):
    """Remembers every action the controller computed and sent (not the watchdog's)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[np.ndarray] = []

    def send_action(self, action: np.ndarray) -> None:
        self.sent.append(np.array(action, np.float32))
        super().send_action(action)


def toy_robot(episode_steps: int | None = None) -> tuple[Callable[[], np.ndarray], Callable[[np.ndarray], tuple]]:
    """``(reset, step)`` of a numpy toy robot for ``UdpRobotServer.run``: obs = previous obs * 0.9
    + the action padded to 17, reward the action's sum, episodes of ``episode_steps`` (None: no
    end)."""
    state = {"obs": np.zeros(OBS_DIM), "t": 0}

    def reset() -> np.ndarray:
        state["obs"], state["t"] = np.linspace(-1, 1, OBS_DIM), 0
        return state["obs"]

    def step(action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        state["obs"] = state["obs"] * 0.9 + np.pad(action, (0, OBS_DIM - ACT_DIM))
        state["t"] += 1
        return state["obs"], float(action.sum()), False, state["t"] == episode_steps

    return reset, step
