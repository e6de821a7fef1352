"""UDP bridge between the controller and a robot (a physical robot's computer or a simulator process).

Packet layout (all little-endian, one packet per UDP datagram, 12-byte header + payload):

================  ======  =========================================================================
field             type    meaning
================  ======  =========================================================================
``magic``         u32     observation packet: ``0x424F4D42`` (bytes ``b"BMOB"``);
                          action packet: ``0x43414D42`` (bytes ``b"BMAC"``)
``sequence``      u32     observation: the robot's counter, +1 per new observation (wraps at 2**32);
                          action: the sequence of the observation it answers (echo)
``dim``           u16     number of floats that follow: ``obs_dim`` or ``act_dim``
``flags``         u16     observation: bit 0 ``NEW_EPISODE`` (this observation is the first of an
                          episode: the controller resets its hidden state), bit 1 ``TERMINATED``
                          (with bit 0: the previous episode ended by termination, not a time
                          limit); action: bit 0 ``WATCHDOG`` (the safe action, sent because
                          observations stopped arriving)
payload           f32[]   ``dim`` float32 values: the observation or the action
================  ======  =========================================================================

So an observation packet is ``12 + 4 * obs_dim`` bytes and an action packet ``12 + 4 * act_dim``.
Other bits of ``flags`` are reserved (sent as 0, ignored on receipt).

Protocol. The robot sends an observation packet whenever it has a new observation (typically
once per control period, or in lockstep: after applying each action). The controller side
(:class:`UdpRobot`) reads the newest valid observation at each tick of the control loop and
answers with one action packet carrying the observation's sequence. It drops, and counts,
packets that are malformed (short, wrong magic, wrong ``dim``, wrong length), stale or out of
order (a sequence not newer than the last accepted one, in 32-bit serial-number arithmetic), or
from a sender other than the configured robot address. When an observation with the last
accepted sequence arrives again (the robot re-sent it: our action was lost), the last action
packet is sent again. A watchdog sends the safe action (flag ``WATCHDOG``, sequence of the last
observation) at every tick while no observation has arrived for ``watchdog_timeout`` seconds
(default two control periods), and counts each time it fires. After the watchdog fired, the next
well-formed observation is accepted whatever its sequence (the robot may have restarted).

The robot side (:class:`UdpRobotServer`) is a reference for firmware authors and what the tests
use: it wraps any ``reset()``/``step(action)`` pair, sends observations, waits for the action
that answers each one (re-sending the observation after ``action_timeout``) and steps.
"""

from __future__ import annotations

import dataclasses
import math
import select
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

OBS_MAGIC = int.from_bytes(b"BMOB", "little")  # 0x424F4D42
ACTION_MAGIC = int.from_bytes(b"BMAC", "little")  # 0x43414D42
HEADER = struct.Struct("<IIHH")  # magic, sequence, dim, flags
HEADER_SIZE = HEADER.size  # 12

FLAG_NEW_EPISODE = 1 << 0
FLAG_TERMINATED = 1 << 1
FLAG_WATCHDOG = 1 << 0

_MAX_DIM = 0xFFFF
_SEQ_MOD = 1 << 32


def pack_packet(magic: int, sequence: int, values: np.ndarray | Sequence[float], flags: int = 0) -> bytes:
    """One packet: header + ``values`` as float32 (``[dim]``)."""
    payload = np.ascontiguousarray(values, dtype="<f4").reshape(-1)
    return HEADER.pack(magic, sequence % _SEQ_MOD, payload.size, flags) + payload.tobytes()


def unpack_packet(data: bytes | bytearray | memoryview, magic: int, dim: int) -> tuple[int, int, np.ndarray] | None:
    """``(sequence, flags, values float32 [dim])`` of a well-formed packet with this ``magic`` and
    ``dim``; None for anything else."""
    if len(data) != HEADER_SIZE + 4 * dim:
        return None
    got_magic, sequence, got_dim, flags = HEADER.unpack_from(data)
    if got_magic != magic or got_dim != dim:
        return None
    return sequence, flags, np.frombuffer(data, "<f4", dim, HEADER_SIZE).astype(np.float32)


def is_newer(sequence: int, last: int) -> bool:
    """Serial-number order: ``sequence`` comes after ``last`` (within half the 32-bit range)."""
    return 0 < (sequence - last) % _SEQ_MOD < _SEQ_MOD // 2


def parse_address(text: str, name: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> ``(host, port)``; ``ValueError`` naming ``name``."""
    if not isinstance(text, str) or ":" not in text:
        raise ValueError(f"{name}: expected HOST:PORT, got {text!r}")
    host, _, port_text = text.rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{name}: expected HOST:PORT with an integer port, got {text!r}") from None
    if not host or not 0 <= port <= 65535:
        raise ValueError(f"{name}: expected HOST:PORT with a port in [0, 65535], got {text!r}")
    return host, port


def _check_dim(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= _MAX_DIM:
        raise ValueError(f"{name}: expected an integer in [1, {_MAX_DIM}], got {value!r}")
    return int(value)


def _check_seconds(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: expected seconds >= 0, got {value!r}")
    return float(value)


def _resolve(address: tuple[str, int], name: str) -> tuple[str, int]:
    try:
        return socket.gethostbyname(address[0]), int(address[1])
    except OSError as error:
        raise ValueError(f"{name}: cannot resolve host {address[0]!r} ({error})") from None


class UdpRobot:
    """The controller side of the UDP bridge: a :class:`~bmaml_robot_deploy.loop.Robot`.

    Args:
        obs_dim, act_dim: sizes of the observation and action packets.
        bind: local ``(host, port)`` to receive observations on (port 0: any free port; see
            ``address``).
        robot_address: ``(host, port)`` to send actions to, and the only sender whose packets
            are accepted; None: reply to whoever sent the last accepted observation.
        safe_action: sent by the watchdog, ``[act_dim]`` (default zeros).
        watchdog_timeout: seconds without a new observation before the watchdog sends the safe action.
        receive_timeout: how long ``read_observation`` waits for a new observation when none is
            queued (seconds; keep it below the control period when pacing in real time).

    Counters (attributes): ``observations_received``, ``actions_sent``, ``actions_resent``,
    ``dropped_malformed``, ``dropped_stale``, ``dropped_superseded`` (valid but a newer one was
    queued behind it), ``dropped_unknown_sender``, ``watchdog_trips`` (times it fired),
    ``watchdog_actions`` (safe actions it sent).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        *,
        bind: tuple[str, int] = ("0.0.0.0", 0),
        robot_address: tuple[str, int] | None = None,
        safe_action: Sequence[float] | np.ndarray | None = None,
        watchdog_timeout: float = 0.1,
        receive_timeout: float = 0.025,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.obs_dim = _check_dim(obs_dim, "obs_dim")
        self.act_dim = _check_dim(act_dim, "act_dim")
        self.watchdog_timeout = _check_seconds(watchdog_timeout, "watchdog_timeout")
        self.receive_timeout = _check_seconds(receive_timeout, "receive_timeout")
        if safe_action is None:
            safe = np.zeros(self.act_dim, np.float32)
        else:
            safe = np.asarray(safe_action, np.float32)
            if safe.shape != (self.act_dim,) or not np.all(np.isfinite(safe)):
                raise ValueError(f"safe_action: expected {self.act_dim} finite numbers, got {safe_action!r}")
        self.safe_action = safe
        self.robot_address = None if robot_address is None else _resolve(robot_address, "robot_address")
        self._clock = clock
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._socket.bind(bind)
        except (OSError, OverflowError, TypeError) as error:
            self._socket.close()
            raise ValueError(f"bind: cannot bind UDP {bind!r} ({error})") from None
        self._socket.setblocking(False)
        self._obs_size = HEADER_SIZE + 4 * self.obs_dim
        self._receive = bytearray(max(65536, self._obs_size + 1))
        self._receive_view = memoryview(self._receive)
        self._obs = np.zeros(self.obs_dim, np.float32)
        self._action_packet = bytearray(HEADER_SIZE + 4 * self.act_dim)
        self._action_values = np.frombuffer(self._action_packet, "<f4", self.act_dim, HEADER_SIZE)
        self._watchdog_packet = bytearray(self._action_packet)
        self._last_sequence: int | None = None
        self._last_sender: tuple[str, int] | None = self.robot_address
        self._last_obs_time: float | None = None
        self._answered_sequence: int | None = None  # sequence of the last action packet sent
        self._pending = False  # an accepted observation not yet returned by read_observation
        self._pending_flags = 0
        self.new_episode = False
        self.watchdog_tripped = False
        self.observations_received = 0
        self.actions_sent = 0
        self.actions_resent = 0
        self.dropped_malformed = 0
        self.dropped_stale = 0
        self.dropped_superseded = 0
        self.dropped_unknown_sender = 0
        self.watchdog_trips = 0
        self.watchdog_actions = 0

    @classmethod
    def for_controller(cls, controller: Any, **kwargs: Any) -> UdpRobot:
        """Sizes and safe action from ``controller``; ``watchdog_timeout`` two control periods and
        ``receive_timeout`` half a period unless given; other ``kwargs`` as in the constructor."""
        dt = float(controller.control_dt)
        kwargs.setdefault("watchdog_timeout", 2 * dt)
        kwargs.setdefault("receive_timeout", 0.5 * dt)
        kwargs.setdefault("safe_action", controller.safe_action)
        return cls(controller.obs_dim, controller.act_dim, **kwargs)

    @property
    def address(self) -> tuple[str, int]:
        """The local ``(host, port)`` observations are received on."""
        return self._socket.getsockname()

    # -- Robot interface -------------------------------------------------------------------------

    def read_observation(self) -> np.ndarray | None:
        """The newest observation not returned yet (float32 ``[obs_dim]``, a buffer reused by the
        next read), waiting up to ``receive_timeout`` for one; None if none came (the watchdog
        then checks how long it has been)."""
        self._drain()
        if not self._pending and self.receive_timeout > 0:
            deadline = self._clock() + self.receive_timeout
            while not self._pending:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                readable, _, _ = select.select([self._socket], [], [], remaining)
                if readable:
                    self._drain()
        if self._pending:
            self._pending = False
            self.new_episode = bool(self._pending_flags & FLAG_NEW_EPISODE)
            self.watchdog_tripped = False
            return self._obs
        self.new_episode = False
        self._check_watchdog()
        return None

    def send_action(self, action: np.ndarray) -> None:
        """Send ``action`` ``[act_dim]`` answering the last observation."""
        if self._last_sequence is None or self._last_sender is None:
            return  # nobody to answer yet
        self._action_values[...] = action
        HEADER.pack_into(self._action_packet, 0, ACTION_MAGIC, self._last_sequence, self.act_dim, 0)
        self._send(self._action_packet)
        self._answered_sequence = self._last_sequence
        self.actions_sent += 1

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> UdpRobot:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- helpers ---------------------------------------------------------------------------------

    def wait_for_robot(self, timeout: float) -> bool:
        """Block until the first valid observation arrives (kept for the next read) or
        ``timeout`` seconds pass; True if one arrived."""
        deadline = self._clock() + _check_seconds(timeout, "timeout")
        self._drain()
        while not self._pending:
            remaining = deadline - self._clock()
            if remaining <= 0:
                return False
            readable, _, _ = select.select([self._socket], [], [], remaining)
            if readable:
                self._drain()
        return True

    def counters(self) -> dict[str, int]:
        """Every counter, by name."""
        names = (
            "observations_received", "actions_sent", "actions_resent", "dropped_malformed", "dropped_stale",
            "dropped_superseded", "dropped_unknown_sender", "watchdog_trips", "watchdog_actions",
        )
        return {name: getattr(self, name) for name in names}

    def _drain(self) -> None:
        """Read every queued datagram; keep the newest acceptable observation."""
        while True:
            try:
                size, sender = self._socket.recvfrom_into(self._receive)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:  # ICMP port unreachable from an earlier send (Linux)
                continue
            self._accept(size, sender)

    def _accept(self, size: int, sender: tuple[str, int]) -> None:
        if self.robot_address is not None and sender != self.robot_address:
            self.dropped_unknown_sender += 1
            return
        if size != self._obs_size:
            self.dropped_malformed += 1
            return
        magic, sequence, dim, flags = HEADER.unpack_from(self._receive)
        if magic != OBS_MAGIC or dim != self.obs_dim:
            self.dropped_malformed += 1
            return
        resync = self._last_sequence is None or self.watchdog_tripped
        if not resync and not is_newer(sequence, self._last_sequence):
            self.dropped_stale += 1
            if sequence == self._last_sequence and self._answered_sequence == sequence:
                self._send(self._action_packet)  # the robot re-sent: our action was lost
                self.actions_resent += 1
            return
        if self._pending:
            self.dropped_superseded += 1
            flags |= self._pending_flags & FLAG_NEW_EPISODE  # an unread episode start still counts
        self._obs[...] = np.frombuffer(self._receive, "<f4", self.obs_dim, HEADER_SIZE)
        self._last_sequence = sequence
        self._last_sender = sender if self.robot_address is None else self.robot_address
        self._last_obs_time = self._clock()
        self._pending = True
        self._pending_flags = flags
        self.observations_received += 1
        self.watchdog_tripped = False

    def _check_watchdog(self) -> None:
        if self._last_obs_time is None:
            return  # not armed before the first observation
        if self._clock() - self._last_obs_time < self.watchdog_timeout:
            return
        if not self.watchdog_tripped:
            self.watchdog_trips += 1
            self.watchdog_tripped = True
        if self._last_sender is not None:
            HEADER.pack_into(
                self._watchdog_packet, 0, ACTION_MAGIC, self._last_sequence or 0, self.act_dim, FLAG_WATCHDOG
            )
            np.frombuffer(self._watchdog_packet, "<f4", self.act_dim, HEADER_SIZE)[...] = self.safe_action
            self._send(self._watchdog_packet)
            self.watchdog_actions += 1

    def _send(self, packet: bytearray) -> None:
        try:
            self._socket.sendto(packet, self._last_sender)
        except (BlockingIOError, InterruptedError, ConnectionRefusedError):
            pass  # UDP: a full buffer or an unreachable robot loses the packet, as the network would


@dataclasses.dataclass
class ServerStats:
    """What the robot side saw. Arrays are time first."""

    steps: int = 0
    episodes: int = 0
    episode_returns: list[float] = dataclasses.field(default_factory=list)
    episode_lengths: list[int] = dataclasses.field(default_factory=list)
    observations: list[np.ndarray] = dataclasses.field(default_factory=list)
    """Observations sent (float32 ``[obs_dim]`` each, as on the wire), one per step."""
    actions: list[np.ndarray] = dataclasses.field(default_factory=list)
    """Actions applied (float32 ``[act_dim]`` each), one per step."""
    action_flags: list[int] = dataclasses.field(default_factory=list)
    resends: int = 0
    """Observations sent again because no action came within ``action_timeout``."""
    dropped: int = 0
    """Action packets dropped: malformed or answering another observation."""
    watchdog_actions_after_stop: int = 0
    """Watchdog packets received while lingering after the last step."""


class UdpRobotServer:
    """The robot side of the UDP bridge, a reference for firmware authors (and used by the tests).

    Args:
        controller_address: ``(host, port)`` of the controller's :class:`UdpRobot`.
        obs_dim, act_dim: sizes of the packets.
        bind: local ``(host, port)`` (port 0: any free port).
        action_timeout: seconds to wait for the action answering an observation before sending
            the observation again.
        max_resends: give up (``TimeoutError``) after this many re-sends of one observation.
    """

    def __init__(
        self,
        controller_address: tuple[str, int],
        obs_dim: int,
        act_dim: int,
        *,
        bind: tuple[str, int] = ("127.0.0.1", 0),
        action_timeout: float = 0.5,
        max_resends: int = 20,
    ) -> None:
        self.obs_dim = _check_dim(obs_dim, "obs_dim")
        self.act_dim = _check_dim(act_dim, "act_dim")
        self.action_timeout = _check_seconds(action_timeout, "action_timeout")
        self.max_resends = int(max_resends)
        self.controller_address = _resolve(controller_address, "controller_address")
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._socket.bind(bind)
        except (OSError, OverflowError, TypeError) as error:
            self._socket.close()
            raise ValueError(f"bind: cannot bind UDP {bind!r} ({error})") from None
        self._sequence = 0
        self._buffer = bytearray(65536)

    @property
    def address(self) -> tuple[str, int]:
        return self._socket.getsockname()

    def send_observation(self, obs: np.ndarray, *, sequence: int, flags: int = 0) -> bytes:
        """Send one observation packet; returns it (to re-send)."""
        packet = pack_packet(OBS_MAGIC, sequence, np.asarray(obs, np.float32).reshape(self.obs_dim), flags)
        self._socket.sendto(packet, self.controller_address)
        return packet

    def receive_action(self, sequence: int, timeout: float, stats: ServerStats | None = None) -> tuple[np.ndarray, int] | None:
        """Wait up to ``timeout`` for the action packet answering ``sequence``;
        ``(action float32 [act_dim], flags)`` or None. Other packets are dropped (counted in ``stats``)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([self._socket], [], [], remaining)
            if not readable:
                return None
            try:
                size, _ = self._socket.recvfrom_into(self._buffer)
            except ConnectionRefusedError:
                continue
            parsed = unpack_packet(memoryview(self._buffer)[:size], ACTION_MAGIC, self.act_dim)
            if parsed is None or parsed[0] != sequence % _SEQ_MOD:
                if stats is not None:
                    stats.dropped += 1
                continue
            return parsed[2], parsed[1]

    def run(
        self,
        reset: Callable[[], np.ndarray],
        step: Callable[[np.ndarray], tuple[np.ndarray, float, bool, bool]],
        *,
        steps: int | None = None,
        episodes: int | None = None,
        linger_s: float = 0.0,
        record: bool = True,
    ) -> ServerStats:
        """Close the loop with the controller until ``steps`` steps or ``episodes`` episodes.

        ``reset() -> obs [obs_dim]`` starts an episode; ``step(action [act_dim]) -> (obs, reward,
        terminated, truncated)`` applies one action (Gymnasium's single-env semantics: after an
        episode ends, ``reset`` is called for the next). After the last step, no observation is
        sent any more (the controller's watchdog fires), and the server keeps listening for
        ``linger_s`` seconds, counting the watchdog's safe actions.
        """
        stats = ServerStats()
        if steps is None and episodes is None:
            raise ValueError("steps, episodes: give at least one limit")
        obs = reset()
        flags = FLAG_NEW_EPISODE
        episode_return, episode_length = 0.0, 0
        while (steps is None or stats.steps < steps) and (episodes is None or stats.episodes < episodes):
            self._sequence = (self._sequence + 1) % _SEQ_MOD
            packet = self.send_observation(obs, sequence=self._sequence, flags=flags)
            reply = self.receive_action(self._sequence, self.action_timeout, stats)
            resends = 0
            while reply is None:
                resends += 1
                if resends > self.max_resends:
                    raise TimeoutError(
                        f"no action for observation {self._sequence} after {self.max_resends} re-sends "
                        f"({self.action_timeout} s each) from {self.controller_address}"
                    )
                stats.resends += 1
                self._socket.sendto(packet, self.controller_address)
                reply = self.receive_action(self._sequence, self.action_timeout, stats)
            action, action_flags = reply
            if record:
                stats.observations.append(np.asarray(obs, np.float32).copy())
                stats.actions.append(action)
                stats.action_flags.append(action_flags)
            obs, reward, terminated, truncated = step(action)
            stats.steps += 1
            episode_return += float(reward)
            episode_length += 1
            flags = 0
            if terminated or truncated:
                stats.episodes += 1
                stats.episode_returns.append(episode_return)
                stats.episode_lengths.append(episode_length)
                episode_return, episode_length = 0.0, 0
                obs = reset()
                flags = FLAG_NEW_EPISODE | (FLAG_TERMINATED if terminated else 0)
        deadline = time.monotonic() + _check_seconds(linger_s, "linger_s")
        while (remaining := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self._socket], [], [], remaining)
            if not readable:
                break
            try:
                size, _ = self._socket.recvfrom_into(self._buffer)
            except ConnectionRefusedError:
                continue
            parsed = unpack_packet(memoryview(self._buffer)[:size], ACTION_MAGIC, self.act_dim)
            if parsed is not None and parsed[1] & FLAG_WATCHDOG:
                stats.watchdog_actions_after_stop += 1
        return stats

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> UdpRobotServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
