"""Torch on one intra-op thread while the package's own computations run.

Torch's float results depend on its intra-op thread count (results must not depend on the machine
or on ``--num-threads``), and on a busy machine a second torch thread made meta-iterations ~5x
slower; the robots have their own threads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """``torch.set_num_threads(1)`` inside the block; the caller's count is restored after it."""
    before = torch.get_num_threads()
    if before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before != 1:
            torch.set_num_threads(before)
