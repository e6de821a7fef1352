"""RL^2 files in the deploy runtime, without torch: the metadata keys (``bmaml.algorithm``,
``bmaml.episodes_per_trial``, ``bmaml.input_names``; format 2), the controller feeding the previous
action, the previous reward and the episode-start flag (parity with a numpy reference, trials,
non-finite inputs, batches), the control loop with robots that do and do not report rewards, and
the UDP observation packet's version 2 (the reward) next to version 1, malformed ones included.

Toy RL^2 files are built with ``onnx.helper`` (``bmaml_robot_deploy.testing.toy_policy(rl2=True)``).
The exported RL^2 files of the main package are tested in ``tests/integration/test_export_rl2.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from pathlib import Path

import numpy as np
import pytest
from deploy_helpers import KEY, Peer, RecordingUdpRobot, free_port, settle, toy_robot

from bmaml_robot_deploy import Controller, PolicyMetadata, RewardRobot, Robot, UdpRobot, UdpRobotServer
from bmaml_robot_deploy.cli import main as control_main
from bmaml_robot_deploy.loop import run_control_loop
from bmaml_robot_deploy.metadata import (
    FORMAT_VERSION,
    KEY_ALGORITHM,
    KEY_EPISODES_PER_TRIAL,
    KEY_INPUT_NAMES,
    RL2_FORMAT_VERSION,
    RL2_KEYS,
)
from bmaml_robot_deploy.testing import ReferencePolicy, save_model, toy_metadata, toy_policy
from bmaml_robot_deploy.udp_wire import (
    ACTION_MAGIC,
    FLAG_AUTHENTICATED,
    FLAG_NEW_EPISODE,
    HEADER_SIZE,
    OBS_MAGIC,
    OBS_V2_MAGIC,
    TAG_SIZE,
    PacketError,
    observation_size,
    pack_observation,
    pack_packet,
    parse_observation,
)

OBS_DIM, ACT_DIM, HIDDEN = 17, 6, 16
RL2_KINDS = ["rnn", "gru", "lstm"]
OBS = np.linspace(-1, 1, OBS_DIM, dtype=np.float32)


def write(tmp_path: Path, name: str, kind: str = "gru", **kwargs) -> tuple[str, ReferencePolicy]:
    model, reference = toy_policy(kind, hidden_size=HIDDEN, **kwargs)
    return save_model(model, tmp_path / name), reference


@pytest.fixture(scope="module")
def rl2_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, ReferencePolicy]]:
    """One toy RL^2 file per recurrent kind (obs 17, act 6, hidden 16), bounds [-1, 1]; and a
    ``"gru-bounds"`` one with asymmetric bounds (the previous action's normalisation)."""
    tmp = tmp_path_factory.mktemp("rl2_policies")
    files = {kind: write(tmp, f"{kind}.onnx", kind, rl2=True, seed=5) for kind in RL2_KINDS}
    low, high = [-1.0, 0.0, -2.0, -0.5, -1.0, 1.0], [1.0, 2.0, 0.0, 1.5, 3.0, 1.5]
    meta = toy_metadata("gru", OBS_DIM, ACT_DIM, HIDDEN, algorithm="rl2", action_low=low, action_high=high)
    files["gru-bounds"] = write(tmp, "gru-bounds.onnx", "gru", rl2=True, seed=6, metadata=meta)
    files["maml-gru"] = write(tmp, "maml-gru.onnx", "gru", seed=7)
    return files


class TorchlessRL2:
    """The numpy reference driven as training drives the policy: the previous action (the last
    action, normalised; zeros at the trial's start), the previous reward (0 at the trial's start)
    and the start flag."""

    def __init__(self, reference: ReferencePolicy) -> None:
        self.reference = reference
        self.new_trial()

    def new_trial(self) -> None:
        self.state = self.reference.initial_state(1)
        self.prev = np.zeros((1, ACT_DIM))
        self.first = True

    def act(self, obs: np.ndarray, reward: float, start: bool) -> np.ndarray:
        x = self.reference.rl2_input(obs[None], self.prev, [0.0 if self.first else reward],
                                     [1.0 if (start or self.first) else 0.0])
        action, self.state = self.reference.step(x, self.state)
        self.prev = self.reference.normalise(action)
        self.first = False
        return action[0]


# --- metadata -------------------------------------------------------------------------------------


def test_rl2_metadata_round_trip_and_maml_files_stay_as_they_were():
    meta = toy_metadata("lstm", OBS_DIM, ACT_DIM, HIDDEN, algorithm="rl2", episodes_per_trial=4)
    props = meta.to_props()
    assert props["bmaml.format_version"] == RL2_FORMAT_VERSION == "2"
    assert (props[KEY_ALGORITHM], props[KEY_EPISODES_PER_TRIAL]) == ("rl2", "4")
    names = ["obs", "prev_action", "prev_reward", "episode_start", "h_in", "c_in"]
    assert props[KEY_INPUT_NAMES] == '["obs", "prev_action", "prev_reward", "episode_start", "h_in", "c_in"]'
    assert list(props)[-3:] == list(RL2_KEYS)  # written after every other key
    parsed = PolicyMetadata.from_props(props)
    assert parsed == meta and parsed.rl2 and list(parsed.input_names) == names
    assert parsed.output_names == ("action", "h_out", "c_out")
    # MAML files: format 1, none of the new keys; a file without bmaml.algorithm is MAML.
    maml = toy_metadata("gru", OBS_DIM, ACT_DIM, HIDDEN)
    maml_props = maml.to_props()
    assert maml_props["bmaml.format_version"] == FORMAT_VERSION == "1"
    assert not set(RL2_KEYS) & set(maml_props)
    loaded = PolicyMetadata.from_props(maml_props)
    assert loaded.algorithm == "maml" and not loaded.rl2 and loaded.episodes_per_trial is None
    assert loaded.input_names == ("obs", "h_in")
    # Saying so explicitly is fine too.
    assert PolicyMetadata.from_props({**maml_props, KEY_ALGORITHM: "maml"}) == maml


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({KEY_ALGORITHM: "ppo"}, r"metadata bmaml.algorithm: expected one of \['maml', 'rl2'\], got 'ppo'"),
        ({KEY_EPISODES_PER_TRIAL: "0"}, r"metadata bmaml.episodes_per_trial: expected an integer >= 1, got 0"),
        ({KEY_EPISODES_PER_TRIAL: "two"}, r"metadata bmaml.episodes_per_trial: expected int, got 'two'"),
        ({KEY_EPISODES_PER_TRIAL: None}, r"metadata bmaml.episodes_per_trial: an RL\^2 file says how many episodes"),
        ({"bmaml.format_version": "1"}, r"metadata bmaml.format_version: an RL\^2 file is format '2'"),
        ({KEY_ALGORITHM: None, KEY_EPISODES_PER_TRIAL: None},
         r"metadata bmaml.algorithm: a format '2' file is an RL\^2 file \(algorithm 'rl2'\), got 'maml'"),
        ({"bmaml.adapt_steps": "1"}, r"metadata bmaml.adapt_steps: an RL\^2 policy adapts in its activations"),
        ({KEY_INPUT_NAMES: '["obs", "h_in"]'}, r"metadata bmaml.input_names: expected \['obs', 'prev_action', "
                                               r"'prev_reward', 'episode_start', 'h_in'\]"),
        ({KEY_INPUT_NAMES: "[obs"}, r"metadata bmaml.input_names: expected json, got '\[obs'"),
        ({"bmaml.policy_kind": "mlp", "bmaml.recurrence": "none", "bmaml.hidden_shape": "[]"},
         r"metadata bmaml.policy_kind: an RL\^2 policy is recurrent"),
    ],
)
def test_malformed_rl2_metadata_is_named(tmp_path, changes, message):
    props = toy_metadata("gru", OBS_DIM, ACT_DIM, HIDDEN, algorithm="rl2").to_props()
    for key, value in changes.items():
        if value is None:
            del props[key]
        else:
            props[key] = value
    with pytest.raises(ValueError, match=rf"^src: {message}"):
        PolicyMetadata.from_props(props, source="src")
    path, _ = write(tmp_path, "bad.onnx", "gru", rl2=True, props=props)
    with pytest.raises(ValueError, match=rf"^{path}: {message}"):
        Controller(path)


def test_a_maml_file_has_no_trials():
    props = toy_metadata("gru", OBS_DIM, ACT_DIM, HIDDEN).to_props()
    props[KEY_EPISODES_PER_TRIAL] = "2"
    with pytest.raises(ValueError, match=r"^f: metadata bmaml.episodes_per_trial: only RL\^2 files have trials"):
        PolicyMetadata.from_props(props, source="f")


def test_metadata_and_graph_must_agree(tmp_path):
    """An RL^2 file whose graph lacks RL^2's inputs, and a MAML file whose graph has them."""
    rl2_meta = toy_metadata("gru", OBS_DIM, ACT_DIM, HIDDEN, algorithm="rl2")
    path, _ = write(tmp_path, "maml-graph.onnx", "gru", metadata=rl2_meta)
    with pytest.raises(ValueError, match=r"graph inputs \['obs', 'h_in'\] do not match the metadata .*missing "
                                         r"\['prev_action', 'prev_reward', 'episode_start'\]"):
        Controller(path)
    maml_meta = toy_metadata("gru", OBS_DIM, ACT_DIM, HIDDEN)
    path, _ = write(tmp_path, "rl2-graph.onnx", "gru", rl2=True, metadata=maml_meta)
    with pytest.raises(ValueError, match=r"unexpected \['prev_action', 'prev_reward', 'episode_start'\]"):
        Controller(path)


# --- the controller -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [*RL2_KINDS, "gru-bounds"])
def test_the_controller_feeds_previous_action_reward_and_start(rl2_files, kind):
    """300 steps, episodes of 70 steps (the state carried across), a new trial at step 200: the
    actions equal the numpy reference fed as training feeds the policy."""
    path, reference = rl2_files[kind]
    controller = Controller(path)
    assert controller.rl2 and controller.needs_reward and "RL^2" in repr(controller)
    twin = TorchlessRL2(reference)
    rng = np.random.default_rng(1)
    reward = 0.0
    for t in range(300):
        if t == 200:
            controller.reset()
            twin.new_trial()
        start = t % 70 == 0
        obs = rng.normal(size=OBS_DIM) * 2
        action = controller.act(obs, reward=reward, episode_start=start)
        expected = twin.act(obs, reward, start)
        assert action.dtype == np.float32 and action.shape == (ACT_DIM,)
        np.testing.assert_allclose(action, expected, atol=1e-5, rtol=0)
        np.testing.assert_allclose(controller.previous_action[0], twin.prev[0], atol=1e-5, rtol=0)
        reward = float(rng.normal() * 3)
    assert controller.steps == 300 and controller.nonfinite_count == 0


def test_the_previous_action_is_the_returned_one_normalised(rl2_files):
    path, reference = rl2_files["gru-bounds"]
    controller = Controller(path)
    assert not controller.previous_action.any()  # a trial's first step: zeros
    action = controller.act(OBS, reward=1.0, episode_start=True)
    mid, half = (reference.action_low + reference.action_high) / 2, (reference.action_high - reference.action_low) / 2
    np.testing.assert_allclose(controller.previous_action[0], np.clip((action - mid) / half, -1, 1), atol=1e-6)
    controller.reset()
    assert not controller.previous_action.any()


def test_a_trials_first_step_ignores_the_reward_and_is_a_start(rl2_files):
    path, _ = rl2_files["gru"]
    first = [Controller(path).act(OBS, reward=r, episode_start=s) for r, s in ((0.0, True), (123.0, False), (-5, True))]
    assert all(np.array_equal(first[0], a) for a in first)
    controller = Controller(path)
    controller.act(OBS, reward=0.0)
    controller.act(OBS, reward=2.0)
    controller.reset()  # a new trial: as a fresh controller
    assert np.array_equal(controller.act(OBS, reward=7.0), first[0])
    # Within a trial the reward and the flag matter.
    a, b, c = Controller(path), Controller(path), Controller(path)
    for ctl in (a, b, c):
        ctl.act(OBS, reward=0.0, episode_start=True)
    base = a.act(OBS, reward=1.0)
    assert not np.array_equal(base, b.act(OBS, reward=-1.0))
    assert not np.array_equal(base, c.act(OBS, reward=1.0, episode_start=True))


def test_an_rl2_controller_needs_the_reward_and_checks_it(rl2_files):
    path, _ = rl2_files["gru"]
    controller = Controller(path)
    with pytest.raises(ValueError, match=r"^reward: this is an RL\^2 policy, which reads the reward"):
        controller.act(OBS)
    with pytest.raises(TypeError, match=r"^reward: expected a number, got dtype <U1"):
        controller.act(OBS, reward="1")
    with pytest.raises(TypeError, match=r"^reward: expected a number, got dtype bool"):
        controller.act(OBS, reward=True)
    with pytest.raises(ValueError, match=r"^reward: expected a number, got shape \[2\]"):
        controller.act(OBS, reward=[1.0, 2.0])
    with pytest.raises(TypeError, match=r"^episode_start: expected a bool, got 'yes'"):
        controller.act(OBS, reward=0.0, episode_start="yes")
    with pytest.raises(TypeError, match=r"^episode_start: expected a bool, got 2"):
        controller.act(OBS, reward=0.0, episode_start=2)
    assert controller.steps == 0
    # Other spellings of the same inputs are accepted: numpy scalars, 0-d and 1-element arrays, 0/1.
    reference = Controller(path)
    want = [reference.act(OBS, reward=0.0, episode_start=True), reference.act(OBS, reward=2.5)]
    got = [controller.act(OBS, reward=np.float32(0.0), episode_start=np.bool_(True)),
           controller.act(OBS[None], reward=np.array([2.5]), episode_start=0)[0]]
    assert all(np.array_equal(w, g) for w, g in zip(want, got))


def test_non_finite_inputs_give_the_safe_action_and_keep_the_state(rl2_files):
    """A NaN observation or reward: the safe action, counted, state and trial untouched, the
    episode start kept for the next step taken, whose previous action is the safe action."""
    path, reference = rl2_files["gru"]
    safe = np.full(ACT_DIM, 0.25, np.float32)
    controller = Controller(path, safe_action=safe)
    twin = TorchlessRL2(reference)
    controller.act(OBS, reward=0.0, episode_start=True)
    twin.act(OBS.astype(np.float64), 0.0, True)
    state = controller.state
    bad_obs = OBS.copy()
    bad_obs[3] = np.nan
    assert np.array_equal(controller.act(bad_obs, reward=1.0, episode_start=True), safe)
    assert np.array_equal(controller.act(OBS, reward=float("inf")), safe)
    assert controller.nonfinite_count == 2 and all(np.array_equal(a, b) for a, b in zip(state, controller.state))
    np.testing.assert_allclose(controller.previous_action[0], reference.normalise(safe), atol=1e-7)
    # The next step taken: start flag (kept), previous action = the safe action, the reward given.
    twin.prev = reference.normalise(safe)[None]
    action = controller.act(OBS, reward=0.5)
    np.testing.assert_allclose(action, twin.act(OBS.astype(np.float64), 0.5, True), atol=1e-5)
    # A NaN at a trial's first step: the trial still starts (zeros) at the next step taken.
    fresh, first = Controller(path), Controller(path).act(OBS, reward=0.0)
    assert np.array_equal(fresh.act(bad_obs, reward=0.0), np.zeros(ACT_DIM, np.float32))
    assert np.array_equal(fresh.act(OBS, reward=9.0), first)


def test_a_batch_is_its_rows(rl2_files):
    """batch_size 3: per-row rewards and start flags, a NaN row, a row starting a new trial; each
    row equals a single controller fed the same."""
    path, _ = rl2_files["lstm"]
    batch = Controller(path, batch_size=3)
    singles = [Controller(path) for _ in range(3)]
    rng = np.random.default_rng(2)
    rewards = np.zeros(3)
    for t in range(40):
        obs = rng.normal(size=(3, OBS_DIM))
        starts = np.array([t % 10 == 0, t % 15 == 0, t == 0])
        if t == 25:
            batch.reset(rows=[1])
            singles[1].reset()
        if t == 30:
            obs[2, 0] = np.nan
        if t == 31:
            rewards[0] = np.nan
        actions = batch.act(obs, reward=rewards, episode_start=starts)
        for i, single in enumerate(singles):
            np.testing.assert_allclose(actions[i], single.act(obs[i], reward=float(rewards[i]),
                                                              episode_start=bool(starts[i])), atol=1e-6)
        rewards = rng.normal(size=3)
    assert batch.nonfinite_count == 2 == sum(s.nonfinite_count for s in singles)
    # A number applies to every row; a bool too.
    one = Controller(path, batch_size=2)
    out = one.act(np.stack([OBS, OBS]), reward=1.0, episode_start=True)
    assert np.array_equal(out[0], out[1])
    with pytest.raises(ValueError, match=r"^reward: expected a number or 2 numbers \(one per row\), got shape \[3\]"):
        one.act(np.stack([OBS, OBS]), reward=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"^episode_start: expected a bool or 2 bools \(one per row\), got shape"):
        one.act(np.stack([OBS, OBS]), reward=0.0, episode_start=[True])


def test_a_maml_controller_ignores_rewards_and_resets_at_an_episode_start(rl2_files):
    path, _ = rl2_files["maml-gru"]
    a, b = Controller(path), Controller(path)
    assert not a.rl2 and not a.needs_reward and a.previous_action is None
    for t in range(12):
        obs = OBS * (t + 1) / 6
        start = t == 7
        if start:
            b.reset()
        assert np.array_equal(a.act(obs, reward=float(t), episode_start=start), b.act(obs))
    batch = Controller(path, batch_size=2)
    single = Controller(path)
    for t in range(6):
        actions = batch.act(np.stack([OBS, OBS]), reward=[1.0, 2.0], episode_start=[False, t == 3])
        if t == 3:
            single.reset()
        assert np.array_equal(actions[1], single.act(OBS))


# --- the control loop -----------------------------------------------------------------------------


class ToyRobot:
    """A numpy robot (obs = 0.9 obs + action padded; reward = -|action|^2 + obs[0]; episodes of
    ``episode_steps``); ``rewards=False`` makes one that reports none (no ``last_reward``)."""

    def __init__(self, episode_steps: int = 7) -> None:
        self.episode_steps = episode_steps
        self.obs = np.linspace(-1, 1, OBS_DIM)
        self.t = 0
        self.new_episode = True
        self.last_reward: float | None = 0.0
        self.sent: list[np.ndarray] = []

    def read_observation(self) -> np.ndarray:
        return self.obs.copy()

    def send_action(self, action: np.ndarray) -> None:
        self.sent.append(np.array(action))
        self.obs = self.obs * 0.9 + np.pad(action, (0, OBS_DIM - ACT_DIM))
        self.last_reward = float(-np.sum(action**2) + self.obs[0])
        self.t += 1
        self.new_episode = self.t % self.episode_steps == 0
        if self.new_episode:
            self.obs = np.linspace(-1, 1, OBS_DIM)

    def close(self) -> None:
        pass


class NoRewardRobot:
    def __init__(self) -> None:
        self.new_episode = True
        self.sent = 0

    def read_observation(self) -> np.ndarray:
        return OBS

    def send_action(self, action: np.ndarray) -> None:
        self.sent += 1

    def close(self) -> None:
        pass


def test_the_loop_feeds_rewards_and_starts_and_carries_the_state(rl2_files):
    path, reference = rl2_files["gru"]
    controller = Controller(path)
    controller.act(OBS, reward=3.0)  # a trial in progress: the run starts a new one
    robot = ToyRobot(episode_steps=7)
    assert isinstance(robot, RewardRobot) and isinstance(robot, Robot)
    stats = run_control_loop(controller, robot, steps=30, realtime=False)
    assert stats.actions == 30 and stats.episodes == 4
    # The same by hand: the robot's reward and new-episode flag at every step, no reset between episodes.
    twin, replay = TorchlessRL2(reference), ToyRobot(episode_steps=7)
    for t in range(30):
        action = twin.act(replay.read_observation(), replay.last_reward, replay.new_episode)
        np.testing.assert_allclose(robot.sent[t], action, atol=1e-5)
        replay.send_action(robot.sent[t])
    # new_trial=False continues the trial: two runs of 15 steps are one of 30.
    split, robot2 = Controller(path), ToyRobot(episode_steps=7)
    run_control_loop(split, robot2, steps=15, realtime=False)
    run_control_loop(split, robot2, steps=15, realtime=False, new_trial=False)
    assert np.array_equal(np.stack(robot2.sent), np.stack(robot.sent))
    restarted, robot3 = Controller(path), ToyRobot(episode_steps=7)
    run_control_loop(restarted, robot3, steps=15, realtime=False)
    run_control_loop(restarted, robot3, steps=15, realtime=False)  # a new trial at step 15
    assert not np.array_equal(np.stack(robot3.sent[15:]), np.stack(robot.sent[15:]))


def test_an_rl2_policy_with_a_robot_without_rewards_is_an_error_at_start(rl2_files):
    controller = Controller(rl2_files["gru"][0])
    robot = NoRewardRobot()
    assert isinstance(robot, Robot) and not isinstance(robot, RewardRobot)
    with pytest.raises(ValueError, match=r"^robot: this RL\^2 policy needs the reward of every step, and this "
                                         r"NoRewardRobot reports none \(no last_reward attribute"):
        run_control_loop(controller, robot, steps=5, realtime=False)
    assert robot.sent == 0 and controller.steps == 0
    # A MAML policy does not need it.
    stats = run_control_loop(Controller(rl2_files["maml-gru"][0]), robot, steps=5, realtime=False)
    assert stats.actions == 5 == robot.sent
    # A robot that reports rewards but had none for an observation: refused before acting on it.
    silent = ToyRobot()
    silent.last_reward = None
    with pytest.raises(ValueError, match=r"gave an observation without one \(a UDP robot sending version-1"):
        run_control_loop(controller, silent, steps=5, realtime=False)
    assert silent.sent == [] and controller.steps == 0


# --- UDP: observation packets of version 2 (the reward) and version 1 -----------------------------


def test_the_version_2_layout_is_the_documented_one():
    packet = pack_observation(7, OBS, FLAG_NEW_EPISODE, reward=-1.5)
    header = b"BMO2" + (7).to_bytes(4, "little") + (17).to_bytes(2, "little") + b"\x01\x00"
    assert OBS_V2_MAGIC == int.from_bytes(b"BMO2", "little") == 0x324F4D42
    assert packet == header + OBS.astype("<f4").tobytes() + np.float32(-1.5).tobytes()
    assert len(packet) == observation_size(17) == observation_size(17, 2) == HEADER_SIZE + 4 * 18 == 84
    parsed = parse_observation(packet, 17)
    assert (parsed.sequence, parsed.flags, parsed.reward, parsed.version) == (7, FLAG_NEW_EPISODE, -1.5, 2)
    assert np.array_equal(parsed.obs, OBS)
    # Authenticated: bit 15, the tag over everything before it, the reward included.
    signed = pack_observation(7, OBS, FLAG_NEW_EPISODE, reward=-1.5, key=KEY)
    body = packet[:10] + (FLAG_AUTHENTICATED | FLAG_NEW_EPISODE).to_bytes(2, "little") + packet[12:]
    assert signed == body + hmac.new(KEY, body, hashlib.sha256).digest()
    assert len(signed) == observation_size(17, 2, authenticated=True) == 116
    assert parse_observation(signed, 17, key=KEY).reward == -1.5


def test_version_1_packets_are_still_understood():
    packet = pack_observation(9, OBS)  # no reward: the first layout, byte for byte
    assert packet == pack_packet(OBS_MAGIC, 9, OBS) and packet[:4] == b"BMOB"
    assert len(packet) == observation_size(17, 1) == 80
    parsed = parse_observation(packet, 17)
    assert (parsed.sequence, parsed.flags, parsed.reward, parsed.version) == (9, 0, None, 1)
    assert parse_observation(pack_observation(9, OBS, key=KEY), 17, key=KEY).version == 1


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "size"),
        (b"BMO2", "size"),
        (pack_observation(1, OBS, reward=1.0)[:-4], "size"),  # version 2 without its reward
        (pack_observation(1, OBS) + b"\0\0\0\0", "size"),  # version 1 with a reward
        (pack_observation(1, OBS, reward=1.0) + b"\0", "size"),
        (pack_observation(1, OBS[:16], reward=1.0), "dim"),
        (pack_packet(ACTION_MAGIC, 1, np.append(OBS, 1.0)), "magic"),
        (b"BMO3" + pack_observation(1, OBS, reward=1.0)[4:], "magic"),
        (pack_observation(1, OBS, reward=1.0, key=KEY), "auth"),  # a tag for a receiver without a key
    ],
)
def test_malformed_observation_packets_are_rejected_with_the_reason(data, reason):
    with pytest.raises(PacketError) as error:
        parse_observation(data, 17)
    assert error.value.reason == reason and isinstance(error.value, ValueError)


def test_every_bit_flip_of_an_authenticated_version_2_packet_is_rejected():
    packet = pack_observation(5, OBS, reward=2.0, key=KEY)
    reasons = set()
    for bit in range(8 * len(packet)):
        tampered = bytearray(packet)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(PacketError) as error:
            parse_observation(bytes(tampered), 17, key=KEY)
        reasons.add(error.value.reason)
    # Magic and dim flips are malformed (no single bit turns b"BMO2" into b"BMOB": 0x32 ^ 0x42 has
    # three); the reward's bits, as every other after the header's magic and dim, fail the tag.
    assert reasons == {"magic", "dim", "auth"}
    assert len(packet) - TAG_SIZE - 4 == HEADER_SIZE + 4 * 17  # the reward sits just before the tag


def test_packing_checks_the_reward_and_the_version():
    with pytest.raises(ValueError, match=r"^reward: expected a real number or None, got 'a'"):
        pack_observation(1, OBS, reward="a")
    with pytest.raises(ValueError, match=r"^reward: expected a real number or None, got True"):
        pack_observation(1, OBS, reward=True)
    with pytest.raises(ValueError, match=r"^version: expected an observation packet version, one of \[1, 2\], got 3"):
        observation_size(17, 3)
    with pytest.raises(ValueError, match=r"^observation_version: expected an observation packet version"):
        UdpRobotServer(("127.0.0.1", 9), 17, 6, observation_version=0)
    # NaN and infinity are carried as they are (the controller answers them with the safe action).
    assert np.isnan(parse_observation(pack_observation(1, OBS, reward=float("nan")), 17).reward)


def test_the_link_reads_both_versions_and_reports_the_reward():
    fake = Peer()
    with UdpRobot(17, 6, bind=("127.0.0.1", 0), receive_timeout=0, watchdog_timeout=60) as robot:
        assert isinstance(robot, RewardRobot) and robot.last_reward is None and robot.observation_version is None
        to = robot.address
        fake.send(pack_observation(1, OBS, FLAG_NEW_EPISODE), to)
        settle()
        assert np.array_equal(robot.read_observation(), OBS) and robot.new_episode
        assert robot.last_reward is None and robot.observation_version == 1
        fake.send(pack_observation(2, OBS + 1, reward=-0.75), to)
        settle()
        assert np.array_equal(robot.read_observation(), OBS + 1) and not robot.new_episode
        assert robot.last_reward == -0.75 and robot.observation_version == 2
        # Malformed version-2 packets are dropped and counted; superseded ones give way to the newest.
        fake.send(pack_observation(3, OBS, reward=1.0)[:-4], to)
        fake.send(pack_observation(3, OBS[:16], reward=1.0), to)
        fake.send(pack_observation(3, OBS, FLAG_NEW_EPISODE, reward=1.0), to)
        fake.send(pack_observation(4, OBS + 2, reward=2.0), to)
        settle()
        assert np.array_equal(robot.read_observation(), OBS + 2) and robot.new_episode and robot.last_reward == 2.0
        assert robot.dropped_malformed == 2 and robot.dropped_superseded == 1
        robot.send_action(np.zeros(6))
        assert fake.receive_action()[0] == 4
    fake.close()


def test_the_link_reads_authenticated_version_2_packets():
    fake = Peer(KEY)
    with UdpRobot(17, 6, bind=("127.0.0.1", 0), key=KEY, receive_timeout=0, watchdog_timeout=60) as robot:
        session = fake.handshake(robot)
        fake.send(pack_observation(1, OBS, reward=3.0, key=session), robot.address)
        fake.send(pack_observation(2, OBS, reward=4.0, key=KEY), robot.address)  # not the session's key
        settle()
        assert robot.read_observation() is not None and robot.last_reward == 3.0
        assert robot.dropped_unauthenticated == 1
    fake.close()


def serve(server: UdpRobotServer, episodes: int, episode_steps: int) -> tuple[threading.Thread, dict]:
    """``server.run`` on the toy robot in a thread: ``result["stats"]``, or ``result["error"]``."""
    result: dict = {}
    reset, step = toy_robot(episode_steps=episode_steps)

    def run() -> None:
        try:
            result["stats"] = server.run(reset, step, episodes=episodes)
        except TimeoutError as error:  # the controller never answered
            result["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "authenticated"])
def test_an_rl2_controller_closes_the_loop_with_the_reference_robot(rl2_files, key):
    """The reference robot (toy dynamics, reward = the action's sum) in a thread, 2 episodes of 6
    steps, version-2 packets: the controller gets each step's reward, the state crosses the
    episode boundary; a fresh controller fed what the robot sent gives the same actions."""
    path, _ = rl2_files["gru"]
    controller = Controller(path)
    robot = RecordingUdpRobot.for_controller(controller, bind=("127.0.0.1", 0), key=key, watchdog_timeout=5,
                                             receive_timeout=2)
    server = UdpRobotServer(robot.address, 17, 6, key=key, action_timeout=5)
    thread, result = serve(server, episodes=2, episode_steps=6)
    try:
        assert robot.wait_for_robot(10)
        stats = run_control_loop(controller, robot, realtime=False, steps=12)
        thread.join(10)
    finally:
        server.close()
        robot.close()
    served = result["stats"]
    assert served.steps == 12 and served.episode_lengths == [6, 6] and stats.actions == 12
    assert served.rewards[0] == 0.0 and served.rewards[6] == pytest.approx(float(np.sum(served.actions[5])), rel=1e-6)
    assert robot.observation_version == 2 and np.array_equal(np.stack(served.actions), np.stack(robot.sent))
    replay = Controller(path)
    expected = [replay.act(obs, reward=served.rewards[t], episode_start=t in (0, 6))
                for t, obs in enumerate(served.observations)]
    assert np.array_equal(np.stack(expected), np.stack(robot.sent))


def test_an_rl2_controller_refuses_a_version_1_robot_before_acting(rl2_files):
    path, _ = rl2_files["gru"]
    controller = Controller(path)
    robot = RecordingUdpRobot.for_controller(controller, bind=("127.0.0.1", 0), watchdog_timeout=5, receive_timeout=2)
    server = UdpRobotServer(robot.address, 17, 6, action_timeout=0.2, max_resends=0, observation_version=1)
    thread, result = serve(server, episodes=1, episode_steps=6)
    try:
        assert robot.wait_for_robot(10)
        with pytest.raises(ValueError, match=r"gave an observation without one \(a UDP robot sending version-1 "
                                             r"observation packets\?"):
            run_control_loop(controller, robot, realtime=False, steps=6)
        thread.join(10)
    finally:
        server.close()
        robot.close()
    assert robot.sent == [] and isinstance(result["error"], TimeoutError)  # nothing applied: the robot gave up
    # The same robot drives a MAML policy.
    maml = Controller(rl2_files["maml-gru"][0])
    robot = RecordingUdpRobot.for_controller(maml, bind=("127.0.0.1", 0), watchdog_timeout=5, receive_timeout=2)
    server = UdpRobotServer(robot.address, 17, 6, action_timeout=5, observation_version=1)
    thread, result = serve(server, episodes=1, episode_steps=6)
    try:
        assert robot.wait_for_robot(10)
        stats = run_control_loop(maml, robot, realtime=False, steps=6)
        thread.join(10)
    finally:
        server.close()
        robot.close()
    assert stats.actions == 6 and result["stats"].steps == 6 and robot.observation_version == 1


def test_bmaml_control_stops_when_an_rl2_file_meets_a_version_1_robot(rl2_files, capsys):
    """A robot sending version-1 observations (no reward) to ``bmaml-control`` with an RL^2 file:
    exit 1 with the reason, before any action is sent."""
    port = free_port()
    peer = Peer()
    stop = threading.Event()

    def robot() -> None:
        sequence = 0
        while not stop.is_set():
            sequence += 1
            peer.send(pack_observation(sequence, OBS, FLAG_NEW_EPISODE if sequence == 1 else 0), ("127.0.0.1", port))
            stop.wait(0.02)

    thread = threading.Thread(target=robot)
    thread.start()
    try:
        code = control_main([rl2_files["gru"][0], "--link", "udp", "--udp-bind", f"127.0.0.1:{port}",
                             "--wait-for-robot", "10", "--steps", "5", "--no-realtime"])
    finally:
        stop.set()
        thread.join(5)
    assert peer.nothing_received()
    peer.close()
    err = capsys.readouterr().err
    assert code == 1 and "RL^2 policy: the run is one trial" in err
    assert "gave an observation without one (a UDP robot sending version-1 observation packets?" in err
