"""The UDP bridge's packets and arguments, without a network: header fields checked when packing,
authenticated packets (HMAC-SHA256 tag) rejected when tampered with or signed with another key,
addresses and keys checked where they are given.

The bridge on sockets (pinning, replays, sequence jumps, a robot thread) is tested in
``test_deploy_udp_security.py``; the compatibility module ``bmaml_robot_deploy.udp`` at the end.
"""

from __future__ import annotations

import hashlib
import hmac
import socket

import numpy as np
import pytest
from deploy_helpers import KEY, OTHER_KEY

from bmaml_robot_deploy import UdpRobot, UdpRobotServer
from bmaml_robot_deploy.udp_server import ServerStats
from bmaml_robot_deploy.udp_wire import (
    ACTION_MAGIC,
    FLAG_AUTHENTICATED,
    FLAG_NEW_EPISODE,
    FLAG_TERMINATED,
    FLAG_WATCHDOG,
    HEADER_SIZE,
    HELLO_MAGIC,
    OBS_MAGIC,
    TAG_SIZE,
    WELCOME_MAGIC,
    ActionFlag,
    ObservationFlag,
    PacketError,
    check_address,
    key_from_env,
    pack_handshake,
    pack_packet,
    packet_size,
    parse_handshake,
    parse_packet,
    read_header,
    read_key_file,
    session_key,
    unpack_packet,
)

OBS = np.linspace(-1, 1, 17, dtype=np.float32)


# --- packing: every header field is checked ---------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(flags=-1), r"^flags: expected an integer in \[0, 65535\], got -1$"),
        (dict(flags=1 << 16), r"^flags: expected an integer in \[0, 65535\], got 65536$"),
        (dict(flags=1.0), r"^flags: expected an integer in \[0, 65535\], got 1.0$"),
        (dict(flags=FLAG_AUTHENTICATED), r"^flags: bit 15 \(AUTHENTICATED\) is set by giving key=, got 0x8000$"),
        (dict(sequence=-1), r"^sequence: expected an integer in \[0, 4294967295\], got -1$"),
        (dict(sequence=2**32), r"^sequence: expected an integer in \[0, 4294967295\], got 4294967296$"),
        (dict(sequence=True), r"^sequence: expected an integer in \[0, 4294967295\], got True$"),
        (dict(magic=-1), r"^magic: expected an integer in \[0, 4294967295\], got -1$"),
        (dict(magic="BMOB"), r"^magic: expected an integer in \[0, 4294967295\], got 'BMOB'$"),
        (dict(values=np.zeros(65536)), r"^values: expected at most 65535 numbers \(the u16 dim field\), got 65536$"),
        (dict(values=["a", "b"]), r"^values: expected real numbers, got dtype <U1$"),
        (dict(values=[[1.0], [1.0, 2.0]]), r"^values: expected real numbers, got list$"),
        (dict(values=np.zeros(3, complex)), r"^values: expected real numbers, got dtype complex128$"),
        (dict(key=b"short"), r"^key: expected at least 16 bytes, got 5$"),
    ],
)
def test_pack_packet_checks_every_header_field(kwargs, message):
    """flags=-1 used to raise struct.error (naming nothing); bit 15 is the authentication flag."""
    args = dict(magic=OBS_MAGIC, sequence=1, values=OBS, flags=0) | kwargs
    with pytest.raises(ValueError, match=message):
        pack_packet(args.pop("magic"), args.pop("sequence"), args.pop("values"), **args)


def test_a_key_that_is_not_bytes():
    with pytest.raises(TypeError, match=r"^key: expected bytes \(at least 16\) or None, got str$"):
        pack_packet(OBS_MAGIC, 1, OBS, key="a" * 32)


def test_the_layout_without_a_key_is_unchanged():
    """Unauthenticated packets are byte for byte those of the original layout."""
    packet = pack_packet(OBS_MAGIC, 7, OBS, FLAG_NEW_EPISODE)
    assert packet == b"BMOB" + (7).to_bytes(4, "little") + (17).to_bytes(2, "little") + b"\x01\x00" + OBS.astype("<f4").tobytes()
    assert len(packet) == packet_size(17) == 80
    sequence, flags, values = parse_packet(packet, OBS_MAGIC, 17)
    assert (sequence, flags) == (7, FLAG_NEW_EPISODE) and np.array_equal(values, OBS)


def test_the_authenticated_layout_is_the_documented_one():
    """Bit 15 set, then a 32-byte HMAC-SHA256 of header and payload (what a firmware author
    reimplements from the docstring)."""
    packet = pack_packet(ACTION_MAGIC, 9, np.ones(6), key=KEY)
    assert len(packet) == packet_size(6, True) == HEADER_SIZE + 24 + TAG_SIZE
    body = pack_packet(ACTION_MAGIC, 9, np.ones(6))
    body = body[:10] + FLAG_AUTHENTICATED.to_bytes(2, "little") + body[12:]
    assert packet == body + hmac.new(KEY, body, hashlib.sha256).digest()
    sequence, flags, values = parse_packet(packet, ACTION_MAGIC, 6, key=KEY)
    assert sequence == 9 and flags == FLAG_AUTHENTICATED and np.array_equal(values, np.ones(6, np.float32))


# --- parsing: malformed, tampered, other key ----------------------------------------------------


def test_every_single_bit_flip_of_an_authenticated_packet_is_rejected():
    packet = pack_packet(OBS_MAGIC, 123456, OBS, FLAG_NEW_EPISODE, key=KEY)
    reasons = set()
    for bit in range(8 * len(packet)):
        tampered = bytearray(packet)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(PacketError) as error:
            parse_packet(bytes(tampered), OBS_MAGIC, 17, key=KEY)
        reasons.add(error.value.reason)
        assert unpack_packet(bytes(tampered), OBS_MAGIC, 17, key=KEY) is None
    # Magic and dim flips are malformed; everything else (sequence, flags, payload, tag) fails the tag.
    assert reasons == {"magic", "dim", "auth"}
    assert parse_packet(packet, OBS_MAGIC, 17, key=KEY)[0] == 123456


@pytest.mark.parametrize(
    ("sent_with", "read_with"),
    [(OTHER_KEY, KEY), (None, KEY), (KEY, None)],
    ids=["other key", "no tag for a keyed receiver", "a tag for a receiver without key"],
)
def test_a_packet_signed_with_another_key_or_none_is_rejected(sent_with, read_with):
    packet = pack_packet(OBS_MAGIC, 1, OBS, key=sent_with)
    with pytest.raises(PacketError, match=r"authentication failed") as error:
        parse_packet(packet, OBS_MAGIC, 17, key=read_with)
    assert error.value.reason == "auth" and isinstance(error.value, ValueError)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "size"),
        (b"BMOB", "size"),
        (pack_packet(ACTION_MAGIC, 1, OBS), "magic"),
        (pack_packet(OBS_MAGIC, 1, OBS[:16]), "dim"),
        (pack_packet(OBS_MAGIC, 1, OBS) + b"\0", "size"),
        (pack_packet(OBS_MAGIC, 1, OBS)[:-1], "size"),
    ],
)
def test_malformed_packets_raise_packet_error_with_the_reason(data, reason):
    with pytest.raises(PacketError) as error:
        parse_packet(data, OBS_MAGIC, 17)
    assert error.value.reason == reason
    assert unpack_packet(data, OBS_MAGIC, 17) is None


def test_non_finite_values_are_carried_not_hidden():
    """The packet layer passes a robot's NaN on; the controller answers it with the safe action."""
    values = OBS.copy()
    values[[0, 3]] = [np.nan, -np.inf]
    got = parse_packet(pack_packet(OBS_MAGIC, 2, values, key=KEY), OBS_MAGIC, 17, key=KEY)[2]
    assert np.array_equal(got, values, equal_nan=True)


# --- addresses ------------------------------------------------------------------------------------


def test_a_host_port_string_is_an_address():
    """'127.0.0.1:9000' used to become ('0.0.0.1', 2): its first and second characters."""
    with UdpRobot(17, 6, bind="127.0.0.1:0", robot_address="127.0.0.1:9000") as robot:
        assert robot.robot_address == ("127.0.0.1", 9000)
        assert robot.address[0] == "127.0.0.1" and robot.address[1] > 0
    with UdpRobot(17, 6, bind=("127.0.0.1", 0), robot_address=("localhost", 9000)) as robot:
        assert robot.robot_address == ("127.0.0.1", 9000)
    assert check_address(["127.0.0.1", np.int64(5)], "x") == ("127.0.0.1", 5)


ROBOT_EXPECTED = r"expected \(host, port\) or 'HOST:PORT' with a port in \[1, 65535\], got "
BIND_EXPECTED = r"expected \(host, port\) or 'HOST:PORT' with a port in \[0, 65535\], got "


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(robot_address=("127.0.0.1", 99999)), ValueError, rf"^robot_address: {ROBOT_EXPECTED}\('127.0.0.1', 99999\)$"),
        (dict(robot_address=("127.0.0.1", -1)), ValueError, rf"^robot_address: {ROBOT_EXPECTED}\('127.0.0.1', -1\)$"),
        (dict(robot_address=("127.0.0.1", 0)), ValueError, rf"^robot_address: {ROBOT_EXPECTED}"),
        (dict(robot_address="127.0.0.1:99999"), ValueError, rf"^robot_address: {ROBOT_EXPECTED}'127.0.0.1:99999'$"),
        (dict(robot_address="127.0.0.1:0"), ValueError, rf"^robot_address: {ROBOT_EXPECTED}'127.0.0.1:0'$"),
        (dict(robot_address="127.0.0.1"), ValueError, rf"^robot_address: {ROBOT_EXPECTED}'127.0.0.1'$"),
        (dict(robot_address="127.0.0.1:port"), ValueError, rf"^robot_address: {ROBOT_EXPECTED}'127.0.0.1:port'$"),
        (dict(robot_address=("127.0.0.1", "9000")), TypeError, rf"^robot_address: {ROBOT_EXPECTED}"),
        (dict(robot_address=("127.0.0.1", 9000, 0)), TypeError, rf"^robot_address: {ROBOT_EXPECTED}"),
        (dict(robot_address=9000), TypeError, rf"^robot_address: {ROBOT_EXPECTED}9000$"),
        (dict(robot_address=("", 9000)), ValueError, rf"^robot_address: {ROBOT_EXPECTED}"),
        (dict(robot_address=("no-such-host.invalid", 9000)), ValueError,
         r"^robot_address: cannot resolve host 'no-such-host.invalid'"),
        (dict(bind=("127.0.0.1", 99999)), ValueError, rf"^bind: {BIND_EXPECTED}\('127.0.0.1', 99999\)$"),
        (dict(bind="127.0.0.1:-1"), ValueError, rf"^bind: {BIND_EXPECTED}'127.0.0.1:-1'$"),
        (dict(bind=("127.0.0.1",)), TypeError, rf"^bind: {BIND_EXPECTED}"),
        (dict(key=b"0123"), ValueError, r"^key: expected at least 16 bytes, got 4$"),
        (dict(max_sequence_jump=0), ValueError, r"^max_sequence_jump: expected an integer in \[1, 2147483647\], got 0$"),
    ],
)
def test_bad_udp_robot_arguments_fail_at_construction(kwargs, error, message):
    """Port 99999 used to fail at the first send (OverflowError), a bad robot address silently
    became another one."""
    with pytest.raises(error, match=message):
        UdpRobot(17, 6, **(dict(bind=("127.0.0.1", 0)) | kwargs))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(controller_address="127.0.0.1:99999"), ValueError, rf"^controller_address: {ROBOT_EXPECTED}'127.0.0.1:99999'$"),
        (dict(controller_address=("127.0.0.1", 0)), ValueError, r"^controller_address: expected .* port in \[1, 65535\]"),
        (dict(controller_address=9870), TypeError, r"^controller_address: expected \(host, port\)"),
        (dict(bind=("127.0.0.1", 70000)), ValueError, rf"^bind: {BIND_EXPECTED}"),
        (dict(first_sequence=-1), ValueError, r"^first_sequence: expected an integer in \[0, 4294967295\], got -1$"),
        (dict(max_resends=-1), ValueError, r"^max_resends: expected an integer >= 0, got -1$"),
        (dict(key="k" * 32), TypeError, r"^key: expected bytes"),
    ],
)
def test_bad_robot_server_arguments_fail_at_construction(kwargs, error, message):
    args = dict(controller_address=("127.0.0.1", 9870)) | kwargs
    with pytest.raises(error, match=message):
        UdpRobotServer(args.pop("controller_address"), 17, 6, **args)


def test_the_server_accepts_a_host_port_string():
    with UdpRobotServer("127.0.0.1:9870", 17, 6, bind="127.0.0.1:0") as server:
        assert server.controller_address == ("127.0.0.1", 9870)


# --- keys from files and the environment ----------------------------------------------------------


def test_keys_are_read_as_hex_from_a_file_or_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "robot.key"
    path.write_text(KEY.hex() + "\n")
    assert read_key_file(path) == KEY
    path.write_text(KEY.hex()[:32] + " \n " + KEY.hex()[32:])  # whitespace is ignored
    assert read_key_file(path) == KEY
    monkeypatch.setenv("ROBOT_KEY", KEY.hex().upper())
    assert key_from_env("ROBOT_KEY") == KEY


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not hex at all, a secret", r"expected the key as hex digits .* got 19 characters that are not"),
        ("abc", r"expected the key as hex digits"),
        ("00" * 15, r"expected at least 16 bytes \(32 hex digits\), got 15"),
        (None, r"cannot read key file"),
    ],
)
def test_bad_key_files_are_named_without_showing_the_key(tmp_path, content, message):
    path = tmp_path / "robot.key"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=rf"^--udp-key-file: .*{message}") as error:
        read_key_file(path)
    assert str(path) in str(error.value) and "secret" not in str(error.value)


def test_a_missing_key_variable(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VARIABLE", raising=False)
    with pytest.raises(ValueError, match=r"^--udp-key-env: environment variable 'NO_SUCH_KEY_VARIABLE' is not set$"):
        key_from_env("NO_SUCH_KEY_VARIABLE")


def test_the_server_drops_actions_from_strangers_and_with_bad_tags():
    """The robot side too talks only to its controller: a stranger's action, a tampered one, one
    signed with another key and one answering an older observation are dropped; the real one
    is taken."""
    controller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    controller.bind(("127.0.0.1", 0))
    stranger.bind(("127.0.0.1", 0))
    with UdpRobotServer(controller.getsockname(), 17, 6, key=KEY) as server:
        stats = ServerStats()
        robot_nonce = parse_handshake(server.start_session(), HELLO_MAGIC, KEY)[0]
        controller_nonce = bytes(range(16))
        controller.sendto(pack_handshake(WELCOME_MAGIC, KEY, robot_nonce, controller_nonce), server.address)
        assert server.wait_for_session(2.0, stats)
        assert controller.recv(65536)[:4] == b"BMSR"
        session = session_key(KEY, robot_nonce, controller_nonce)
        controller.sendto(pack_packet(ACTION_MAGIC, 5, np.ones(6), key=KEY), server.address)  # the shared key: no session
        good = pack_packet(ACTION_MAGIC, 5, np.full(6, 0.5), key=session)
        tampered = bytearray(good)
        tampered[HEADER_SIZE] ^= 0x40
        stranger.sendto(pack_packet(ACTION_MAGIC, 5, np.ones(6), key=session), server.address)
        controller.sendto(bytes(tampered), server.address)
        controller.sendto(pack_packet(ACTION_MAGIC, 5, np.ones(6), key=OTHER_KEY), server.address)
        controller.sendto(pack_packet(ACTION_MAGIC, 5, np.ones(6)), server.address)
        controller.sendto(pack_packet(ACTION_MAGIC, 4, np.ones(6), key=session), server.address)  # replay: older
        controller.sendto(good, server.address)
        action, flags = server.receive_action(5, 2.0, stats)
        assert np.array_equal(action, np.full(6, 0.5, np.float32)) and flags == FLAG_AUTHENTICATED
        assert stats.dropped == 6 and stats.dropped_unknown_sender == 1 and stats.dropped_unauthenticated == 4
    controller.close()
    stranger.close()


def test_the_handshake_layout_is_the_documented_one():
    """76 bytes: header (magic, version 2, 32, AUTHENTICATED), robot nonce, controller nonce,
    HMAC-SHA256 under the shared key; the session key is HMAC(key, label + both nonces)."""
    nr, nc = bytes(range(16)), bytes(range(16, 32))
    packet = pack_handshake(WELCOME_MAGIC, KEY, nr, nc)
    body = b"BMSC" + (2).to_bytes(4, "little") + (32).to_bytes(2, "little") + FLAG_AUTHENTICATED.to_bytes(2, "little") + nr + nc
    assert packet == body + hmac.new(KEY, body, hashlib.sha256).digest() and len(packet) == 76
    assert parse_handshake(packet, WELCOME_MAGIC, KEY) == (nr, nc)
    assert parse_handshake(packet, HELLO_MAGIC, KEY) is None and parse_handshake(packet, WELCOME_MAGIC, bytes(32)) is None
    assert session_key(KEY, nr, nc) == hmac.new(KEY, b"bmaml-udp session v2" + nr + nc, hashlib.sha256).digest()


# --- flags: one namespace per packet kind ----------------------------------------------------------


def test_flags_have_one_namespace_per_direction_and_the_first_versions_bits():
    """NEW_EPISODE (observations, robot -> controller) and WATCHDOG (actions, controller -> robot)
    are both bit 0: the magic says which kind a packet is, so they never meet. The bits are those
    of the first version: an old packet decodes the same."""
    assert ObservationFlag.NEW_EPISODE == FLAG_NEW_EPISODE == 1 and ObservationFlag.TERMINATED == FLAG_TERMINATED == 2
    assert ActionFlag.WATCHDOG == FLAG_WATCHDOG == 1
    assert ObservationFlag.AUTHENTICATED == ActionFlag.AUTHENTICATED == FLAG_AUTHENTICATED == 0x8000
    assert all(type(flag) is int for flag in (FLAG_NEW_EPISODE, FLAG_TERMINATED, FLAG_WATCHDOG, FLAG_AUTHENTICATED))
    assert not hasattr(ActionFlag, "NEW_EPISODE") and not hasattr(ObservationFlag, "WATCHDOG")
    # An observation packet of the first version (bytes written out), and an action packet.
    old_obs = b"BMOB" + (7).to_bytes(4, "little") + (17).to_bytes(2, "little") + b"\x03\x00" + OBS.astype("<f4").tobytes()
    sequence, flags, values = parse_packet(old_obs, OBS_MAGIC, 17)
    assert (sequence, flags) == (7, 3) and ObservationFlag(flags) == ObservationFlag.NEW_EPISODE | ObservationFlag.TERMINATED
    old_action = b"BMAC" + (7).to_bytes(4, "little") + (6).to_bytes(2, "little") + b"\x01\x00" + bytes(24)
    assert parse_packet(old_action, ACTION_MAGIC, 6)[1] == ActionFlag.WATCHDOG
    # The same bit in the other kind is not accepted as that kind: the magic decides.
    assert unpack_packet(old_action, OBS_MAGIC, 6) is None and unpack_packet(old_obs, ACTION_MAGIC, 17) is None
    assert pack_packet(OBS_MAGIC, 7, OBS, ObservationFlag.NEW_EPISODE | ObservationFlag.TERMINATED) == old_obs


def test_the_header_is_read_once_and_passed_on():
    packet = pack_packet(OBS_MAGIC, 9, OBS, FLAG_NEW_EPISODE, key=KEY)
    header = read_header(packet, len(packet))
    assert header == (OBS_MAGIC, 9, 17, FLAG_NEW_EPISODE | FLAG_AUTHENTICATED)
    assert (header.magic, header.sequence, header.dim, header.flags) == tuple(header)
    assert read_header(packet, HEADER_SIZE - 1) is None and read_header(b"BMOB", 4) is None
    hello = pack_handshake(HELLO_MAGIC, KEY, bytes(range(16)))
    assert parse_handshake(hello, HELLO_MAGIC, KEY, header=read_header(hello, len(hello))) == (bytes(range(16)), bytes(16))


def test_the_old_udp_module_still_exports_the_bridge():
    """``bmaml_robot_deploy.udp`` is the bridge's first module name: its names stay importable."""
    from bmaml_robot_deploy import udp, udp_link, udp_server, udp_wire

    for name in udp.__all__:
        assert hasattr(udp, name), name
    assert udp.UdpRobot is udp_link.UdpRobot and udp.UdpRobotServer is udp_server.UdpRobotServer
    assert udp.pack_packet is udp_wire.pack_packet and udp.FLAG_WATCHDOG == udp_wire.FLAG_WATCHDOG
    assert udp.DEFAULT_MAX_SEQUENCE_JUMP == 100 and udp.ServerStats is ServerStats
