"""The action convention (envs/action_map.py): the policy's Gaussian lives in [-scale, scale],
the robot receives it clipped and mapped affinely onto its bounds, rewards are the robot's.

Checked against pytorch-maml-rl's NormalizedActionWrapper written out independently here; the
shipped configs are checked for the failure this convention fixes (a random policy's control
cost swamping its task reward).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import bmaml_robot as bm
from bmaml_robot.config import TrainConfig, from_dict, load_config, run_config, shipped_configs
from bmaml_robot.envs.action_map import ActionMap, legacy_action_scale
from bmaml_robot.envs.discrete import DISCRETE_FAMILIES
from bmaml_robot.envs.families import get_family
from bmaml_robot.factory import build_policy
from bmaml_robot.meta.sampler import MetaSampler
from bmaml_robot.rl2 import RL2Policy, TrialSampler

MUJOCO_FAMILIES = [name for name, f in bm.FAMILIES.items() if f.robot != "Navigation2D"]


def reference_to_robot(action: np.ndarray, scale: float, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """pytorch-maml-rl's NormalizedActionWrapper: ``lb + (clip(a, -s, s) + s) (ub - lb) / 2s``."""
    clipped = np.clip(action, -scale, scale)
    return low + (clipped + scale) * (high - low) / (2.0 * scale)


# ----------------------------------------------------------------------------- the map
@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0, 37.5])
def test_map_equals_the_reference_wrapper_for_any_bounds(scale: float) -> None:
    rng = np.random.default_rng(0)
    low = rng.uniform(-3.0, 0.5, size=5)
    high = low + rng.uniform(0.0, 4.0, size=5)
    action_map = ActionMap(scale, low, high)
    actions = rng.normal(0.0, 2.0 * scale, size=(64, 5))
    robot = action_map.to_robot(actions)
    np.testing.assert_allclose(robot, reference_to_robot(actions, scale, low, high), rtol=0, atol=1e-12)
    assert robot.dtype == np.float64
    assert np.all(robot >= low - 1e-12) and np.all(robot <= high + 1e-12)
    # Saturation happens exactly at +-scale: beyond it the robot gets its bound.
    np.testing.assert_allclose(action_map.to_robot(np.array([scale * 3.0] * 5)), high, rtol=0, atol=1e-12)
    np.testing.assert_allclose(action_map.to_robot(np.array([-scale] * 5)), low, rtol=0, atol=1e-12)
    # torch tensors (the ONNX export) give the same, in their own dtype.
    tensor = action_map.to_robot(torch.from_numpy(actions).float())
    assert tensor.dtype == torch.float32
    np.testing.assert_allclose(tensor.numpy(), robot, rtol=0, atol=1e-5)


def test_mujoco_robots_get_a_tenth_of_the_policy_action() -> None:
    env = bm.make_vec("HalfCheetahDir", 1)
    try:
        action_map = env.action_map()
    finally:
        env.close()
    assert action_map.scale == 10.0 and not action_map.is_identity
    np.testing.assert_array_equal(action_map.to_robot(np.array([[5.0, -5.0, 10.0, -10.0, 25.0, 0.0]])),
                                  [[0.5, -0.5, 1.0, -1.0, 1.0, 0.0]])


def test_navigation_default_is_the_identity_as_in_the_references() -> None:
    """Neither pytorch-maml-rl nor garage rescales 2D navigation: the policy's action goes to the
    robot, clipped to +-0.1. Its default scale is its bound, which maps every action unchanged."""
    env = bm.make_vec("Navigation2D", 1)
    try:
        action_map = env.action_map()
    finally:
        env.close()
    assert action_map.scale == 0.1 and action_map.is_identity
    actions = np.random.default_rng(1).normal(0.0, 1.0, size=(100, 2))
    np.testing.assert_array_equal(action_map.to_robot(actions), np.clip(actions, -0.1, 0.1))


@pytest.mark.parametrize("family, bound", [("HalfCheetahDir", 1.0), ("AntGoal", 1.0), ("SwimmerVel", 1.0),
                                           ("Navigation2D", 0.1)])
def test_legacy_scale_is_the_identity(family: str, bound: float) -> None:
    """Runs made before the convention acted in the robot's units: their scale maps unchanged."""
    assert legacy_action_scale(family) == bound
    env = bm.make_vec(family, 1)
    try:
        assert env.action_map(bound).is_identity
    finally:
        env.close()


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf"), True, "10"])
def test_bad_scales_are_refused_by_name(scale: object) -> None:
    with pytest.raises(ValueError, match=r"action_scale: expected a finite number > 0"):
        ActionMap(scale, np.array([-1.0]), np.array([1.0]))  # type: ignore[arg-type]


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="action bounds"):
        ActionMap(1.0, np.array([1.0]), np.array([-1.0]))
    with pytest.raises(ValueError, match="action bounds"):
        ActionMap(1.0, np.array([-1.0, -1.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="action bounds"):  # an unlimited actuator has no affine map
        ActionMap(1.0, np.array([-1.0]), np.array([np.inf]))


# ----------------------------------------------------------------------------- the sampler
def test_rewards_are_computed_on_the_robot_action() -> None:
    """The control cost the sampler's episodes pay is 0.05 |robot action|^2, not of the policy's."""
    sampler = MetaSampler("HalfCheetahDir", 1, 4, 10)
    received, costs = [], []
    inner = sampler.env.step

    def step(actions: np.ndarray):
        out = inner(actions)
        received.append(actions.copy())
        costs.append(out[4]["reward_ctrl"].copy())
        return out

    sampler.env.step = step
    try:
        sampler.set_tasks([{"direction": 1.0}])
        policy = build_policy(TrainConfig(family="HalfCheetahDir", seed=0), sampler.obs_dim, sampler.act_dim)
        episodes = sampler.sample(policy, None, seed=3)
    finally:
        sampler.close()
    actions = episodes.actions[:, 0].numpy().astype(np.float64)  # [T, B, act], the policy's
    for t in range(10):
        robot = reference_to_robot(actions[t], 10.0, -1.0, 1.0)
        np.testing.assert_allclose(received[t], robot, rtol=0, atol=1e-15)
        np.testing.assert_allclose(costs[t], -0.05 * np.sum(robot**2, axis=1), rtol=1e-12)
    # The freshly initialised Gaussian (std 1 in the normalised space) barely saturates the robot.
    assert np.mean(np.abs(np.concatenate(received)) >= 1.0) < 0.01


# ----------------------------------------------------------------------------- shipped configs
ROBOT_CONFIGS = [name for name in shipped_configs() if load_config(name).family not in DISCRETE_FAMILIES]


@pytest.mark.parametrize("name", ROBOT_CONFIGS)
def test_a_random_policy_pays_little_control_cost_against_its_task_reward(name: str) -> None:
    """The failure this convention fixes: with the policy acting in torque units, a freshly
    initialised policy paid 0.22-0.34 of its task reward's size per step in control cost on every
    MuJoCo family (HalfCheetahDir: -15 per episode), which drowned the task's signal and nothing
    learned. Every shipped config must keep it under a tenth."""
    ratio = control_to_task_ratio(load_config(name))
    assert ratio < 0.1, f"{name}: a random policy's |reward_ctrl| is {ratio:.2f} of its |reward_task| per step"


def test_the_control_cost_check_fails_on_the_old_convention() -> None:
    """The check above can fail: the policy acting in the robot's units (scale 1) trips it."""
    assert control_to_task_ratio(load_config("halfcheetah-dir").replace(action_scale=1.0)) > 0.2


def control_to_task_ratio(config: TrainConfig, tasks: int = 4, episodes: int = 5) -> float:
    """Mean |reward_ctrl| / mean |reward_task| per step of ``config``'s freshly initialised policy."""
    config = config.resolved()
    sampler: MetaSampler | TrialSampler
    if config.algorithm == "rl2":  # one trial per task, its episodes in a row
        sampler = TrialSampler(config.family, tasks, config.episodes_per_trial, config.horizon,
                               action_scale=config.action_scale)
    else:
        sampler = MetaSampler(config.family, tasks, episodes, config.horizon, action_scale=config.action_scale)
    task_terms, ctrl_terms = [], []
    inner = sampler.env.step

    def step(actions: np.ndarray):
        out = inner(actions)
        task_terms.append(np.abs(out[4]["reward_task"]))
        ctrl_terms.append(np.abs(out[4]["reward_ctrl"]))
        return out

    sampler.env.step = step
    try:
        sampler.set_tasks(get_family(config.family).sample_tasks(tasks, np.random.default_rng(0)))
        policy = build_policy(config, sampler.obs_dim, sampler.act_dim)
        if isinstance(sampler, TrialSampler):
            assert isinstance(policy, RL2Policy)
            sampler.sample(policy, seed=0)
        else:
            sampler.sample(policy, None, seed=0)
    finally:
        sampler.close()
    return float(np.mean(ctrl_terms) / np.mean(task_terms))


# ----------------------------------------------------------------------------- config
def test_config_default_is_the_family_default_and_is_recorded() -> None:
    assert TrainConfig().action_scale is None
    assert TrainConfig().resolved().action_scale == 10.0
    assert TrainConfig(family="Navigation2D").resolved().action_scale == 0.1
    # Resolved late, so a family changed by an override gets its own default.
    assert load_config("halfcheetah-dir").replace(family="Navigation2D").resolved().action_scale == 0.1
    assert from_dict({"action_scale": 3}).resolved().action_scale == 3.0
    assert from_dict({"action_scale": None}).action_scale is None


@pytest.mark.parametrize("value, message", [(0, "expected a finite number > 0"), (-2.0, "expected a finite number > 0"),
                                            ("ten", "expected a number or null"), (True, "expected a number or null")])
def test_config_refuses_bad_scales(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"action_scale: {message}"):
        from_dict({"action_scale": value})


def test_a_run_without_action_scale_keeps_the_robot_units_with_a_note(caplog: pytest.LogCaptureFixture) -> None:
    saved = TrainConfig(family="HalfCheetahDir").to_dict()
    del saved["action_scale"]
    with caplog.at_level(logging.WARNING, logger="bmaml_robot"):
        config = run_config(saved, source="old/checkpoint.pt")
    assert config.action_scale == 1.0
    assert "old/checkpoint.pt: no action_scale" in caplog.text and "robot's own units" in caplog.text
    assert run_config({**saved, "family": "Navigation2D"}, source="x").action_scale == 0.1
    # A run that recorded its scale keeps it, whatever the default.
    assert run_config({**saved, "action_scale": 4.0}, source="x").action_scale == 4.0
