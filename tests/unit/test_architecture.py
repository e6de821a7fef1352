"""The import rules of docs/architecture.md: each room imports, at module level, only the rooms
below it (imports inside functions are the deliberate late ones: the CLI before torch, Ray)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "bmaml_robot"
DEPLOY = ROOT / "deploy" / "bmaml_robot_deploy"

_BASE = {"bmaml_robot", "gae", "_import_help"}  # the package itself: the compiled core
_ENVS = _BASE | {"envs"}
_LOW = _ENVS | {"policies", "config", "checkpoint", "seeds", "torch_threads", "provenance", "stats", "plots"}
_META = _LOW | {"meta"}
_RUNS = _META | {"rl2", "factory", "run", "run_log"}
_COMMANDS = _RUNS | {"compare"}

#: room (first name under bmaml_robot) -> rooms it may import at module level.
ALLOWED = {
    "envs": _ENVS, "gae": _BASE, "_import_help": _BASE, "__init__": _ENVS,
    "policies": {"policies"},
    "config": _LOW, "checkpoint": set(), "seeds": set(), "torch_threads": set(), "provenance": set(),
    "stats": set(), "plots": {"checkpoint"},
    "meta": {"meta", "envs", "policies", "torch_threads", "gae", "bmaml_robot"},
    "rl2": {"meta", "envs", "policies", "torch_threads", "gae", "config", "seeds", "bmaml_robot"},
    "factory": _RUNS, "run": _RUNS, "run_log": _RUNS,
    "train": _COMMANDS, "evaluate": _COMMANDS, "render": _COMMANDS, "export": _COMMANDS, "compare": _COMMANDS,
    "cli": _COMMANDS | {"cli"},
}


def module_level_imports(path: Path, package_root: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports at module level (``if`` blocks, e.g.
    TYPE_CHECKING, excluded; ``try`` bodies included)."""
    parts = list(path.relative_to(package_root.parent).with_suffix("").parts)
    package = parts if path.name == "__init__.py" else parts[:-1]
    if path.name == "__init__.py":
        package = package[:-1]
    names = set()
    nodes = [n for node in ast.parse(path.read_text(encoding="utf-8")).body
             for n in (node.body if isinstance(node, ast.Try) else [node])]
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            names.add(".".join(base + ([node.module] if node.module else [])))
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _room(name: str) -> str | None:
    """The room of a module name under bmaml_robot (``bmaml_robot.meta.sampler`` -> ``meta``)."""
    parts = name.split(".")
    if parts[0] != "bmaml_robot":
        return None
    return parts[1] if len(parts) > 1 else "bmaml_robot"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_each_room_imports_only_the_rooms_below_it(path: Path) -> None:
    relative = path.relative_to(PACKAGE).with_suffix("").parts
    room = relative[0]
    allowed = ALLOWED[room] | {room}
    imported = {_room(name) for name in module_level_imports(path, PACKAGE)} - {None}
    assert imported <= allowed, f"{path.relative_to(ROOT)} imports {sorted(imported - allowed)} at module level"


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_deploy_runtime_needs_neither_torch_nor_the_package(path: Path) -> None:
    imported = module_level_imports(path, DEPLOY)
    bad = {name for name in imported if name.split(".")[0] in ("torch", "bmaml_robot", "gymnasium", "mujoco")}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)} at module level"


def test_the_rules_see_imports() -> None:
    """The checker itself: relative and absolute imports are resolved to the package's names."""
    names = module_level_imports(PACKAGE / "meta" / "maml_trpo.py", PACKAGE)
    assert "bmaml_robot.meta.outer" in names and "torch" in names
    assert "bmaml_robot.policies.base" in module_level_imports(PACKAGE / "meta" / "adaptation.py", PACKAGE)
    assert "bmaml_robot.meta.adaptation" in module_level_imports(PACKAGE / "meta" / "__init__.py", PACKAGE)
