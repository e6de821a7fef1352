"""Why the C++ core did not load, in words a user can act on (``bmaml_robot/__init__.py``)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path


def core_import_error(error: ImportError, mujoco_version: str) -> ImportError:
    """The error to raise when ``bmaml_robot._core`` cannot be imported.

    Two causes are common: the package is imported from its source folder (the repository root
    as the current directory, or on PYTHONPATH), which holds no compiled core and shadows the
    installed package; or MuJoCo was upgraded after the core was built against it."""
    here = Path(__file__).resolve().parent
    if not any(here.glob("_core*")):
        try:
            installed = Path(str(importlib.metadata.distribution("bmaml-robot").locate_file("bmaml_robot"))).resolve()
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed is not None and installed != here and any(installed.glob("_core*")):
            return ImportError(
                f"bmaml_robot was imported from the source folder {here}, which shadows the installed package "
                f"in {installed} (the current directory, or PYTHONPATH, comes first on sys.path) and holds no "
                "compiled C++ core: run from another directory, or build the core in place with "
                "pip install --no-build-isolation -e ."
            )
        return ImportError(
            f"bmaml_robot's C++ core is not built in {here} ({error}): install the package "
            "(pip install ./deploy . from the repository root, see the README)"
        )
    return ImportError(
        f"bmaml_robot's C++ core could not be loaded ({error}); MuJoCo {mujoco_version} is installed. "
        "The core links the exact MuJoCo release it was built against: reinstall bmaml-robot "
        "(pip install --force-reinstall --no-deps --no-cache-dir <path or name>) after changing MuJoCo."
    )
