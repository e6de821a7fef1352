"""bmaml_robot: meta-reinforcement learning (MAML) for MuJoCo robots.

    import bmaml_robot as bm
    env = bm.make_vec("HalfCheetahDir", num_envs=800, num_threads=2, seed=0, max_episode_steps=100)
"""

# Load MuJoCo's shared library (through its Python package) before our extension, which links it.
import mujoco as _mujoco

try:
    from bmaml_robot import _core  # noqa: F401 (loaded here so that a broken build fails with help)
except ImportError as error:
    from bmaml_robot._import_help import core_import_error

    raise core_import_error(error, _mujoco.__version__) from error

from bmaml_robot.envs import FAMILIES, MAX_THREADS, REWARD_TERMS, BatchedRobotEnv, TaskFamily, get_family, make_vec
from bmaml_robot.gae import gae

__version__ = "0.1.0"

__all__ = [
    "FAMILIES",
    "MAX_THREADS",
    "REWARD_TERMS",
    "BatchedRobotEnv",
    "TaskFamily",
    "gae",
    "get_family",
    "make_vec",
    "__version__",
]
