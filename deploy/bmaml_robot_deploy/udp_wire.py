"""The UDP bridge's wire format: packets, handshake, tags, sequence arithmetic, addresses and keys.

Both sides of the bridge build on this module: the controller's link to a robot
(:class:`~bmaml_robot_deploy.udp_link.UdpRobot`) and the reference robot
(:class:`~bmaml_robot_deploy.udp_server.UdpRobotServer`). It holds no socket state.

Packet layout (all little-endian, one packet per UDP datagram, 12-byte header + payload
[+ 32-byte tag when authenticated]):

================  ======  =========================================================================
field             type    meaning
================  ======  =========================================================================
``magic``         u32     observation packet, version 2: ``0x324F4D42`` (bytes ``b"BMO2"``),
                          version 1: ``0x424F4D42`` (bytes ``b"BMOB"``);
                          action packet: ``0x43414D42`` (bytes ``b"BMAC"``)
``sequence``      u32     observation: the robot's counter, +1 per new observation (wraps at 2**32;
                          with authentication it must not wrap, see below);
                          action: the sequence of the observation it answers (echo)
``dim``           u16     ``obs_dim`` or ``act_dim``: the float32 values of the observation or
                          action that follow
``flags``         u16     per packet kind (the magic says which, see "Flags" below); bit 15
                          ``AUTHENTICATED`` in every kind (a tag follows the payload)
payload           f32[]   ``dim`` float32 values: the observation or the action
``reward``        f32     observation packets of version 2 only: the reward of the robot's step
                          that led to this observation (the previous episode's last step when
                          ``NEW_EPISODE`` is set; 0 before the robot's first step)
tag               u8[32]  only with bit 15: HMAC-SHA256, under the session key (below), of header and
                          the payload (every byte before the tag, the reward included)
================  ======  =========================================================================

Observation packets have two versions, told apart by their magic: version 2 (``b"BMO2"``,
:func:`pack_observation` with a ``reward``) carries the reward, which RL^2 policies read at every
step; version 1 (``b"BMOB"``, the first layout, without it) is still understood, and drives MAML
policies as before (an RL^2 controller refuses an observation without a reward). The reference
robot (:class:`~bmaml_robot_deploy.udp_server.UdpRobotServer`) sends version 2 unless told
``observation_version=1``; a controller side of before version 2 drops version-2 packets (wrong
magic).

Flags. Each direction has its own flag namespace, chosen by the magic: bits 0-14 of an
observation packet mean :class:`ObservationFlag`, of an action packet :class:`ActionFlag`, so
the same bit may mean different things in the two kinds and never meets the other meaning:

- observation (robot -> controller, ``b"BMO2"`` and ``b"BMOB"``): bit 0 ``NEW_EPISODE`` (this
  observation is the first of an episode, the episode-start flag: a MAML controller resets its
  hidden state, an RL^2 controller feeds the flag to its policy and keeps its state), bit 1
  ``TERMINATED`` (with bit 0: the previous episode ended by termination, not a time limit);
- action (controller -> robot, ``b"BMAC"``): bit 0 ``WATCHDOG`` (the safe action, sent because
  observations stopped arriving);
- every kind (handshakes too): bit 15 ``AUTHENTICATED``.

Bits 2-14 (observation) and 1-14 (action) are reserved (sent as 0, ignored on receipt). The
module-level ``FLAG_*`` constants are the same values as plain ints.

So an observation packet is ``12 + 4 * (obs_dim + 1)`` bytes (version 2; ``12 + 4 * obs_dim`` in
version 1) and an action packet ``12 + 4 * act_dim``, 32 more each when authenticated. Without a
key, version-1 observation packets and action packets are byte for byte those of the original
layout (in which bit 15 was reserved, so older peers drop authenticated packets for their
length); a receiver without a key drops packets with bit 15 set, and a receiver with a key drops
packets without it.

Protocol. The robot sends an observation packet whenever it has a new observation (typically
once per control period, or in lockstep: after applying each action). The controller side reads
the newest valid observation at each tick of the control loop and answers with one action packet
carrying the observation's sequence. It talks to one robot only: the ``robot_address`` it is
given or, without one, the sender of the first valid observation, pinned for the rest of the
session. It drops, and counts, packets from any other sender; packets that are malformed (short,
wrong magic, wrong ``dim``, wrong length); that fail authentication (with a key: no tag, or a tag
that does not verify; without one: a tag); that are stale or out of order (a sequence not newer
than the last accepted one, in 32-bit serial-number arithmetic: :func:`is_newer`); and packets
whose sequence jumps implausibly far ahead (more than ``max_sequence_jump`` past the last
accepted one), so that one forged sequence cannot make it ignore the real stream. When an
observation with the last accepted sequence arrives again (the robot re-sent it: our action was
lost), the last action packet is sent again. A watchdog sends the safe action (flag
``WATCHDOG``, sequence of the last observation) at every tick while no observation has arrived
for ``watchdog_timeout`` seconds (default two control periods), and counts each time it fires.
After the watchdog fired, the next valid observation is accepted whatever its sequence (the
robot may have restarted); with authentication, whatever its jump but only if it is newer.

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

Versions. Data packets carry no version field: their magic and length identify them. The
observation packet's magic is its version (``OBSERVATION_VERSIONS``: ``b"BMOB"`` 1, ``b"BMO2"``
2, which adds the reward); flag bits are those of the first version in both. Handshake packets
carry the version of the authenticated protocol (``PROTOCOL_VERSION``, in the sequence field); a
handshake of another version is dropped.
"""

from __future__ import annotations

import enum
import hmac
import os
import socket
import struct
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from bmaml_robot_deploy.checks import check_int

OBS_MAGIC = int.from_bytes(b"BMOB", "little")  # 0x424F4D42: observation packet, version 1 (no reward)
OBS_V2_MAGIC = int.from_bytes(b"BMO2", "little")  # 0x324F4D42: observation packet, version 2 (+ reward)
ACTION_MAGIC = int.from_bytes(b"BMAC", "little")  # 0x43414D42
HEADER = struct.Struct("<IIHH")  # magic, sequence, dim, flags
HEADER_SIZE = HEADER.size  # 12
#: The version of an observation packet, by its magic.
OBSERVATION_VERSIONS: dict[int, int] = {OBS_MAGIC: 1, OBS_V2_MAGIC: 2}
#: The magic of an observation packet, by its version.
OBSERVATION_MAGICS: dict[int, int] = {version: magic for magic, version in OBSERVATION_VERSIONS.items()}
#: The version the reference robot sends (with the reward).
OBSERVATION_VERSION = 2
_REWARD = struct.Struct("<f")


class ObservationFlag(enum.IntFlag):
    """``flags`` of an observation packet (robot -> controller, magic ``b"BMOB"``)."""

    NEW_EPISODE = 1 << 0
    """The first observation of an episode: the controller resets its hidden state."""
    TERMINATED = 1 << 1
    """With ``NEW_EPISODE``: the previous episode ended by termination, not a time limit."""
    AUTHENTICATED = 1 << 15
    """A tag follows the payload."""


class ActionFlag(enum.IntFlag):
    """``flags`` of an action packet (controller -> robot, magic ``b"BMAC"``)."""

    WATCHDOG = 1 << 0
    """The safe action, sent because observations stopped arriving."""
    AUTHENTICATED = 1 << 15
    """A tag follows the payload."""


# The flags as plain ints (the names of the first version). NEW_EPISODE and WATCHDOG share bit 0
# on purpose: they live in different packet kinds (the magic tells which), so they never meet.
FLAG_NEW_EPISODE = int(ObservationFlag.NEW_EPISODE)
FLAG_TERMINATED = int(ObservationFlag.TERMINATED)
FLAG_WATCHDOG = int(ActionFlag.WATCHDOG)
FLAG_AUTHENTICATED = int(ObservationFlag.AUTHENTICATED)  # == ActionFlag.AUTHENTICATED: every kind

#: Handshake packets (authenticated mode only): the robot's HELLO (``b"BMSR"``) and the
#: controller's WELCOME (``b"BMSC"``).
HELLO_MAGIC = int.from_bytes(b"BMSR", "little")
WELCOME_MAGIC = int.from_bytes(b"BMSC", "little")
#: Version of the authenticated protocol (the ``sequence`` field of handshake packets).
PROTOCOL_VERSION = 2
#: Bytes of each side's per-session nonce.
NONCE_SIZE = 16
_NONCES = struct.Struct(f"<{NONCE_SIZE}s{NONCE_SIZE}s")  # after the header
_HANDSHAKE_BODY = HEADER_SIZE + _NONCES.size
#: Bytes of the HMAC-SHA256 tag of an authenticated packet.
TAG_SIZE = 32
#: Bytes of a handshake packet: header, robot nonce, controller nonce, tag.
HANDSHAKE_SIZE = _HANDSHAKE_BODY + TAG_SIZE
_SESSION_LABEL = b"bmaml-udp session v2"
_ZERO_NONCE = bytes(NONCE_SIZE)

#: Shortest key accepted (bytes): 128 bits.
MIN_KEY_SIZE = 16

MAX_DIM = 0xFFFF
MAX_U32 = 0xFFFFFFFF
MAX_U16 = 0xFFFF
#: Sequences count modulo 2**32 (serial-number arithmetic without a key).
SEQ_MOD = 1 << 32
DIGEST = "sha256"


class PacketError(ValueError):
    """A datagram that is not a valid packet of the expected kind. ``reason``: ``"size"``,
    ``"magic"``, ``"dim"`` (malformed) or ``"auth"`` (authentication failed)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Observation(NamedTuple):
    """A parsed observation packet (:func:`parse_observation`)."""

    sequence: int
    flags: int
    obs: np.ndarray
    """float32 ``[obs_dim]``."""
    reward: float | None
    """The reward (version 2), None for a version-1 packet."""
    version: int
    """1 or 2 (the magic's)."""


class Header(NamedTuple):
    """The 12-byte header of a packet, as read once by :func:`read_header`."""

    magic: int
    sequence: int
    dim: int
    flags: int


def read_header(data: Any, size: int) -> Header | None:
    """The header of a datagram of ``size`` bytes in ``data``; None when it is shorter than a
    header. Read once per datagram: the checks below take it instead of reading it again."""
    if size < HEADER_SIZE:
        return None
    return Header._make(HEADER.unpack_from(data))


# --- argument checks ------------------------------------------------------------------------------


def check_dim(value: Any, name: str) -> int:
    """A packet's number of floats: an integer in [1, 65535] (the u16 ``dim`` field)."""
    return check_int(value, name, minimum=1, maximum=MAX_DIM)


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


def _required_key(key: bytes | None) -> bytes:
    """A key from :func:`check_key` where one is required: None is a TypeError (as ``hmac.digest``
    would raise)."""
    if key is None:
        raise TypeError(f"key: expected bytes (at least {MIN_KEY_SIZE}), got None")
    return key


# --- data packets ---------------------------------------------------------------------------------


def packet_size(dim: int, authenticated: bool = False) -> int:
    """Bytes of a packet with ``dim`` floats: ``12 + 4 * dim`` (+ 32 when authenticated)."""
    return HEADER_SIZE + 4 * dim + (TAG_SIZE if authenticated else 0)


def observation_size(obs_dim: int, version: int = OBSERVATION_VERSION, authenticated: bool = False) -> int:
    """Bytes of an observation packet: ``12 + 4 * (obs_dim + 1)`` in version 2 (the reward),
    ``12 + 4 * obs_dim`` in version 1 (+ 32 when authenticated)."""
    check_observation_version(version)
    return packet_size(obs_dim + (version == 2), authenticated)


def check_observation_version(version: Any, name: str = "version") -> int:
    """An observation packet version: 1 or 2."""
    if isinstance(version, bool) or version not in OBSERVATION_MAGICS:
        raise ValueError(f"{name}: expected an observation packet version, one of {sorted(OBSERVATION_MAGICS)}, "
                         f"got {version!r}")
    return int(version)


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
    return _pack(magic, sequence, values, flags, key, b"")


def pack_observation(
    sequence: int,
    obs: np.ndarray | Sequence[float],
    flags: int = 0,
    *,
    reward: float | None = None,
    key: bytes | None = None,
) -> bytes:
    """One observation packet: version 2 (``b"BMO2"``: ``obs`` then ``reward`` as float32) when
    ``reward`` is given, version 1 (``b"BMOB"``, the first layout) when it is None; tagged with
    ``key`` as :func:`pack_packet`. NaN or infinity are carried as they are (the controller
    answers them with the safe action).

    Raises:
        ValueError: as :func:`pack_packet`, or naming ``reward`` (not a real number).
    """
    if reward is None:
        return _pack(OBS_MAGIC, sequence, obs, flags, key, b"")
    if isinstance(reward, (bool, np.bool_)) or not isinstance(reward, (int, float, np.integer, np.floating)):
        raise ValueError(f"reward: expected a real number or None, got {reward!r}")
    return _pack(OBS_V2_MAGIC, sequence, obs, flags, key, np.asarray(reward, "<f4").tobytes())


def _pack(magic: int, sequence: int, values: Any, flags: int, key: bytes | None, trailer: bytes) -> bytes:
    """Header (``dim`` = the number of ``values``) + values as float32 + ``trailer`` [+ tag]."""
    magic = check_int(magic, "magic", minimum=0, maximum=MAX_U32)
    sequence = check_int(sequence, "sequence", minimum=0, maximum=MAX_U32)
    flags = check_int(flags, "flags", minimum=0, maximum=MAX_U16)
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
    if payload.size > MAX_DIM:
        raise ValueError(f"values: expected at most {MAX_DIM} numbers (the u16 dim field), got {payload.size}")
    if key is not None:
        flags |= FLAG_AUTHENTICATED
    packet = HEADER.pack(magic, sequence, payload.size, flags) + payload.tobytes() + trailer
    return packet if key is None else packet + hmac.digest(key, packet, DIGEST)


def check_packet(
    data: Any, size: int, header: Header | None, magic: int, dim: int, keys: Sequence[bytes] | None,
    values: int | None = None,
) -> tuple[str | None, int]:
    """Is the datagram of ``size`` bytes in ``data``, whose header is ``header`` (from
    :func:`read_header`), a valid packet of this ``magic`` and ``dim``, with ``values`` float32
    values after the header (default ``dim``; ``dim + 1`` for a version-2 observation)?
    ``(reason or None, index of the key in keys whose tag verifies)``; reasons ``"size"``,
    ``"magic"``, ``"dim"``, ``"auth"``. ``keys`` None: no authentication; an empty sequence:
    authenticated but no key to verify with (no session yet)."""
    if header is None:
        return "size", -1
    if header.magic != magic:
        return "magic", -1
    if header.dim != dim:
        return "dim", -1
    if bool(header.flags & FLAG_AUTHENTICATED) != (keys is not None):
        return "auth", -1
    end = HEADER_SIZE + 4 * (dim if values is None else values)
    if size != end + (0 if keys is None else TAG_SIZE):
        return "size", -1
    if keys is None:
        return None, -1
    view = memoryview(data)
    for index, key in enumerate(keys):
        if hmac.compare_digest(hmac.digest(key, view[:end], DIGEST), view[end:size]):
            return None, index
    return "auth", -1


def packet_values(data: Any, dim: int) -> np.ndarray:
    """The ``dim`` float32 values after the header of a valid packet, as a view of ``data``."""
    return np.frombuffer(data, "<f4", dim, HEADER_SIZE)


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
    dim = check_dim(dim, "dim")
    key = check_key(key)
    size = len(data)
    header = read_header(data, size)
    reason, _ = check_packet(data, size, header, magic, dim, None if key is None else (key,))
    if reason is not None:
        raise PacketError(
            reason, f"not a valid packet (magic {magic:#010x}, dim {dim}, {size} bytes): {_REASONS[reason]}"
        )
    assert header is not None
    return header.sequence, header.flags, packet_values(data, dim).astype(np.float32)


def unpack_packet(
    data: bytes | bytearray | memoryview, magic: int, dim: int, key: bytes | None = None
) -> tuple[int, int, np.ndarray] | None:
    """:func:`parse_packet`, with None instead of the ``PacketError``."""
    try:
        return parse_packet(data, magic, dim, key=key)
    except PacketError:
        return None


def check_observation(
    data: Any, size: int, header: Header | None, obs_dim: int, keys: Sequence[bytes] | None
) -> tuple[str | None, int, int]:
    """:func:`check_packet` for an observation packet of either version: ``(reason or None, key
    index, version)`` (version 0 when the magic is neither's: reason ``"magic"``)."""
    version = 0 if header is None else OBSERVATION_VERSIONS.get(header.magic, 0)
    magic = OBSERVATION_MAGICS[version] if version else OBS_V2_MAGIC
    reason, index = check_packet(data, size, header, magic, obs_dim, keys, obs_dim + (version == 2))
    return reason, index, version


def observation_reward(data: Any, obs_dim: int) -> float:
    """The reward of a valid version-2 observation packet (the float32 after the observation)."""
    return float(_REWARD.unpack_from(data, HEADER_SIZE + 4 * obs_dim)[0])


def parse_observation(data: bytes | bytearray | memoryview, obs_dim: int, *, key: bytes | None = None) -> Observation:
    """An observation packet of either version (:class:`Observation`: sequence, flags, obs float32
    ``[obs_dim]``, reward or None, version), checked as :func:`parse_packet` checks packets.

    Raises:
        PacketError: (a ``ValueError``) for any other datagram, with the ``reason``.
    """
    obs_dim = check_dim(obs_dim, "obs_dim")
    key = check_key(key)
    size = len(data)
    header = read_header(data, size)
    reason, _, version = check_observation(data, size, header, obs_dim, None if key is None else (key,))
    if reason is not None:
        raise PacketError(
            reason, f"not a valid observation packet (version 1 or 2, obs_dim {obs_dim}, {size} bytes): "
            f"{_REASONS[reason]}"
        )
    assert header is not None
    reward = observation_reward(data, obs_dim) if version == 2 else None
    return Observation(header.sequence, header.flags, packet_values(data, obs_dim).astype(np.float32), reward, version)


# --- sequences ------------------------------------------------------------------------------------


def sequence_distance(sequence: int, last: int) -> int:
    """How far ``sequence`` is ahead of ``last`` modulo 2**32 (serial-number arithmetic)."""
    return (sequence - last) % SEQ_MOD


def is_newer(sequence: int, last: int) -> bool:
    """Serial-number order: ``sequence`` comes after ``last`` (within half the 32-bit range)."""
    return 0 < sequence_distance(sequence, last) < SEQ_MOD // 2


# --- handshake and sessions -----------------------------------------------------------------------


def new_nonce() -> bytes:
    """A fresh random per-session nonce (``NONCE_SIZE`` bytes from ``os.urandom``)."""
    return os.urandom(NONCE_SIZE)


def session_key(key: bytes, robot_nonce: bytes, controller_nonce: bytes) -> bytes:
    """The key of one session: HMAC-SHA256 under the shared ``key`` of
    ``b"bmaml-udp session v2" + robot_nonce + controller_nonce``. Observation and action packets
    of the session carry tags under it (:func:`pack_packet` with ``key=session_key(...)``)."""
    checked = check_key(key)
    if len(robot_nonce) != NONCE_SIZE or len(controller_nonce) != NONCE_SIZE:
        raise ValueError(f"nonces: expected {NONCE_SIZE} bytes each")
    return hmac.digest(_required_key(checked), _SESSION_LABEL + bytes(robot_nonce) + bytes(controller_nonce), DIGEST)


def pack_handshake(magic: int, key: bytes, robot_nonce: bytes, controller_nonce: bytes = _ZERO_NONCE) -> bytes:
    """A HELLO (``HELLO_MAGIC``, the robot's nonce, zeros for the controller's) or WELCOME
    (``WELCOME_MAGIC``, both nonces) packet, tagged under the shared ``key``."""
    checked = check_key(key)
    if magic not in (HELLO_MAGIC, WELCOME_MAGIC):
        raise ValueError(f"magic: expected HELLO_MAGIC or WELCOME_MAGIC, got {magic:#010x}")
    if len(robot_nonce) != NONCE_SIZE or len(controller_nonce) != NONCE_SIZE:
        raise ValueError(f"nonces: expected {NONCE_SIZE} bytes each")
    body = HEADER.pack(magic, PROTOCOL_VERSION, 2 * NONCE_SIZE, FLAG_AUTHENTICATED) + _NONCES.pack(
        bytes(robot_nonce), bytes(controller_nonce)
    )
    return body + hmac.digest(_required_key(checked), body, DIGEST)


def parse_handshake(
    data: Any, magic: int, key: bytes, size: int | None = None, *, header: Header | None = None
) -> tuple[bytes, bytes] | None:
    """``(robot_nonce, controller_nonce)`` of a valid handshake packet of this ``magic`` (right
    length, version, fields and tag under ``key``), None for anything else. ``size``: the bytes
    of ``data`` that are the datagram (default all); ``header``: its header when already read
    (:func:`read_header`)."""
    size = len(data) if size is None else size
    if size != HANDSHAKE_SIZE:
        return None
    if header is None:
        header = read_header(data, size)
    assert header is not None  # size == HANDSHAKE_SIZE > HEADER_SIZE
    if (
        header.magic != magic
        or header.sequence != PROTOCOL_VERSION
        or header.dim != 2 * NONCE_SIZE
        or header.flags != FLAG_AUTHENTICATED
    ):
        return None
    view = memoryview(data)
    if not hmac.compare_digest(hmac.digest(key, view[:_HANDSHAKE_BODY], DIGEST), view[_HANDSHAKE_BODY:size]):
        return None
    robot_nonce, controller_nonce = _NONCES.unpack_from(data, HEADER_SIZE)
    if magic == WELCOME_MAGIC and controller_nonce == _ZERO_NONCE:
        return None
    return robot_nonce, controller_nonce


# --- addresses and sockets ------------------------------------------------------------------------


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


def resolve_address(address: tuple[str, int], name: str) -> tuple[str, int]:
    """``(ip, port)`` of a checked ``(host, port)``: the ``(host, port)`` datagrams come from."""
    try:
        return socket.gethostbyname(address[0]), int(address[1])
    except (OSError, UnicodeError) as error:
        raise ValueError(f"{name}: cannot resolve host {address[0]!r} ({error})") from None


def bound_socket(bind: tuple[str, int]) -> socket.socket:
    """A UDP socket bound to ``bind``; ``ValueError`` naming ``bind`` when that fails."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(bind)
    except (OSError, OverflowError, TypeError, UnicodeError) as error:
        sock.close()
        raise ValueError(f"bind: cannot bind UDP {bind!r} ({error})") from None
    return sock


# --- keys -----------------------------------------------------------------------------------------


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
    keys.add_argument(
        "--udp-key-file",
        default=None,
        metavar="PATH",
        help="authenticate packets (HMAC-SHA256) with the key in this file: hex digits, >= 16 bytes, "
        f"e.g. `openssl rand -hex 32 > robot.key`; {peer} needs the same key",
    )
    keys.add_argument(
        "--udp-key-env",
        default=None,
        metavar="VAR",
        help="as --udp-key-file, the key (hex) in environment variable VAR",
    )


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
        raise ValueError(
            f"{where}: expected at least {MIN_KEY_SIZE} bytes ({2 * MIN_KEY_SIZE} hex digits), got {len(key)}"
        )
    return key
