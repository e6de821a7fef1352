"""The controller side of the UDP bridge: :class:`UdpRobot`, the robot the control loop talks to.

The packet layout, flags, handshake and protocol are those of :mod:`bmaml_robot_deploy.udp_wire`;
the robot side's reference is :class:`~bmaml_robot_deploy.udp_server.UdpRobotServer`.
"""

from __future__ import annotations

import hmac
import select
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from bmaml_robot_deploy.checks import check_int, check_seconds
from bmaml_robot_deploy.udp_wire import (
    ACTION_MAGIC,
    DIGEST,
    FLAG_AUTHENTICATED,
    HEADER,
    HEADER_SIZE,
    HELLO_MAGIC,
    NONCE_SIZE,
    SEQ_MOD,
    TAG_SIZE,
    WELCOME_MAGIC,
    ActionFlag,
    Header,
    ObservationFlag,
    bound_socket,
    check_address,
    check_dim,
    check_key,
    check_observation,
    is_newer,
    new_nonce,
    observation_reward,
    observation_size,
    pack_handshake,
    packet_values,
    parse_handshake,
    read_header,
    resolve_address,
    sequence_distance,
    session_key,
)

#: Default of ``UdpRobot(max_sequence_jump=...)``: a robot sending once per control period loses
#: 100 packets in a row only in an outage the watchdog (two periods by default) reports anyway.
DEFAULT_MAX_SEQUENCE_JUMP = 100

#: Sessions offered (WELCOME sent) and not yet taken that are remembered, oldest dropped first.
_MAX_PENDING = 4

# The flags this side reads (observations) and sends (actions), as plain ints: per packet, no
# IntFlag arithmetic.
_NEW_EPISODE = int(ObservationFlag.NEW_EPISODE)
_WATCHDOG = int(ActionFlag.WATCHDOG)


class UdpRobot:
    """The controller side of the UDP bridge: a :class:`~bmaml_robot_deploy.loop.RewardRobot`.

    Observation packets of both versions are accepted: version 2 carries the reward of the
    robot's last step (``last_reward`` after the read), version 1 does not (``last_reward`` None:
    enough for a MAML policy; the control loop refuses it for an RL^2 policy). When a newer
    observation supersedes an unread one, its reward is the one reported (the robot's latest step).

    Args:
        obs_dim, act_dim: sizes of the observation and action packets.
        bind: local ``(host, port)`` or ``"HOST:PORT"`` to receive observations on (port 0: any
            free port; see ``address``).
        robot_address: ``(host, port)`` or ``"HOST:PORT"`` of the robot: actions go there, and
            only its packets are accepted. None: the sender of the first valid observation,
            pinned from then on for the life of this object (give it explicitly where the
            network is not trusted: a host that speaks first would be the one pinned).
        key: shared key for authenticated packets (bytes, at least 16; see
            :mod:`~bmaml_robot_deploy.udp_wire`), or None (no authentication: the original layout).
        max_sequence_jump: an observation whose sequence is more than this many past the last
            accepted one is dropped (``dropped_sequence_jump``), so that one forged sequence
            cannot make the real stream look stale; at least the packets the robot may send
            within ``watchdog_timeout`` (the watchdog resynchronises after longer outages).
        safe_action: sent by the watchdog, ``[act_dim]`` (default zeros).
        watchdog_timeout: seconds without a new observation before the watchdog sends the safe action.
        receive_timeout: how long ``read_observation`` waits for a new observation when none is
            queued (seconds; keep it below the control period when pacing in real time).

    Raises:
        ValueError, TypeError: naming the argument (``bind``, ``robot_address``: not a
            ``(host, port)`` pair or ``"HOST:PORT"``, a port out of range, a host that does not
            resolve; ``key``; ...).

    Counters (attributes, all in :meth:`counters`): ``observations_received``, ``actions_sent``,
    ``actions_resent``, ``dropped_malformed``, ``dropped_unauthenticated`` (authentication
    failed: with a key, a missing or wrong tag; without one, a tag), ``dropped_stale`` (not
    newer: out of order, duplicates and replays), ``dropped_sequence_jump``,
    ``dropped_superseded`` (valid but a newer one was queued behind it),
    ``dropped_unknown_sender`` (not from the robot's address), ``watchdog_trips`` (times it
    fired), ``watchdog_actions`` (safe actions it sent).

    After each read that returned an observation: ``new_episode`` (its ``NEW_EPISODE`` flag),
    ``last_reward`` (its reward, None for version 1) and ``observation_version`` (1 or 2).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        *,
        bind: tuple[str, int] | str = ("0.0.0.0", 0),
        robot_address: tuple[str, int] | str | None = None,
        key: bytes | None = None,
        max_sequence_jump: int = DEFAULT_MAX_SEQUENCE_JUMP,
        safe_action: Sequence[float] | np.ndarray | None = None,
        watchdog_timeout: float = 0.1,
        receive_timeout: float = 0.025,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.obs_dim = check_dim(obs_dim, "obs_dim")
        self.act_dim = check_dim(act_dim, "act_dim")
        self.watchdog_timeout = check_seconds(watchdog_timeout, "watchdog_timeout")
        self.receive_timeout = check_seconds(receive_timeout, "receive_timeout")
        self.max_sequence_jump = check_int(max_sequence_jump, "max_sequence_jump", minimum=1, maximum=SEQ_MOD // 2 - 1)
        self._key = check_key(key)
        if safe_action is None:
            safe = np.zeros(self.act_dim, np.float32)
        else:
            safe = np.asarray(safe_action, np.float32)
            if safe.shape != (self.act_dim,) or not np.all(np.isfinite(safe)):
                raise ValueError(f"safe_action: expected {self.act_dim} finite numbers, got {safe_action!r}")
        self.safe_action = safe
        bind = check_address(bind, "bind", any_port=True)
        self.robot_address: tuple[str, int] | None = None
        """The robot's ``(ip, port)``: given, or pinned at the first valid observation (None until then)."""
        if robot_address is not None:
            self.robot_address = resolve_address(check_address(robot_address, "robot_address"), "robot_address")
        self._clock = clock
        self._socket = bound_socket(bind)
        self._socket.setblocking(False)
        tag = 0 if self._key is None else TAG_SIZE
        self._receive = bytearray(max(65536, observation_size(self.obs_dim, 2, True) + 1))
        self._receive_view = memoryview(self._receive)
        self._obs = np.zeros(self.obs_dim, np.float32)
        self._action_end = HEADER_SIZE + 4 * self.act_dim  # where the tag goes
        self._action_packet = bytearray(self._action_end + tag)
        self._action_values = packet_values(self._action_packet, self.act_dim)
        self._watchdog_packet = bytearray(self._action_packet)
        self._flags = 0 if self._key is None else FLAG_AUTHENTICATED
        self._session: bytes | None = None  # the session key (authenticated mode), None before the handshake
        self._session_nonces: tuple[bytes, bytes] | None = None
        # Sessions offered (WELCOME sent), not confirmed yet: (sender, robot nonce) -> (controller nonce, key, WELCOME).
        self._offers: dict[tuple[tuple[str, int], bytes], tuple[bytes, bytes, bytes]] = {}
        self._last_sequence: int | None = None
        self._last_obs_time: float | None = None
        self._answered_sequence: int | None = None  # sequence of the last action packet sent
        self._pending = False  # an accepted observation not yet returned by read_observation
        self._pending_flags = 0
        self._pending_reward: float | None = None
        self._pending_version = 0
        self.new_episode = False
        self.last_reward: float | None = None
        """The reward the last observation read came with (version 2), None for version 1."""
        self.observation_version: int | None = None
        """The packet version of the last observation read (1 or 2; None before the first)."""
        self.watchdog_tripped = False
        self.observations_received = 0
        self.actions_sent = 0
        self.actions_resent = 0
        self.dropped_malformed = 0
        self.dropped_unauthenticated = 0
        self.dropped_stale = 0
        self.dropped_sequence_jump = 0
        self.dropped_superseded = 0
        self.dropped_unknown_sender = 0
        self.watchdog_trips = 0
        self.watchdog_actions = 0
        self.sessions = 0
        self.handshakes_answered = 0
        self.dropped_handshake = 0

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

    @property
    def authenticated(self) -> bool:
        """True when packets are authenticated (a key was given)."""
        return self._key is not None

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
            self.new_episode = bool(self._pending_flags & _NEW_EPISODE)
            self.last_reward = self._pending_reward
            self.observation_version = self._pending_version
            self.watchdog_tripped = False
            return self._obs
        self.new_episode = False
        self._check_watchdog()
        return None

    def send_action(self, action: np.ndarray) -> None:
        """Send ``action`` ``[act_dim]`` answering the last observation."""
        if self._last_sequence is None or self.robot_address is None:
            return  # nobody to answer yet
        self._action_values[...] = action
        HEADER.pack_into(self._action_packet, 0, ACTION_MAGIC, self._last_sequence, self.act_dim, self._flags)
        self._sign(self._action_packet)
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
        deadline = self._clock() + check_seconds(timeout, "timeout")
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
            "observations_received", "actions_sent", "actions_resent", "dropped_malformed",
            "dropped_unauthenticated", "dropped_stale", "dropped_sequence_jump", "dropped_superseded",
            "dropped_unknown_sender", "watchdog_trips", "watchdog_actions", "sessions", "handshakes_answered",
            "dropped_handshake",
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

    def _answer_hello(self, size: int, header: Header, sender: tuple[str, int]) -> None:
        """A robot's HELLO: answer with a WELCOME carrying a fresh nonce of ours (the same one
        again for a HELLO already answered). The session starts only at its first valid
        observation, so a replayed HELLO does not disturb the running session."""
        assert self._key is not None
        nonces = parse_handshake(self._receive_view, HELLO_MAGIC, self._key, size, header=header)
        if nonces is None or nonces[1] != bytes(NONCE_SIZE):
            self.dropped_handshake += 1
            return
        robot_nonce = nonces[0]
        offer = self._offers.get((sender, robot_nonce))
        if offer is None:
            controller_nonce = new_nonce()
            offer = (
                controller_nonce,
                session_key(self._key, robot_nonce, controller_nonce),
                pack_handshake(WELCOME_MAGIC, self._key, robot_nonce, controller_nonce),
            )
            self._offers[(sender, robot_nonce)] = offer
            while len(self._offers) > _MAX_PENDING:
                del self._offers[next(iter(self._offers))]
        try:
            self._socket.sendto(offer[2], sender)
        except (BlockingIOError, InterruptedError, ConnectionRefusedError):
            pass
        self.handshakes_answered += 1

    def _accept(self, size: int, sender: tuple[str, int]) -> None:
        # Who, then what (the tag, before anything in the packet is believed), then when.
        if self.robot_address is not None and sender != self.robot_address:
            self.dropped_unknown_sender += 1
            return
        header = read_header(self._receive, size)  # read once: every check below takes it
        if self._key is not None and header is not None and header.magic == HELLO_MAGIC:
            self._answer_hello(size, header, sender)
            return
        if self._key is None:
            keys = None
        else:  # the session's key first, then those offered to this sender
            offered = [(nonce, offer) for (who, nonce), offer in self._offers.items() if who == sender]
            keys = ([] if self._session is None else [self._session]) + [offer[1] for _, offer in offered]
        reason, index, version = check_observation(self._receive_view, size, header, self.obs_dim, keys)
        if reason is not None:
            if reason == "auth":
                self.dropped_unauthenticated += 1
            else:
                self.dropped_malformed += 1
            return
        assert header is not None  # a valid packet has one
        sequence, flags = header.sequence, header.flags
        new_session = self._key is not None and index >= (self._session is not None)
        last = None if new_session else self._last_sequence
        if last is not None:
            if self._key is None:
                ahead = sequence_distance(sequence, last)
                newer = is_newer(sequence, last)
                # After the watchdog fired, anything goes: the robot may have restarted.
                resync = self.watchdog_tripped
            else:
                ahead = sequence - last
                newer = ahead > 0  # no wrap-around: a replay is never newer
                resync = False
            if not newer and not resync:
                self.dropped_stale += 1
                if sequence == last and self._answered_sequence == sequence:
                    self._send(self._action_packet)  # the robot re-sent: our action was lost
                    self.actions_resent += 1
                return
            if newer and ahead > self.max_sequence_jump and not self.watchdog_tripped:
                self.dropped_sequence_jump += 1
                return
        if new_session:  # the robot took our WELCOME: a new session, a new stream of sequences
            robot_nonce, (controller_nonce, key, _) = offered[index - (self._session is not None)]
            self._session, self._session_nonces = key, (robot_nonce, controller_nonce)
            self._offers = {k: v for k, v in self._offers.items() if v[1] != key}
            self._answered_sequence = None
            self.sessions += 1
        if self.robot_address is None:
            self.robot_address = sender  # pinned for the session
        if self._pending:
            self.dropped_superseded += 1
            flags |= self._pending_flags & _NEW_EPISODE  # an unread episode start still counts
        self._obs[...] = packet_values(self._receive, self.obs_dim)
        self._pending_reward = observation_reward(self._receive, self.obs_dim) if version == 2 else None
        self._pending_version = version
        self._last_sequence = sequence
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
        if self.robot_address is not None:
            HEADER.pack_into(
                self._watchdog_packet, 0, ACTION_MAGIC, self._last_sequence or 0, self.act_dim,
                _WATCHDOG | self._flags,
            )
            packet_values(self._watchdog_packet, self.act_dim)[...] = self.safe_action
            self._sign(self._watchdog_packet)
            self._send(self._watchdog_packet)
            self.watchdog_actions += 1

    def _sign(self, packet: bytearray) -> None:
        if self._key is not None:
            end = self._action_end
            assert self._session is not None  # no observation (so nothing to answer) before a session
            packet[end:] = hmac.digest(self._session, memoryview(packet)[:end], DIGEST)

    def _send(self, packet: bytearray) -> None:
        # Only called with a robot to answer: once pinned, robot_address never returns to None.
        assert self.robot_address is not None
        try:
            self._socket.sendto(packet, self.robot_address)
        except (BlockingIOError, InterruptedError, ConnectionRefusedError):
            pass  # UDP: a full buffer or an unreachable robot loses the packet, as the network would


