"""Where the robots' MJCF files come from: Gymnasium's own v5 assets, so physics match exactly."""

from __future__ import annotations

from pathlib import Path

import gymnasium.envs.mujoco

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
