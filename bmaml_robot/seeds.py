"""Every random stream of a run, in one place: training's and held-out evaluation's.

Training draws everything of meta-iteration ``i`` from ``SeedSequence([run_seed, i, stream])``
(``iteration_seed``): three entropy words and no spawn key; stream 0 draws the tasks, stream
``1 + k`` seeds the reset and action noise of the episodes sampled after ``k`` inner steps.

Held-out evaluation (``bmaml-eval``, ``bmaml-render``, ``bmaml-export`` and the evaluation during
training) uses ``SeedSequence(entropy=eval_seed, spawn_key=(EVAL_STREAM, stream))``
(``evaluation_seed``), with the same stream numbering. NumPy mixes the spawn key into the pool
after the entropy, so no training seed sequence equals an evaluation one, whatever the seeds.
The evaluation streams do not depend on the run's seed: every run evaluated with the same seed
(and task/episode counts) sees the same tasks and noise, so runs can be compared task by task;
and the result after ``k`` steps does not depend on how many steps are asked for.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Seeds (a run's, an evaluation's) are integers in [0, MAX_SEED): SeedSequence entropy of 64 bits.
MAX_SEED = 2**64
#: Spawn-key tag of the evaluation streams (the bytes of "eval").
EVAL_STREAM = 0x6576616C


def _seed63(sequence: np.random.SeedSequence) -> int:
    """A 63-bit seed from ``sequence`` (fits int64 everywhere it travels)."""
    return int(sequence.generate_state(1, np.uint64)[0] >> 1)


def iteration_seed(seed: int, iteration: int, stream: int) -> int:
    """Seed of training stream ``stream`` of meta-iteration ``iteration`` of the run seeded ``seed``."""
    return _seed63(np.random.SeedSequence([seed, iteration, stream]))


def evaluation_seed(eval_seed: int, stream: int) -> int:
    """Seed of evaluation stream ``stream`` (0: tasks, ``1 + k``: episodes after k steps)."""
    return _seed63(np.random.SeedSequence(entropy=int(eval_seed), spawn_key=(EVAL_STREAM, int(stream))))


def held_out_tasks(family: str, num_tasks: int, eval_seed: int = 0) -> list[dict[str, Any]]:
    """``num_tasks`` tasks of ``family`` from the evaluation stream (the same for every run)."""
    from bmaml_robot.envs.discrete import get_task_family

    rng = np.random.default_rng(evaluation_seed(eval_seed, 0))
    return get_task_family(family).sample_tasks(num_tasks, rng)
