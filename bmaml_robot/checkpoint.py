"""Atomic files: a kill at any moment leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import torch


@contextlib.contextmanager
def atomic_path(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path next to ``path`` for a writer that wants a file name (``suffix`` tells it
    the format). When the block ends normally it replaces ``path`` atomically, with the mode a plain
    ``open()`` would give (mkstemp makes 0600 files; results are for everyone who may read the
    folder); when it raises, the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)  # atomic on POSIX: readers see the old or the new file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write(path: Path, write: Any) -> None:
    """``write(file)`` into a binary file that atomically becomes ``path``, flushed to disk."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save ``state`` to ``path`` atomically."""
    _atomic_write(Path(path), lambda f: torch.save(state, f))


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=False)
    except Exception as error:  # a checkpoint written by save_checkpoint is never partial
        raise ValueError(f"checkpoint: {path} could not be read ({error})") from error


def write_text_atomic(path: Path, text: str) -> None:
    _atomic_write(Path(path), lambda f: f.write(text.encode()))


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; a torn last line (killed mid-write) is dropped."""
    records = []
    if not Path(path).exists():
        return records
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records
