"""Property tests (Hypothesis) of the deploy runtime's untrusted inputs: the UDP packet parser and
``UdpRobot`` fed arbitrary datagrams, and ``Controller.act`` fed arbitrary float32 observations.

- parsing arbitrary bytes raises nothing but ``PacketError``; what it accepts and hands to the
  controller never makes the policy run on a non-finite observation (the safe action, counted,
  state untouched);
- pack/parse round-trip bit for bit, with and without a key;
- ``UdpRobot`` on a socket counts every datagram exactly once (accepted or one drop counter) and
  returns only what a valid packet carried;
- ``Controller.act``: the action is always finite and inside the bounds; non-finite observations
  give the safe action and are counted.

Bounded by the "default" profile of deploy/tests/conftest.py (40 examples each); the long
campaign: ``pytest --hypothesis-profile=long deploy/tests/test_deploy_properties.py``.
"""

from __future__ import annotations

import hmac
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("hypothesis")
from deploy_helpers import ACT_DIM, KEY, OBS_DIM, open_session  # noqa: E402
from hypothesis import event, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from bmaml_robot_deploy import Controller, UdpRobot  # noqa: E402
from bmaml_robot_deploy.testing import save_model, toy_metadata, toy_policy  # noqa: E402
from bmaml_robot_deploy.udp_wire import (  # noqa: E402
    ACTION_MAGIC,
    FLAG_AUTHENTICATED,
    HEADER,
    OBS_MAGIC,
    TAG_SIZE,
    PacketError,
    pack_packet,
    parse_packet,
    unpack_packet,
)

LOW = np.array([-0.1, -0.2, -0.3, 0.0, -1.0, -0.5], np.float32)
HIGH = np.array([0.1, 0.2, 0.3, 0.4, 1.0, -0.25], np.float32)
SAFE = np.array([0.05, 0.0, 0.0, 0.2, 0.0, -0.3], np.float32)

u32 = st.integers(0, 2**32 - 1)
u16 = st.integers(0, 2**16 - 1)
float32s = st.floats(width=32)  # NaN, infinities, subnormals, the extremes included


def saturating_policy(path: Path, kind: str) -> str:
    """A toy policy whose outputs often leave the metadata's narrow, asymmetric bounds: its graph
    clips to [-1, 1] only, so the bounds are the controller's to enforce."""
    weights = toy_policy(kind, hidden_size=16, seed=6)[1].weights
    weights["mean.weight"] = weights["mean.weight"] * 50
    props = toy_metadata(kind, OBS_DIM, ACT_DIM, 16, action_low=LOW.tolist(), action_high=HIGH.tolist()).to_props()
    return save_model(toy_policy(kind, weights=weights, props=props)[0], path)


@pytest.fixture(scope="module")
def controllers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Controller]:
    tmp = tmp_path_factory.mktemp("properties")
    paths = {kind: saturating_policy(tmp / f"{kind}.onnx", kind) for kind in ("mlp", "gru")}
    return {
        "mlp": Controller(paths["mlp"], safe_action=SAFE),
        "gru": Controller(paths["gru"], safe_action=SAFE),
        "gru-batch": Controller(paths["gru"], safe_action=SAFE, batch_size=3),
    }


def check_action(controller: Controller, obs: np.ndarray) -> np.ndarray:
    """``controller.act(obs)`` and the properties every action has: finite, inside the bounds;
    the safe action (counted, state untouched) exactly for the non-finite observation rows."""
    state = controller.state
    count, steps = controller.nonfinite_count, controller.steps
    action = controller.act(obs)
    assert action.dtype == np.float32 and np.all(np.isfinite(action))
    assert np.all(action >= LOW) and np.all(action <= HIGH)
    bad = ~np.isfinite(obs).reshape(-1, OBS_DIM).all(axis=1)
    assert controller.nonfinite_count == count + int(bad.sum()) and controller.steps == steps + 1
    rows = action.reshape(-1, ACT_DIM)
    assert np.array_equal(rows[bad], np.broadcast_to(SAFE, rows[bad].shape))
    for before, after in zip(state, controller.state):  # [layers, batch, hidden]
        assert np.array_equal(before[:, bad], after[:, bad])
    return action


# --- the packet parser ------------------------------------------------------------------------------


@st.composite
def datagrams(draw: st.DrawFn) -> bytes:
    """Anything: random bytes, or packets with random header fields (the right magic and dim
    often), random payload bits (NaN and infinity patterns included), a tag that is right,
    wrong or absent, and the length sometimes off."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    magic = draw(st.sampled_from([OBS_MAGIC, ACTION_MAGIC]) | u32)
    dim = draw(st.sampled_from([OBS_DIM, OBS_DIM - 1, 0]) | u16)
    flags = draw(u16 | st.sampled_from([0, 1, 3, FLAG_AUTHENTICATED, FLAG_AUTHENTICATED | 1]))
    header = HEADER.pack(magic, draw(u32), dim, flags)
    payload = draw(st.binary(min_size=4 * OBS_DIM, max_size=4 * OBS_DIM) | st.binary(max_size=100))
    tag = draw(st.sampled_from(["right", "wrong", "none"]))
    packet = header + payload
    if tag == "right":
        packet += hmac.digest(KEY, packet, "sha256")
    elif tag == "wrong":
        packet += draw(st.binary(min_size=TAG_SIZE, max_size=TAG_SIZE))
    cut = draw(st.sampled_from([None, None, None, -1, 1]))
    if cut == -1:
        packet = packet[:-1]
    elif cut == 1:
        packet += b"\0"
    return packet


@given(data=datagrams(), keyed=st.booleans())
def test_parsing_arbitrary_datagrams_raises_only_packet_error_and_never_feeds_the_policy_non_finite_values(
    controllers, data, keyed
):
    key = KEY if keyed else None
    try:
        sequence, flags, values = parse_packet(data, OBS_MAGIC, OBS_DIM, key=key)
    except PacketError as error:
        assert error.reason in {"size", "magic", "dim", "auth"}
        assert unpack_packet(data, OBS_MAGIC, OBS_DIM, key=key) is None
        return
    assert 0 <= sequence < 2**32 and 0 <= flags < 2**16 and bool(flags & FLAG_AUTHENTICATED) == keyed
    assert values.dtype == np.float32 and values.shape == (OBS_DIM,)
    assert len(data) == 12 + 4 * OBS_DIM + (TAG_SIZE if keyed else 0) and HEADER.unpack_from(data)[0] == OBS_MAGIC
    assert values.tobytes() == bytes(data[12 : 12 + 4 * OBS_DIM])  # exactly what was sent
    check_action(controllers["gru"], values)


@given(
    magic=u32,
    sequence=u32,
    flags=u16.map(lambda f: f & ~FLAG_AUTHENTICATED),
    values=hnp.arrays(np.float32, st.integers(1, 64), elements=float32s),
    key=st.none() | st.binary(min_size=16, max_size=64),
)
def test_pack_and_parse_round_trip(magic, sequence, flags, values, key):
    packet = pack_packet(magic, sequence, values, flags, key=key)
    assert len(packet) == 12 + 4 * values.size + (TAG_SIZE if key else 0)
    got_sequence, got_flags, got = parse_packet(packet, magic, values.size, key=key)
    assert got_sequence == sequence and got_flags == flags | (FLAG_AUTHENTICATED if key else 0)
    assert np.array_equal(got.view(np.uint32), values.view(np.uint32))  # bit for bit, NaN payloads too
    for wrong_length in (packet[:-1], packet + b"\0"):
        with pytest.raises(PacketError):
            parse_packet(wrong_length, magic, values.size, key=key)
    if key is not None:
        with pytest.raises(PacketError):
            parse_packet(packet, magic, values.size, key=key + b"!")  # another key


# --- UdpRobot on a socket, fed anything -----------------------------------------------------------


@st.composite
def streams(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """Up to 4 datagrams: arbitrary ones, or observation packets whose sequence is the last
    accepted one's plus a drawn offset (next, duplicates, stale, jumps, wrapped)."""
    items = []
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            items.append(("raw", draw(datagrams())))
        else:
            offset = draw(st.sampled_from([1, 1, 2, 0, -1, 150, 2**31, -(2**31)]) | st.integers(-(2**32), 2**32))
            payload = draw(hnp.arrays(np.float32, OBS_DIM, elements=float32s))
            items.append(("obs", (offset, draw(st.integers(0, 3)), payload, draw(st.sampled_from(["key", "none", "other"])))))
    return items


class Fuzzer:
    """A robot socket and the UdpRobot it talks to (watchdog far away: only packets count here)."""

    def __init__(self, key: bytes | None) -> None:
        self.key = key
        self.robot = UdpRobot(OBS_DIM, ACT_DIM, bind=("127.0.0.1", 0), key=key, receive_timeout=0, watchdog_timeout=3600)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.last = 0  # sequence of the last accepted observation, as far as the test knows
        self.session = None
        if key is not None:  # authenticated: observations are tagged under the session's key
            self.session = open_session(self.sock, self.robot, key)

    def counted(self) -> int:
        c = self.robot.counters()
        return sum(c[name] for name in c if name.startswith("dropped_") and name != "dropped_superseded") + c[
            "observations_received"
        ]

    def close(self) -> None:
        self.robot.close()
        self.sock.close()


@pytest.fixture(scope="module", params=[None, KEY], ids=["unauthenticated", "authenticated"])
def fuzzer(request: pytest.FixtureRequest):
    fuzzer = Fuzzer(request.param)
    yield fuzzer
    fuzzer.close()


@given(stream=streams())
def test_udp_robot_counts_every_datagram_once_and_returns_only_valid_observations(fuzzer, controllers, stream):
    robot = fuzzer.robot
    for kind, item in stream:
        if kind == "raw":
            data, sequence, payload = item, None, None
        else:
            offset, flags, payload, signed = item
            sequence = (fuzzer.last + offset) % 2**32
            key = {"key": fuzzer.session, "none": None, "other": fuzzer.key or bytes(32 - i for i in range(32))}[signed]
            data = pack_packet(OBS_MAGIC, sequence, payload, flags, key=key)
        before, received = fuzzer.counted(), robot.observations_received
        fuzzer.sock.sendto(data, robot.address)
        deadline = time.monotonic() + 2.0
        obs = robot.read_observation()
        while fuzzer.counted() == before and time.monotonic() < deadline:
            time.sleep(0.0005)
            obs = robot.read_observation()
        assert fuzzer.counted() == before + 1  # exactly one counter moved, exactly once
        if robot.observations_received == received:
            assert obs is None
            event("a datagram dropped")
            continue
        # Accepted: a valid packet, its payload exactly, which the controller answers safely.
        parsed = parse_packet(data, OBS_MAGIC, OBS_DIM, key=fuzzer.session)
        assert obs is not None and obs.tobytes() == parsed[2].tobytes()
        fuzzer.last = parsed[0]
        event("an observation accepted")  # --hypothesis-show-statistics: how often the happy path ran
        robot.send_action(check_action(controllers["mlp"], obs))
    assert robot.watchdog_trips == 0 and robot.robot_address in (None, fuzzer.sock.getsockname())


# --- Controller.act -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mlp", "gru"])
@given(obs=hnp.arrays(np.float32, OBS_DIM, elements=float32s))
def test_act_gives_a_finite_action_inside_the_bounds_for_any_observation(controllers, kind, obs):
    check_action(controllers[kind], obs)


@given(obs=hnp.arrays(np.float32, (3, OBS_DIM), elements=float32s | st.sampled_from([np.nan, np.inf, -np.inf, 0.0])))
def test_act_on_a_batch_replaces_exactly_the_non_finite_rows(controllers, obs):
    check_action(controllers["gru-batch"], obs)
