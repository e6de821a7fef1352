"""Batched MuJoCo robots and their task families.

Every family is registered with Gymnasium as ``bmaml_robot/<Family>-v0``: ``gymnasium.make`` gives
the single env (``RobotTaskEnv``, wrapped in Gymnasium's ``TimeLimit`` with ``max_episode_steps``,
100 unless given), ``gymnasium.make_vec`` the batched one (``make_gymnasium_vec``: one
``BatchedRobotEnv``, NEXT_STEP autoreset, its own time limit of ``max_episode_steps``).

The discrete tasks of Wang et al. (2018) (``discrete.py``: two-armed bandits, the two-step task) are
registered as ``bmaml_robot/<DiscreteFamily>-v0`` too: ``gymnasium.make`` gives ``DiscreteTaskEnv``
(its own episode length, the family's default unless given; no ``TimeLimit``), ``gymnasium.make_vec``
one ``BatchedDiscreteEnv`` (SAME_STEP autoreset).
"""

import gymnasium

from bmaml_robot.envs.discrete import DISCRETE_FAMILIES, BatchedDiscreteEnv, DiscreteTaskFamily
from bmaml_robot.envs.families import FAMILIES, TaskFamily, get_family
from bmaml_robot.envs.vector_env import MAX_THREADS, REWARD_TERMS, BatchedRobotEnv, make_gymnasium_vec, make_vec

#: The episode length of ``gymnasium.make``/``make_vec`` unless ``max_episode_steps`` is given.
DEFAULT_MAX_EPISODE_STEPS = 100

for _name in FAMILIES:
    _id = f"bmaml_robot/{_name}-v0"
    if _id not in gymnasium.registry:
        gymnasium.register(
            _id,
            entry_point="bmaml_robot.envs.single_env:RobotTaskEnv",
            vector_entry_point="bmaml_robot.envs.vector_env:make_gymnasium_vec",
            max_episode_steps=DEFAULT_MAX_EPISODE_STEPS,
            kwargs={"family": _name},
        )

for _name in DISCRETE_FAMILIES:
    _id = f"bmaml_robot/{_name}-v0"
    if _id not in gymnasium.registry:
        gymnasium.register(
            _id,
            entry_point="bmaml_robot.envs.discrete:DiscreteTaskEnv",
            vector_entry_point="bmaml_robot.envs.discrete:make_gymnasium_discrete_vec",
            kwargs={"family": _name},
        )

__all__ = [
    "DISCRETE_FAMILIES",
    "FAMILIES",
    "MAX_THREADS",
    "REWARD_TERMS",
    "BatchedDiscreteEnv",
    "BatchedRobotEnv",
    "DiscreteTaskFamily",
    "TaskFamily",
    "get_family",
    "make_gymnasium_vec",
    "make_vec",
]
