"""RL^2 learns to learn: on correlated two-armed bandits it comes within 10% of Thompson sampling
(computed on the same reward draws) and far above a random policy; on Navigation2D its second
episode of a trial beats its first (it used what the first taught it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bmaml_robot.config import load_config
from bmaml_robot.evaluate import evaluate
from bmaml_robot.train import train


def test_rl2_gru_on_correlated_bandits_comes_within_ten_percent_of_thompson(tmp_path: Path) -> None:
    config = load_config("rl2-bandit").replace(num_iterations=60)
    train(config, tmp_path / "run")
    result = evaluate(tmp_path / "run", num_tasks=100, episodes=4, write=False)
    bandit = result.settings["bandit"]
    rl2, thompson, random = (bandit[name]["cumulative_reward"] for name in ("rl2", "thompson", "random"))
    assert rl2 >= 0.9 * thompson, bandit
    assert rl2 > random + 8.0, bandit  # random: 25 of 50 pulls; Thompson ~36; the oracle ~38.5
    assert bandit["rl2"]["expected_regret"] < bandit["random"]["expected_regret"] / 3


@pytest.mark.learning
def test_rl2_on_navigation_uses_the_first_episode_in_the_second(tmp_path: Path) -> None:
    config = load_config("rl2-navigation")
    train(config, tmp_path / "run")
    result = evaluate(tmp_path / "run", num_tasks=100, episodes=4, write=False)
    second = result.summary[1]
    assert second["gain_ci_low"] > 0, result.summary  # episode 1 beats episode 0, paired over tasks
    assert np.isfinite(second["mean"])
