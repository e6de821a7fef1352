"""The seed arguments of the batched envs (robots and discrete tasks): checked, as uint64 arrays."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bmaml_robot_deploy.checks import check_int


def seed_list(seed: Any, num_envs: int) -> np.ndarray:
    """``reset(seed=[...])``: one integer in [0, 2**64) per env, as uint64 ``[num_envs]``."""
    if isinstance(seed, (str, bytes)) or not isinstance(seed, (Sequence, np.ndarray)):
        raise ValueError(f"seed: expected None, an integer in [0, 2**64) or a list of {num_envs} such integers "
                         f"(one per env), got {seed!r}")
    seeds = list(seed)
    if len(seeds) != num_envs:
        raise ValueError(f"seed: expected a list of num_envs={num_envs} integers (one per env), got {len(seeds)}")
    for i, value in enumerate(seeds):
        check_int(value, f"seed[{i}]", minimum=0, below=2**64)
    return np.array([int(value) for value in seeds], dtype=np.uint64)


def uint64_array(value: Any, name: str, length: int) -> np.ndarray:
    """``value`` as a uint64 array ``[length]``, or a ValueError naming ``name``."""
    array = np.asarray(value)
    if array.shape != (length,):
        raise ValueError(f"{name}: expected {length} integers (shape [{length}]), got shape {list(array.shape)}")
    if array.dtype.kind not in "iu" or (array.dtype.kind == "i" and (array < 0).any()):
        raise ValueError(f"{name}: expected integers in [0, 2**64), got dtype {array.dtype}"
                         + (" with negative values" if array.dtype.kind == "i" else ""))
    return np.ascontiguousarray(array, dtype=np.uint64)
