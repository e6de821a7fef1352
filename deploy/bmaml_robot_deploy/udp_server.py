"""The robot side of the UDP bridge: :class:`UdpRobotServer`, a reference for firmware authors.

It wraps any ``reset()``/``step(action)`` pair, sends observations (version 2: with the reward of
the step that led to each; version 1 on request), waits for the action that answers each one
(re-sending the observation after ``action_timeout``) and steps. It accepts
action packets only from the controller's address (and, with a key, only with a valid tag). The
packet layout, flags, handshake and protocol are those of :mod:`bmaml_robot_deploy.udp_wire`;
``python -m bmaml_robot_deploy.udp_sim`` serves a simulated robot with it; the tests use it.
"""

from __future__ import annotations

import dataclasses
import select
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bmaml_robot_deploy.checks import check_int, check_seconds
from bmaml_robot_deploy.udp_wire import (
    ACTION_MAGIC,
    HELLO_MAGIC,
    MAX_U32,
    OBSERVATION_VERSION,
    SEQ_MOD,
    WELCOME_MAGIC,
    ActionFlag,
    Header,
    ObservationFlag,
    bound_socket,
    check_address,
    check_dim,
    check_key,
    check_observation_version,
    check_packet,
    new_nonce,
    pack_handshake,
    pack_observation,
    packet_values,
    parse_handshake,
    read_header,
    resolve_address,
    session_key,
)


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
    rewards: list[float] = dataclasses.field(default_factory=list)
    """The reward sent with each observation of ``observations`` (0 with the first one; sent only
    in version 2, recorded in both)."""
    action_flags: list[int] = dataclasses.field(default_factory=list)
    resends: int = 0
    """Observations sent again because no action came within ``action_timeout``."""
    dropped: int = 0
    """Action packets dropped, all reasons: malformed, answering another observation (stale,
    replayed), failing authentication, or from a sender other than the controller."""
    dropped_unauthenticated: int = 0
    """Of ``dropped``: authentication failed (with a key: missing or wrong tag; without: a tag)."""
    dropped_unknown_sender: int = 0
    """Of ``dropped``: not from the controller's address."""
    dropped_handshake: int = 0
    """Of ``dropped``: WELCOME packets that are malformed, tampered, under another key, or answer
    another HELLO than the last one (replayed, from another session)."""
    sessions: int = 0
    """Sessions established (authenticated mode): handshakes completed."""
    watchdog_actions_after_stop: int = 0
    """Watchdog packets received while lingering after the last step."""


class UdpRobotServer:
    """The robot side of the UDP bridge, a reference for firmware authors (and used by the tests).

    Args:
        controller_address: ``(host, port)`` or ``"HOST:PORT"`` of the controller's
            :class:`~bmaml_robot_deploy.udp_link.UdpRobot`; action packets from any other address are dropped.
        obs_dim, act_dim: sizes of the packets.
        bind: local ``(host, port)`` or ``"HOST:PORT"`` (port 0: any free port).
        key: shared key for authenticated packets (as the controller's), or None.
        first_sequence: the sequence of the first observation sent (then +1 each), any of
            [0, 2**32). With a key, the sequence counts within a session: a restarted robot starts
            a new session (handshake) and may start over; when a keyed sequence would wrap, the
            robot starts a new session and continues from ``first_sequence``.
        action_timeout: seconds to wait for the action answering an observation before sending
            the observation again.
        max_resends: give up (``TimeoutError``) after this many re-sends of one observation.
        observation_version: the observation packets sent: 2 (default: with the reward, what RL^2
            controllers need) or 1 (the first layout, for controller sides older than version 2).
    """

    def __init__(
        self,
        controller_address: tuple[str, int] | str,
        obs_dim: int,
        act_dim: int,
        *,
        bind: tuple[str, int] | str = ("127.0.0.1", 0),
        key: bytes | None = None,
        first_sequence: int = 1,
        action_timeout: float = 0.5,
        max_resends: int = 20,
        observation_version: int = OBSERVATION_VERSION,
    ) -> None:
        self.observation_version = check_observation_version(observation_version, "observation_version")
        self.obs_dim = check_dim(obs_dim, "obs_dim")
        self.act_dim = check_dim(act_dim, "act_dim")
        self.action_timeout = check_seconds(action_timeout, "action_timeout")
        self.max_resends = check_int(max_resends, "max_resends", minimum=0)
        first_sequence = check_int(first_sequence, "first_sequence", minimum=0, maximum=MAX_U32)
        self._key = check_key(key)
        self.controller_address = resolve_address(
            check_address(controller_address, "controller_address"), "controller_address"
        )
        self._socket = bound_socket(check_address(bind, "bind", any_port=True))
        self.first_sequence = first_sequence
        self._next_sequence = first_sequence  # of the next observation sent (2**32 with a key: used up)
        self._sequence = first_sequence  # of the last observation sent
        self._buffer = bytearray(65536)
        self._nonce: bytes | None = None  # our nonce of the session being set up or running
        self._session: bytes | None = None  # the session key, None before the handshake completes
        self.last_reward = 0.0
        """The reward of the robot's last step (``run`` keeps it), sent with the next observation
        (version 2); 0 before the first step."""

    @property
    def address(self) -> tuple[str, int]:
        return self._socket.getsockname()

    def send_observation(
        self, obs: np.ndarray, *, sequence: int, flags: int = 0, reward: float | None = None
    ) -> bytes:
        """Send one observation packet (of ``observation_version``: version 2 with ``reward``,
        default ``last_reward``; version 1 without); returns it (to re-send)."""
        if self._key is not None and self._session is None:
            raise RuntimeError("send_observation: no session yet (call handshake() first)")
        values = np.asarray(obs, np.float32).reshape(self.obs_dim)
        if self.observation_version == 1:
            reward = None
        elif reward is None:
            reward = self.last_reward
        packet = pack_observation(sequence, values, flags, reward=reward, key=self._session)
        self._socket.sendto(packet, self.controller_address)
        return packet

    @property
    def in_session(self) -> bool:
        """Authenticated mode: a handshake completed (always True without a key)."""
        return self._key is None or self._session is not None

    def start_session(self) -> bytes:
        """Authenticated mode: forget the session, draw a fresh nonce and send a HELLO (returned).
        Until the matching WELCOME arrives (:meth:`wait_for_session`), no action is accepted."""
        if self._key is None:
            raise RuntimeError("start_session: sessions exist only with a key")
        self._session = None
        self._nonce = new_nonce()
        packet = pack_handshake(HELLO_MAGIC, self._key, self._nonce)
        self._socket.sendto(packet, self.controller_address)
        return packet

    def wait_for_session(self, timeout: float, stats: ServerStats | None = None) -> bool:
        """Wait up to ``timeout`` for the WELCOME answering our last HELLO; True once the
        session is established (action packets meanwhile are dropped: no session yet)."""
        deadline = time.monotonic() + timeout
        while self._session is None:
            if self._receive(max(0.0, deadline - time.monotonic()), stats, until_session=True) is None:
                return self._session is not None
        return True

    def handshake(self, stats: ServerStats | None = None) -> None:
        """Start a session (HELLO, re-sent every ``action_timeout``, ``max_resends`` times);
        ``TimeoutError`` if the controller never answers."""
        for _ in range(self.max_resends + 1):
            self.start_session()
            if self.wait_for_session(self.action_timeout, stats):
                if stats is not None:
                    stats.sessions += 1
                return
        raise TimeoutError(
            f"no session: no WELCOME from {self.controller_address} after {self.max_resends + 1} HELLOs "
            f"({self.action_timeout} s each; same key on both sides?)"
        )

    def _welcome(self, size: int, header: Header, stats: ServerStats | None) -> None:
        assert self._key is not None
        nonces = parse_handshake(self._buffer, WELCOME_MAGIC, self._key, size, header=header)
        if nonces is None or self._nonce is None or nonces[0] != self._nonce or self._session is not None:
            # tampered, another key, answering another HELLO, or a duplicate of the one taken
            if stats is not None:
                stats.dropped += 1
                stats.dropped_handshake += 1
            return
        self._session = session_key(self._key, self._nonce, nonces[1])

    def _receive(
        self, timeout: float, stats: ServerStats | None, until_session: bool = False
    ) -> tuple[int, int, np.ndarray] | None:
        """The next valid action packet from the controller within ``timeout`` (others are
        dropped and counted in ``stats``); None when the time is up."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([self._socket], [], [], remaining)
            if not readable:
                return None
            try:
                size, sender = self._socket.recvfrom_into(self._buffer)
            except ConnectionRefusedError:
                continue
            if sender != self.controller_address:
                if stats is not None:
                    stats.dropped += 1
                    stats.dropped_unknown_sender += 1
                continue
            header = read_header(self._buffer, size)  # read once: every check below takes it
            if self._key is not None and header is not None and header.magic == WELCOME_MAGIC:
                self._welcome(size, header, stats)
                if until_session and self._session is not None:
                    return None
                continue
            keys = None if self._key is None else ([] if self._session is None else [self._session])
            reason, _ = check_packet(self._buffer, size, header, ACTION_MAGIC, self.act_dim, keys)
            if reason is not None:
                if stats is not None:
                    stats.dropped += 1
                    stats.dropped_unauthenticated += int(reason == "auth")
                continue
            assert header is not None  # a valid packet has one
            return header.sequence, header.flags, packet_values(self._buffer, self.act_dim).astype(np.float32)

    def receive_action(
        self, sequence: int, timeout: float, stats: ServerStats | None = None
    ) -> tuple[np.ndarray, int] | None:
        """Wait up to ``timeout`` for the action packet answering ``sequence``;
        ``(action float32 [act_dim], flags)`` or None. Other packets (answering another
        observation: stale or replayed; malformed, unauthenticated, from another sender) are
        dropped (counted in ``stats``)."""
        deadline = time.monotonic() + timeout
        while (packet := self._receive(max(0.0, deadline - time.monotonic()), stats)) is not None:
            got_sequence, flags, action = packet
            if got_sequence == sequence % SEQ_MOD:
                return action, flags
            if stats is not None:
                stats.dropped += 1
        return None

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
        episode ends, ``reset`` is called for the next). Each observation goes with the reward of
        the step that led to it (the ended episode's last reward with the next one's first
        observation; 0 with the very first). After the last step, no observation is
        sent any more (the controller's watchdog fires), and the server keeps listening for
        ``linger_s`` seconds, counting the watchdog's safe actions.
        """
        stats = ServerStats()
        if steps is None and episodes is None:
            raise ValueError("steps, episodes: give at least one limit")
        linger_s = check_seconds(linger_s, "linger_s")
        if self._key is not None:
            self.handshake(stats)  # a fresh session each run: nothing recorded before is valid in it
        obs = reset()
        flags = ObservationFlag.NEW_EPISODE
        self.last_reward = 0.0
        episode_return, episode_length = 0.0, 0
        while (steps is None or stats.steps < steps) and (episodes is None or stats.episodes < episodes):
            if self._next_sequence > MAX_U32:  # authenticated sequences do not wrap: a new session
                self.handshake(stats)
                self._next_sequence = self.first_sequence
            self._sequence = self._next_sequence
            self._next_sequence = self._sequence + 1 if self._key is not None else (self._sequence + 1) % SEQ_MOD
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
                if self._key is not None and resends >= 2:
                    # Twice no answer: the controller may have restarted (it cannot verify our
                    # session's packets): offer a new session, then send the observation in it.
                    self.start_session()
                    if not self.wait_for_session(self.action_timeout, stats):
                        continue
                    stats.sessions += 1
                    packet = self.send_observation(obs, sequence=self._sequence, flags=flags)
                else:
                    self._socket.sendto(packet, self.controller_address)
                reply = self.receive_action(self._sequence, self.action_timeout, stats)
            action, action_flags = reply
            if record:
                stats.observations.append(np.asarray(obs, np.float32).copy())
                stats.actions.append(action)
                stats.action_flags.append(action_flags)
                stats.rewards.append(self.last_reward)
            obs, reward, terminated, truncated = step(action)
            self.last_reward = float(reward)
            stats.steps += 1
            episode_return += float(reward)
            episode_length += 1
            flags = ObservationFlag(0)
            if terminated or truncated:
                stats.episodes += 1
                stats.episode_returns.append(episode_return)
                stats.episode_lengths.append(episode_length)
                episode_return, episode_length = 0.0, 0
                obs = reset()
                flags = ObservationFlag.NEW_EPISODE | (ObservationFlag.TERMINATED if terminated else 0)
        deadline = time.monotonic() + linger_s
        while (late := self._receive(max(0.0, deadline - time.monotonic()), stats)) is not None:
            if late[1] & ActionFlag.WATCHDOG:
                stats.watchdog_actions_after_stop += 1
        return stats

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> UdpRobotServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
