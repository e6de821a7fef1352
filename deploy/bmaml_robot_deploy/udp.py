"""UDP bridge between the controller and a robot (a physical robot's computer or a simulator process).

Packet layout (all little-endian, one packet per UDP datagram, 12-byte header + payload
[+ 32-byte tag when authenticated]):

================  ======  =========================================================================
field             type    meaning
================  ======  =========================================================================
``magic``         u32     observation packet: ``0x424F4D42`` (bytes ``b"BMOB"``);
                          action packet: ``0x43414D42`` (bytes ``b"BMAC"``)
``sequence``      u32     observation: the robot's counter, +1 per new observation (wraps at 2**32;
                          with authentication it must not wrap, see below);
                          action: the sequence of the observation it answers (echo)
``dim``           u16     number of floats that follow: ``obs_dim`` or ``act_dim``
``flags``         u16     observation: bit 0 ``NEW_EPISODE`` (this observation is the first of an
                          episode: the controller resets its hidden state), bit 1 ``TERMINATED``
                          (with bit 0: the previous episode ended by termination, not a time
                          limit); action: bit 0 ``WATCHDOG`` (the safe action, sent because
                          observations stopped arriving); both: bit 15 ``AUTHENTICATED`` (a tag
                          follows the payload)
payload           f32[]   ``dim`` float32 values: the observation or the action
tag               u8[32]  only with bit 15: HMAC-SHA256, under the session key (below), of header and
                          the payload (every byte before the tag)
================  ======  =========================================================================

So an observation packet is ``12 + 4 * obs_dim`` bytes and an action packet ``12 + 4 * act_dim``,
32 more each when authenticated. Bits 2-14 of ``flags`` are reserved (sent as 0, ignored on
receipt). Without a key, packets are byte for byte those of the original layout (in which bit
15 was reserved, so older peers drop authenticated packets for their length); a receiver without
a key drops packets with bit 15 set, and a receiver with a key drops packets without it.

Protocol. The robot sends an observation packet whenever it has a new observation (typically
once per control period, or in lockstep: after applying each action). The controller side
(:class:`UdpRobot`) reads the newest valid observation at each tick of the control loop and
answers with one action packet carrying the observation's sequence. It talks to one robot
only: the ``robot_address`` it is given or, without one, the sender of the first valid
observation, pinned for the rest of the session. It drops, and counts, packets from any other
sender; packets that are malformed (short, wrong magic, wrong ``dim``, wrong length); that fail
authentication (with a key: no tag, or a tag that does not verify; without one: a tag); that
are stale or out of order (a sequence not newer than the last accepted one, in 32-bit
serial-number arithmetic); and packets whose sequence jumps implausibly far ahead (more than
``max_sequence_jump`` past the last accepted one), so that one forged sequence cannot make it
ignore the real stream. When an observation with the last accepted sequence arrives again (the
robot re-sent it: our action was lost), the last action packet is sent again. A watchdog sends
the safe action (flag ``WATCHDOG``, sequence of the last observation) at every tick while no
observation has arrived for ``watchdog_timeout`` seconds (default two control periods), and
counts each time it fires. After the watchdog fired, the next valid observation is accepted
whatever its sequence (the robot may have restarted); with authentication, whatever its jump
but only if it is newer.

Authentication (opt-in: ``key=`` on both sides, at least 16 bytes, e.g. 32 random ones). Every
packet carries the tag above, and a packet whose tag does not verify under the key is dropped
whatever it says, so a host without the key cannot make the robot move, even one that forges
the robot's source address.

Sessions (authenticated protocol version 2). Each side draws a 16-byte random nonce per session.
The robot sends HELLO (``HANDSHAKE_SIZE`` = 76 bytes: magic ``b"BMSR"``, sequence field = version
2, dim field = 32, flags = bit 15, robot nonce, 16 zero bytes, HMAC-SHA256 under the shared key
of all before); the controller answers WELCOME (``b"BMSC"``, same layout, both nonces). Data
packets keep the layout above, with the tag under the session key
``HMAC-SHA256(key, b"bmaml-udp session v2" + robot_nonce + controller_nonce)``. The controller
takes the session at its first valid observation (a replayed HELLO does not disturb the running
one) and then accepts any first sequence; within a session sequences only increase (plain
integer order, also after the watchdog). So a packet recorded in another session (either
direction) fails its tag. A restarted robot starts a session; after two unanswered re-sends
the robot offers a new one (the controller restarted). A keyed sequence that would pass
2**32 - 1 starts a new session. Without a key there are no sessions: replay protection is the
sequence only, and a host that can forge the robot's address can inject packets.

The robot side (:class:`UdpRobotServer`) is a reference for firmware authors and what the tests
use: it wraps any ``reset()``/``step(action)`` pair, sends observations, waits for the action
that answers each one (re-sending the observation after ``action_timeout``) and steps. It
accepts action packets only from the controller's address (and, with a key, only with a valid
tag).
"""

from __future__ import annotations

import dataclasses
import hmac
import math
import os
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
FLAG_AUTHENTICATED = 1 << 15

#: Handshake packets (authenticated mode only): the robot's HELLO (``b"BMSR"``) and the
#: controller's WELCOME (``b"BMSC"``).
HELLO_MAGIC = int.from_bytes(b"BMSR", "little")
WELCOME_MAGIC = int.from_bytes(b"BMSC", "little")
#: Version of the authenticated protocol (the ``sequence`` field of handshake packets).
PROTOCOL_VERSION = 2
#: Bytes of each side's per-session nonce.
NONCE_SIZE = 16
_HANDSHAKE = struct.Struct(f"<IIHH{NONCE_SIZE}s{NONCE_SIZE}s")
#: Bytes of a handshake packet: header, robot nonce, controller nonce, tag.
HANDSHAKE_SIZE = _HANDSHAKE.size + 32
_SESSION_LABEL = b"bmaml-udp session v2"
_MAX_PENDING = 4

#: Bytes of the HMAC-SHA256 tag of an authenticated packet.
TAG_SIZE = 32
#: Shortest key accepted (bytes): 128 bits.
MIN_KEY_SIZE = 16
#: Default of ``UdpRobot(max_sequence_jump=...)``: a robot sending once per control period loses
#: 100 packets in a row only in an outage the watchdog (two periods by default) reports anyway.
DEFAULT_MAX_SEQUENCE_JUMP = 100

_MAX_DIM = 0xFFFF
_MAX_U32 = 0xFFFFFFFF
_MAX_U16 = 0xFFFF
_SEQ_MOD = 1 << 32
_DIGEST = "sha256"


class PacketError(ValueError):
    """A datagram that is not a valid packet of the expected kind. ``reason``: ``"size"``,
    ``"magic"``, ``"dim"`` (malformed) or ``"auth"`` (authentication failed)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _check_u(value: Any, name: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= maximum:
        raise ValueError(f"{name}: expected an integer in [0, {maximum}], got {value!r}")
    return int(value)


def check_key(key: Any, name: str = "key") -> bytes | None:
    """``key`` as ``bytes`` (None stays None: no authentication). The key itself never appears in
    an error message."""
    if key is None:
        return None
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise TypeError(f"{name}: expected bytes (at least {MIN_KEY_SIZE}) or None, got {type(key).__name__}")
    key = bytes(key)
    if len(key) < MIN_KEY_SIZE:
        raise ValueError(f"{name}: expected at least {MIN_KEY_SIZE} bytes, got {len(key)}")
    return key


def packet_size(dim: int, authenticated: bool = False) -> int:
    """Bytes of a packet with ``dim`` floats: ``12 + 4 * dim`` (+ 32 when authenticated)."""
    return HEADER_SIZE + 4 * dim + (TAG_SIZE if authenticated else 0)


def pack_packet(
    magic: int,
    sequence: int,
    values: np.ndarray | Sequence[float],
    flags: int = 0,
    *,
    key: bytes | None = None,
) -> bytes:
    """One packet: header + ``values`` as float32 (``[dim]``), + the tag when ``key`` is given
    (which also sets flag bit 15).

    Raises:
        ValueError: naming the header field that does not fit (``magic``, ``sequence`` in
            [0, 2**32); ``flags`` in [0, 2**16), bit 15 only through ``key``; ``values`` real
            numbers, at most 65535 of them) or ``key``.
    """
    magic = _check_u(magic, "magic", _MAX_U32)
    sequence = _check_u(sequence, "sequence", _MAX_U32)
    flags = _check_u(flags, "flags", _MAX_U16)
    key = check_key(key)
    if flags & FLAG_AUTHENTICATED:
        raise ValueError(f"flags: bit 15 (AUTHENTICATED) is set by giving key=, got {flags:#06x}")
    try:
        array = np.asarray(values)
    except (TypeError, ValueError):
        raise ValueError(f"values: expected real numbers, got {type(values).__name__}") from None
    if array.dtype.kind not in "fiu":
        raise ValueError(f"values: expected real numbers, got dtype {array.dtype}")
    payload = np.ascontiguousarray(array, dtype="<f4").reshape(-1)
    if payload.size > _MAX_DIM:
        raise ValueError(f"values: expected at most {_MAX_DIM} numbers (the u16 dim field), got {payload.size}")
    if key is not None:
        flags |= FLAG_AUTHENTICATED
    packet = HEADER.pack(magic, sequence, payload.size, flags) + payload.tobytes()
    return packet if key is None else packet + hmac.digest(key, packet, _DIGEST)


def _packet_error(data: Any, size: int, magic: int, dim: int, key: bytes | None) -> str | None:
    """Why the first ``size`` bytes of ``data`` are not a valid packet (``"size"``, ``"magic"``,
    ``"dim"``, ``"auth"``), None if they are one."""
    reason, _ = _check_packet(data, size, magic, dim, None if key is None else (key,))
    return reason


def _check_packet(data: Any, size: int, magic: int, dim: int, keys: Sequence[bytes] | None) -> tuple[str | None, int]:
    """``(reason or None, index of the key in keys whose tag verifies)``; ``keys`` None: no
    authentication, an empty sequence: authenticated but no key to verify with (no session)."""
    if size < HEADER_SIZE:
        return "size", -1
    got_magic, _, got_dim, flags = HEADER.unpack_from(data)
    if got_magic != magic:
        return "magic", -1
    if got_dim != dim:
        return "dim", -1
    if bool(flags & FLAG_AUTHENTICATED) != (keys is not None):
        return "auth", -1
    end = HEADER_SIZE + 4 * dim
    if size != end + (0 if keys is None else TAG_SIZE):
        return "size", -1
    if keys is None:
        return None, -1
    view = memoryview(data)
    for index, key in enumerate(keys):
        if hmac.compare_digest(hmac.digest(key, view[:end], _DIGEST), view[end:size]):
            return None, index
    return "auth", -1


def new_nonce() -> bytes:
    """A fresh random per-session nonce (``NONCE_SIZE`` bytes from ``os.urandom``)."""
    return os.urandom(NONCE_SIZE)


def session_key(key: bytes, robot_nonce: bytes, controller_nonce: bytes) -> bytes:
    """The key of one session: HMAC-SHA256 under the shared ``key`` of
    ``b"bmaml-udp session v2" + robot_nonce + controller_nonce``. Observation and action packets
    of the session carry tags under it (:func:`pack_packet` with ``key=session_key(...)``)."""
    key = check_key(key)
    if len(robot_nonce) != NONCE_SIZE or len(controller_nonce) != NONCE_SIZE:
        raise ValueError(f"nonces: expected {NONCE_SIZE} bytes each")
    return hmac.digest(key, _SESSION_LABEL + bytes(robot_nonce) + bytes(controller_nonce), _DIGEST)


def pack_handshake(magic: int, key: bytes, robot_nonce: bytes, controller_nonce: bytes = bytes(NONCE_SIZE)) -> bytes:
    """A HELLO (``HELLO_MAGIC``, the robot's nonce, zeros for the controller's) or WELCOME
    (``WELCOME_MAGIC``, both nonces) packet, tagged under the shared ``key``."""
    key = check_key(key)
    if magic not in (HELLO_MAGIC, WELCOME_MAGIC):
        raise ValueError(f"magic: expected HELLO_MAGIC or WELCOME_MAGIC, got {magic:#010x}")
    if len(robot_nonce) != NONCE_SIZE or len(controller_nonce) != NONCE_SIZE:
        raise ValueError(f"nonces: expected {NONCE_SIZE} bytes each")
    body = _HANDSHAKE.pack(magic, PROTOCOL_VERSION, 2 * NONCE_SIZE, FLAG_AUTHENTICATED, bytes(robot_nonce), bytes(controller_nonce))
    return body + hmac.digest(key, body, _DIGEST)


def parse_handshake(data: Any, magic: int, key: bytes, size: int | None = None) -> tuple[bytes, bytes] | None:
    """``(robot_nonce, controller_nonce)`` of a valid handshake packet of this ``magic`` (right
    length, version, fields and tag under ``key``), None for anything else."""
    size = len(data) if size is None else size
    if size != HANDSHAKE_SIZE:
        return None
    got_magic, version, length, flags, robot_nonce, controller_nonce = _HANDSHAKE.unpack_from(data)
    if got_magic != magic or version != PROTOCOL_VERSION or length != 2 * NONCE_SIZE or flags != FLAG_AUTHENTICATED:
        return None
    view = memoryview(data)
    if not hmac.compare_digest(hmac.digest(key, view[: _HANDSHAKE.size], _DIGEST), view[_HANDSHAKE.size : size]):
        return None
    if magic == WELCOME_MAGIC and controller_nonce == bytes(NONCE_SIZE):
        return None
    return robot_nonce, controller_nonce


_REASONS = {
    "size": "wrong length",
    "magic": "wrong magic",
    "dim": "wrong dim",
    "auth": "authentication failed (missing, unexpected or wrong tag)",
}


def parse_packet(
    data: bytes | bytearray | memoryview, magic: int, dim: int, *, key: bytes | None = None
) -> tuple[int, int, np.ndarray]:
    """``(sequence, flags, values float32 [dim])`` of a valid packet with this ``magic`` and
    ``dim`` (and, with ``key``, a tag that verifies; ``flags`` as in the header, bit 15 included).
    The values are passed on as they came: NaN or infinity included (the controller answers those
    with the safe action).

    Raises:
        PacketError: (a ``ValueError``) for any other datagram, with the ``reason``.
    """
    dim = _check_dim(dim, "dim")
    key = check_key(key)
    size = len(data)
    reason = _packet_error(data, size, magic, dim, key)
    if reason is not None:
        raise PacketError(reason, f"not a valid packet (magic {magic:#010x}, dim {dim}, {size} bytes): {_REASONS[reason]}")
    _, sequence, _, flags = HEADER.unpack_from(data)
    return sequence, flags, np.frombuffer(data, "<f4", dim, HEADER_SIZE).astype(np.float32)


def unpack_packet(
    data: bytes | bytearray | memoryview, magic: int, dim: int, key: bytes | None = None
) -> tuple[int, int, np.ndarray] | None:
    """:func:`parse_packet`, with None instead of the ``PacketError``."""
    try:
        return parse_packet(data, magic, dim, key=key)
    except PacketError:
        return None


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


def check_address(address: Any, name: str, *, any_port: bool = False) -> tuple[str, int]:
    """A ``(host, port)`` pair or a ``"HOST:PORT"`` string -> ``(host, port)``, checked: a
    non-empty host string (empty allowed with ``any_port``, for binding), a port in [1, 65535]
    ([0, 65535] with ``any_port``: 0 binds any free port).

    Raises:
        ValueError: naming ``name``, for a string that is not ``HOST:PORT`` or a port out of range.
        TypeError: naming ``name``, for anything else.
    """
    low = 0 if any_port else 1
    expected = f"(host, port) or 'HOST:PORT' with a port in [{low}, 65535]"
    if isinstance(address, str):
        host, colon, port_text = address.rpartition(":")
        host = host.strip("[]")
        if not colon or not port_text.strip().lstrip("-").isdigit():
            raise ValueError(f"{name}: expected {expected}, got {address!r}")
        port = int(port_text)
    elif isinstance(address, (tuple, list)) and len(address) == 2:
        host, port = address
        if not isinstance(host, str) or isinstance(port, bool) or not isinstance(port, (int, np.integer)):
            raise TypeError(f"{name}: expected {expected}, got {address!r}")
    else:
        raise TypeError(f"{name}: expected {expected}, got {address!r}")
    if not low <= port <= 65535 or (not host and not any_port):
        raise ValueError(f"{name}: expected {expected}, got {address!r}")
    return host, int(port)


def read_key_file(path: str | os.PathLike[str], name: str = "--udp-key-file") -> bytes:
    """The key in the file at ``path``: hex digits (whitespace ignored), at least 16 bytes, e.g.
    written by ``openssl rand -hex 32 > robot.key`` (keep it ``chmod 600``). ``ValueError`` naming
    ``name`` and the file, never the key."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as error:
        raise ValueError(f"{name}: cannot read key file {os.fspath(path)!r} ({error.strerror or error})") from None
    return _key_from_hex(text, f"{name}: key file {os.fspath(path)!r}")


def key_from_env(variable: str, name: str = "--udp-key-env") -> bytes:
    """The key in environment variable ``variable`` (hex digits, at least 16 bytes)."""
    text = os.environ.get(variable)
    if text is None:
        raise ValueError(f"{name}: environment variable {variable!r} is not set")
    return _key_from_hex(text.encode("latin-1", "replace"), f"{name}: environment variable {variable!r}")


def add_key_arguments(parser: Any, peer: str) -> None:
    """``--udp-key-file`` / ``--udp-key-env`` (one or the other) on an argparse parser or group;
    ``peer`` names the side that must hold the same key (read back with ``cli_key``)."""
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--udp-key-file", default=None, metavar="PATH",
                      help="authenticate packets (HMAC-SHA256) with the key in this file: hex digits, >= 16 bytes, "
                           f"e.g. `openssl rand -hex 32 > robot.key`; {peer} needs the same key")
    keys.add_argument("--udp-key-env", default=None, metavar="VAR",
                      help="as --udp-key-file, the key (hex) in environment variable VAR")


def cli_key(key_file: str | os.PathLike[str] | None, key_env: str | None) -> bytes | None:
    """The key a command line names: ``--udp-key-file`` (first) or ``--udp-key-env``; None: neither."""
    if key_file is not None:
        return read_key_file(key_file, "--udp-key-file")
    if key_env is not None:
        return key_from_env(key_env, "--udp-key-env")
    return None


def _key_from_hex(text: bytes, where: str) -> bytes:
    digits = b"".join(text.split())
    try:
        key = bytes.fromhex(digits.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError(
            f"{where}: expected the key as hex digits (e.g. from `openssl rand -hex 32`), got {len(digits)} "
            "characters that are not an even number of hex digits"
        ) from None
    if len(key) < MIN_KEY_SIZE:
        raise ValueError(f"{where}: expected at least {MIN_KEY_SIZE} bytes ({2 * MIN_KEY_SIZE} hex digits), got {len(key)}")
    return key


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
    except (OSError, UnicodeError) as error:
        raise ValueError(f"{name}: cannot resolve host {address[0]!r} ({error})") from None


def _bound_socket(bind: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(bind)
    except (OSError, OverflowError, TypeError, UnicodeError) as error:
        sock.close()
        raise ValueError(f"bind: cannot bind UDP {bind!r} ({error})") from None
    return sock


class UdpRobot:
    """The controller side of the UDP bridge: a :class:`~bmaml_robot_deploy.loop.Robot`.

    Args:
        obs_dim, act_dim: sizes of the observation and action packets.
        bind: local ``(host, port)`` or ``"HOST:PORT"`` to receive observations on (port 0: any
            free port; see ``address``).
        robot_address: ``(host, port)`` or ``"HOST:PORT"`` of the robot: actions go there, and
            only its packets are accepted. None: the sender of the first valid observation,
            pinned from then on for the life of this object (give it explicitly where the
            network is not trusted: a host that speaks first would be the one pinned).
        key: shared key for authenticated packets (bytes, at least 16; module docstring), or
            None (no authentication: the original layout).
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
        self.obs_dim = _check_dim(obs_dim, "obs_dim")
        self.act_dim = _check_dim(act_dim, "act_dim")
        self.watchdog_timeout = _check_seconds(watchdog_timeout, "watchdog_timeout")
        self.receive_timeout = _check_seconds(receive_timeout, "receive_timeout")
        if isinstance(max_sequence_jump, bool) or not isinstance(max_sequence_jump, (int, np.integer)) or not (
            1 <= max_sequence_jump < _SEQ_MOD // 2
        ):
            raise ValueError(f"max_sequence_jump: expected an integer in [1, {_SEQ_MOD // 2 - 1}], got {max_sequence_jump!r}")
        self.max_sequence_jump = int(max_sequence_jump)
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
            self.robot_address = _resolve(check_address(robot_address, "robot_address"), "robot_address")
        self._clock = clock
        self._socket = _bound_socket(bind)
        self._socket.setblocking(False)
        tag = 0 if self._key is None else TAG_SIZE
        self._receive = bytearray(max(65536, packet_size(self.obs_dim, True) + 1))
        self._receive_view = memoryview(self._receive)
        self._obs = np.zeros(self.obs_dim, np.float32)
        self._action_end = HEADER_SIZE + 4 * self.act_dim  # where the tag goes
        self._action_packet = bytearray(self._action_end + tag)
        self._action_values = np.frombuffer(self._action_packet, "<f4", self.act_dim, HEADER_SIZE)
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
        self.new_episode = False
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
            self.new_episode = bool(self._pending_flags & FLAG_NEW_EPISODE)
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

    def _answer_hello(self, size: int, sender: tuple[str, int]) -> None:
        """A robot's HELLO: answer with a WELCOME carrying a fresh nonce of ours (the same one
        again for a HELLO already answered). The session starts only at its first valid
        observation, so a replayed HELLO does not disturb the running session."""
        assert self._key is not None
        nonces = parse_handshake(self._receive_view, HELLO_MAGIC, self._key, size)
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
        if self._key is not None and size >= 4 and int.from_bytes(self._receive[:4], "little") == HELLO_MAGIC:
            self._answer_hello(size, sender)
            return
        if self._key is None:
            keys = None
        else:  # the session's key first, then those offered to this sender
            offered = [(nonce, offer) for (who, nonce), offer in self._offers.items() if who == sender]
            keys = ([] if self._session is None else [self._session]) + [offer[1] for _, offer in offered]
        reason, index = _check_packet(self._receive_view, size, OBS_MAGIC, self.obs_dim, keys)
        if reason is not None:
            if reason == "auth":
                self.dropped_unauthenticated += 1
            else:
                self.dropped_malformed += 1
            return
        _, sequence, _, flags = HEADER.unpack_from(self._receive)
        new_session = self._key is not None and index >= (self._session is not None)
        last = None if new_session else self._last_sequence
        if last is not None:
            if self._key is None:
                ahead = (sequence - last) % _SEQ_MOD
                newer = 0 < ahead < _SEQ_MOD // 2
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
            flags |= self._pending_flags & FLAG_NEW_EPISODE  # an unread episode start still counts
        self._obs[...] = np.frombuffer(self._receive, "<f4", self.obs_dim, HEADER_SIZE)
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
                FLAG_WATCHDOG | self._flags,
            )
            np.frombuffer(self._watchdog_packet, "<f4", self.act_dim, HEADER_SIZE)[...] = self.safe_action
            self._sign(self._watchdog_packet)
            self._send(self._watchdog_packet)
            self.watchdog_actions += 1

    def _sign(self, packet: bytearray) -> None:
        if self._key is not None:
            end = self._action_end
            assert self._session is not None  # no observation (so nothing to answer) before a session
            packet[end:] = hmac.digest(self._session, memoryview(packet)[:end], _DIGEST)

    def _send(self, packet: bytearray) -> None:
        try:
            self._socket.sendto(packet, self.robot_address)
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
            :class:`UdpRobot`; action packets from any other address are dropped.
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
    ) -> None:
        self.obs_dim = _check_dim(obs_dim, "obs_dim")
        self.act_dim = _check_dim(act_dim, "act_dim")
        self.action_timeout = _check_seconds(action_timeout, "action_timeout")
        if isinstance(max_resends, bool) or not isinstance(max_resends, (int, np.integer)) or max_resends < 0:
            raise ValueError(f"max_resends: expected an integer >= 0, got {max_resends!r}")
        self.max_resends = int(max_resends)
        first_sequence = _check_u(first_sequence, "first_sequence", _MAX_U32)
        self._key = check_key(key)
        self.controller_address = _resolve(check_address(controller_address, "controller_address"), "controller_address")
        self._socket = _bound_socket(check_address(bind, "bind", any_port=True))
        self.first_sequence = first_sequence
        self._next_sequence = first_sequence  # of the next observation sent (2**32 with a key: used up)
        self._sequence = first_sequence  # of the last observation sent
        self._buffer = bytearray(65536)
        self._nonce: bytes | None = None  # our nonce of the session being set up or running
        self._session: bytes | None = None  # the session key, None before the handshake completes

    @property
    def address(self) -> tuple[str, int]:
        return self._socket.getsockname()

    def send_observation(self, obs: np.ndarray, *, sequence: int, flags: int = 0) -> bytes:
        """Send one observation packet; returns it (to re-send)."""
        if self._key is not None and self._session is None:
            raise RuntimeError("send_observation: no session yet (call handshake() first)")
        packet = pack_packet(OBS_MAGIC, sequence, np.asarray(obs, np.float32).reshape(self.obs_dim), flags, key=self._session)
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

    def _welcome(self, size: int, stats: ServerStats | None) -> None:
        assert self._key is not None
        nonces = parse_handshake(self._buffer, WELCOME_MAGIC, self._key, size)
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
            if self._key is not None and size >= 4 and int.from_bytes(self._buffer[:4], "little") == WELCOME_MAGIC:
                self._welcome(size, stats)
                if until_session and self._session is not None:
                    return None
                continue
            keys = None if self._key is None else ([] if self._session is None else [self._session])
            reason, _ = _check_packet(self._buffer, size, ACTION_MAGIC, self.act_dim, keys)
            if reason is not None:
                if stats is not None:
                    stats.dropped += 1
                    stats.dropped_unauthenticated += int(reason == "auth")
                continue
            _, sequence, _, flags = HEADER.unpack_from(self._buffer)
            return sequence, flags, np.frombuffer(self._buffer, "<f4", self.act_dim, HEADER_SIZE).astype(np.float32)

    def receive_action(self, sequence: int, timeout: float, stats: ServerStats | None = None) -> tuple[np.ndarray, int] | None:
        """Wait up to ``timeout`` for the action packet answering ``sequence``;
        ``(action float32 [act_dim], flags)`` or None. Other packets (answering another
        observation: stale or replayed; malformed, unauthenticated, from another sender) are
        dropped (counted in ``stats``)."""
        deadline = time.monotonic() + timeout
        while (packet := self._receive(max(0.0, deadline - time.monotonic()), stats)) is not None:
            got_sequence, flags, action = packet
            if got_sequence == sequence % _SEQ_MOD:
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
        episode ends, ``reset`` is called for the next). After the last step, no observation is
        sent any more (the controller's watchdog fires), and the server keeps listening for
        ``linger_s`` seconds, counting the watchdog's safe actions.
        """
        stats = ServerStats()
        if steps is None and episodes is None:
            raise ValueError("steps, episodes: give at least one limit")
        linger_s = _check_seconds(linger_s, "linger_s")
        if self._key is not None:
            self.handshake(stats)  # a fresh session each run: nothing recorded before is valid in it
        obs = reset()
        flags = FLAG_NEW_EPISODE
        episode_return, episode_length = 0.0, 0
        while (steps is None or stats.steps < steps) and (episodes is None or stats.episodes < episodes):
            if self._next_sequence > _MAX_U32:  # authenticated sequences do not wrap: a new session
                self.handshake(stats)
                self._next_sequence = self.first_sequence
            self._sequence = self._next_sequence
            self._next_sequence = self._sequence + 1 if self._key is not None else (self._sequence + 1) % _SEQ_MOD
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
        deadline = time.monotonic() + linger_s
        while (packet := self._receive(max(0.0, deadline - time.monotonic()), stats)) is not None:
            if packet[1] & FLAG_WATCHDOG:
                stats.watchdog_actions_after_stop += 1
        return stats

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> UdpRobotServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
