"""Where a result came from: the package version, the git commit when run from a checkout, and the
versions of what computed it. Recorded in every run (``provenance.json``) and exported file.

    from bmaml_robot.provenance import provenance
    provenance()  # {"package_version": "0.1.0", "git_commit": "3e172f4...", "git_dirty": False, ...}
"""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path
from typing import Any


@functools.lru_cache(maxsize=1)
def git_state() -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the checkout the package is imported from; ``(None, None)`` for an
    installed package (no ``.git`` above it) or when git is not available."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None, None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(status.strip())


def provenance() -> dict[str, Any]:
    """The package version, git commit (None outside a checkout) and whether tracked files had
    uncommitted changes, and the versions of Python, torch, MuJoCo and numpy."""
    import mujoco
    import numpy
    import torch

    from bmaml_robot import __version__

    commit, dirty = git_state()
    return {
        "package_version": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "mujoco": mujoco.__version__,
        "numpy": numpy.__version__,
    }
