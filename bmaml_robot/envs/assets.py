"""Where the robots' MJCF files come from: Gymnasium's own v5 assets, so physics match exactly."""

from __future__ import annotations

from pathlib import Path

import gymnasium.envs.mujoco
import mujoco

from bmaml_robot import _core

_ASSET_FILES = {
    "HalfCheetah": "half_cheetah.xml",
    "Ant": "ant.xml",
    "Swimmer": "swimmer.xml",
    "Hopper": "hopper.xml",  # Hopper-v5's default
    "Walker2d": "walker2d_v5.xml",  # Walker2d-v5's default (both feet friction 1.9)
}


def asset_path(robot: str) -> str:
    """Path of the robot's MJCF file in the installed gymnasium package ("" for Navigation2D)."""
    if robot == "Navigation2D":
        return ""
    path = Path(gymnasium.envs.mujoco.__file__).parent / "assets" / _ASSET_FILES[robot]
    if not path.is_file():
        raise FileNotFoundError(f"{robot}: Gymnasium's asset {path} is missing; reinstall 'gymnasium[mujoco]'")
    return str(path)


def load_model(robot: str) -> mujoco.MjModel:
    """The robot's asset as a ``mujoco.MjModel`` (rendering, replays), without the terminal noise
    of its compile-time deprecation notes (Gymnasium's HalfCheetah and Ant set ``settotalmass``),
    as the core loads it."""
    with _core.QuietWarnings():
        return mujoco.MjModel.from_xml_path(asset_path(robot))
