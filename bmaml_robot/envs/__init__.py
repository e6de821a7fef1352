"""Batched MuJoCo robots and their task families."""

import gymnasium

from bmaml_robot.envs.families import FAMILIES, TaskFamily, get_family
from bmaml_robot.envs.vector_env import MAX_THREADS, REWARD_TERMS, BatchedRobotEnv, make_vec

for _name in FAMILIES:
    _id = f"bmaml_robot/{_name}-v0"
    if _id not in gymnasium.registry:
        gymnasium.register(_id, entry_point="bmaml_robot.envs.single_env:RobotTaskEnv", kwargs={"family": _name})

__all__ = ["FAMILIES", "MAX_THREADS", "REWARD_TERMS", "BatchedRobotEnv", "TaskFamily", "get_family", "make_vec"]
