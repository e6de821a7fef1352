"""Atomic files: a kill at any moment leaves either the old file or the new one, never half of one.

A full disk (or quota) while writing is an ``OSError`` that says so and names the file
(``NoSpaceError``); the previous file stays intact.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
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


class NoSpaceError(OSError):
    """No space left on the device (or quota exceeded) while writing a run's file."""


@contextlib.contextmanager
def _no_space_named(path: Path) -> Iterator[None]:
    """Turn ENOSPC/EDQUOT into a ``NoSpaceError`` naming ``path``."""
    try:
        yield
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoSpaceError(error.errno, f"no space left on device while writing {path}") from error
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """``data`` into a file that atomically becomes ``path``, flushed to disk."""
    with _no_space_named(path), atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save ``state`` to ``path`` atomically. Serialised in memory first: torch's zip writer
    reports a full disk as an unrelated "unexpected pos" error, a plain write as ENOSPC."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes_atomic(Path(path), buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=False)
    except Exception as error:  # a checkpoint written by save_checkpoint is never partial
        raise ValueError(f"checkpoint: {path} could not be read ({error})") from error


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(Path(path), text.encode())


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk."""
    with _no_space_named(Path(path)), open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records (JSON objects) of a JSON-lines file. A torn last line (killed mid-write) is dropped;
    a damaged line anywhere else is a ValueError naming the file and the line."""
    records: list[dict[str, Any]] = []
    if not Path(path).exists():
        return records
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            if number == len(lines):
                break  # torn by a kill in the middle of an append: recomputed on resume
            raise ValueError(f"{path}, line {number}: not a JSON record ({line[:60]!r}); the file is damaged") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}, line {number}: expected a JSON object, got {line[:60]!r}; the file is damaged")
        records.append(record)
    return records
