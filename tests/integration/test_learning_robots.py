"""A robot learns with the shipped defaults: the guard against a convention that trains nothing.

Before the action convention (envs/action_map.py) every MuJoCo family stayed at the return of
random actions (HalfCheetahDir: about -17 after adaptation at meta-iteration 55). With it,
``bmaml-train --config halfcheetah-dir`` (MLP, 40 tasks x 20 episodes x 100 steps, second order)
reaches +46 ... +70 after adaptation within 25 meta-iterations while the meta-policy itself stays
near 0 (no preferred direction), as MAML should.

About 2.5 minutes on 2 cores: marked ``learning`` (deselected by default; ``.ci/run`` runs it after
the fast suite: ``pytest -m learning``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bmaml_robot.config import load_config
from bmaml_robot.evaluate import evaluate
from bmaml_robot.train import train

ITERATIONS = 25


@pytest.mark.learning
def test_halfcheetah_dir_learns_with_the_default_config(tmp_path: Path) -> None:
    config = load_config("halfcheetah-dir").replace(num_iterations=ITERATIONS)
    result = train(config, tmp_path / "run")
    last = result.metrics[-5:]
    before = float(np.mean([m["return_before"] for m in last]))
    after = float(np.mean([m["return_after"] for m in last]))
    summary = {m["iteration"]: (round(m["return_before"], 1), round(m["return_after"], 1)) for m in result.metrics}
    assert after > 30.0, summary
    assert after - before >= 20.0, summary
    # Held out (bmaml-eval's own streams): one inner step gains what training saw.
    held_out = evaluate(tmp_path / "run", adapt_steps=1, num_tasks=20, episodes=10, num_threads=2, write=False)
    step0, step1 = held_out.summary
    assert step1["mean"] > 30.0 and step1["gain_ci_low"] > 20.0, held_out.summary
