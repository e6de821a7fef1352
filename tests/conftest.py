"""Shared fixtures: Gymnasium reference robots and a recorder of batched-env rollouts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

try:  # property tests (the hostile-input campaign as part of the suite): bounded by default
    from hypothesis import HealthCheck, settings

    settings.register_profile("default", max_examples=40, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    # The long campaign: pytest --hypothesis-profile=long -m "slow or not slow" tests/...
    settings.register_profile("long", max_examples=2000, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile("default")
except ImportError:  # hypothesis is a test extra; the property tests skip without it
    pass

#: The Gymnasium v5 robot each MuJoCo robot of ours must match.
REFERENCE_IDS = {
    "HalfCheetah": "HalfCheetah-v5",
    "Ant": "Ant-v5",
    "Swimmer": "Swimmer-v5",
    "Hopper": "Hopper-v5",
    "Walker2d": "Walker2d-v5",
}


@pytest.fixture
def make_reference() -> Iterator[Callable[[str], Any]]:
    """``make_reference("Ant")``: the unwrapped Gymnasium v5 env of a robot, closed after the test."""
    gymnasium = pytest.importorskip("gymnasium")
    made = []

    def make(robot: str) -> Any:
        env = gymnasium.make(REFERENCE_IDS[robot]).unwrapped
        env.reset(seed=0)
        made.append(env)
        return env

    yield make
    for env in made:
        env.close()


@pytest.fixture
def rollout() -> Callable[..., dict[str, np.ndarray]]:
    """``rollout(env, actions)``: step ``env`` with ``actions`` ``[T, num_envs, act_dim]`` and
    return every output stacked over time (``obs``, ``reward``, ``terminated``, ``truncated``,
    ``final_obs``, ``_final_obs``, ``x_velocity``, the reward terms, ``unstable``), plus the
    state (``qpos``, ``qvel``) after the last step."""

    def run(env: Any, actions: np.ndarray) -> dict[str, np.ndarray]:
        keys = ("obs", "reward", "terminated", "truncated")
        out: dict[str, list[np.ndarray]] = {}
        for a in actions:
            step = env.step(a)
            for key, value in zip(keys, step[:4]):
                out.setdefault(key, []).append(value)
            for key, value in step[4].items():
                if key != "unstable_reason":
                    out.setdefault(key, []).append(value)
        stacked = {key: np.stack(values) for key, values in out.items()}
        stacked["qpos"], stacked["qvel"] = env.get_state()
        return stacked

    return run


def assert_same_rollouts(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    """Bit-identical rollouts (NaN where both are NaN, e.g. unused ``final_obs`` rows)."""
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert np.array_equal(a[key], b[key], equal_nan=a[key].dtype.kind == "f"), key


@pytest.fixture
def same_rollouts() -> Callable[[dict[str, np.ndarray], dict[str, np.ndarray]], None]:
    return assert_same_rollouts


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    """The tests' problems are tiny: torch's intra-op threads only add overhead (a lot on a busy
    machine), and one thread makes float results independent of the machine's core count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
