"""The UDP bridge between the controller and a robot, under its first module name.

Kept so that ``from bmaml_robot_deploy.udp import ...`` goes on working; the bridge lives in
three modules, one responsibility each:

- :mod:`bmaml_robot_deploy.udp_wire`: the wire format (packet and handshake layout, flags per
  packet kind, sizes, pack/parse, HMAC tags, sessions, sequence arithmetic) and the parsing of
  addresses and keys; the protocol is documented there;
- :mod:`bmaml_robot_deploy.udp_link`: the controller side, :class:`UdpRobot` (the robot the
  control loop talks to, ``bmaml-control --link udp``);
- :mod:`bmaml_robot_deploy.udp_server`: the robot side's reference, :class:`UdpRobotServer`
  (served by ``python -m bmaml_robot_deploy.udp_sim``).
"""

from bmaml_robot_deploy.udp_link import DEFAULT_MAX_SEQUENCE_JUMP, UdpRobot
from bmaml_robot_deploy.udp_server import ServerStats, UdpRobotServer
from bmaml_robot_deploy.udp_wire import (
    ACTION_MAGIC,
    FLAG_AUTHENTICATED,
    FLAG_NEW_EPISODE,
    FLAG_TERMINATED,
    FLAG_WATCHDOG,
    HANDSHAKE_SIZE,
    HEADER,
    HEADER_SIZE,
    HELLO_MAGIC,
    MIN_KEY_SIZE,
    NONCE_SIZE,
    OBS_MAGIC,
    PROTOCOL_VERSION,
    TAG_SIZE,
    WELCOME_MAGIC,
    ActionFlag,
    Header,
    ObservationFlag,
    PacketError,
    add_key_arguments,
    check_address,
    check_key,
    cli_key,
    is_newer,
    key_from_env,
    new_nonce,
    pack_handshake,
    pack_packet,
    packet_size,
    parse_address,
    parse_handshake,
    parse_packet,
    read_header,
    read_key_file,
    session_key,
    unpack_packet,
)

__all__ = [
    "ACTION_MAGIC",
    "DEFAULT_MAX_SEQUENCE_JUMP",
    "FLAG_AUTHENTICATED",
    "FLAG_NEW_EPISODE",
    "FLAG_TERMINATED",
    "FLAG_WATCHDOG",
    "HANDSHAKE_SIZE",
    "HEADER",
    "HEADER_SIZE",
    "HELLO_MAGIC",
    "MIN_KEY_SIZE",
    "NONCE_SIZE",
    "OBS_MAGIC",
    "PROTOCOL_VERSION",
    "TAG_SIZE",
    "WELCOME_MAGIC",
    "ActionFlag",
    "Header",
    "ObservationFlag",
    "PacketError",
    "ServerStats",
    "UdpRobot",
    "UdpRobotServer",
    "add_key_arguments",
    "check_address",
    "check_key",
    "cli_key",
    "is_newer",
    "key_from_env",
    "new_nonce",
    "pack_handshake",
    "pack_packet",
    "packet_size",
    "parse_address",
    "parse_handshake",
    "parse_packet",
    "read_header",
    "read_key_file",
    "session_key",
    "unpack_packet",
]
