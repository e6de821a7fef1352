"""bmaml_robot: meta-reinforcement learning (MAML) for MuJoCo robots.

    import bmaml_robot as bm
    env = bm.make_vec("HalfCheetahDir", num_envs=800, num_threads=2, seed=0, max_episode_steps=100)
"""

# Load MuJoCo's shared library (through its Python package) before our extension, which links it.
import mujoco as _mujoco

try:
    from bmaml_robot import _core
except ImportError as error:  # most often: MuJoCo upgraded after bmaml_robot was built
    raise ImportError(
        f"bmaml_robot's C++ core could not be loaded ({error}); MuJoCo {_mujoco.__version__} is installed. "
        "The core links the exact MuJoCo release it was built against: reinstall bmaml-robot "
        "(pip install --force-reinstall --no-deps --no-cache-dir <path or name>) after changing MuJoCo."
    ) from error

from bmaml_robot.envs import FAMILIES, MAX_THREADS, REWARD_TERMS, BatchedRobotEnv, TaskFamily, get_family, make_vec
from bmaml_robot.gae import gae

__version__ = "0.1.0"

__all__ = ["FAMILIES", "MAX_THREADS", "REWARD_TERMS", "BatchedRobotEnv", "TaskFamily", "gae", "get_family", "make_vec", "__version__"]
