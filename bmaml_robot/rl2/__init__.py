"""RL^2: the prefrontal-cortex model (Wang et al. 2018; Duan et al. 2016).

A recurrent policy that adapts in its activations (``policy.py``), sampled in trials of
consecutive episodes with its state carried (``sampler.py``), trained by PPO (``ppo.py``), one
meta-iteration at a time (``iteration.py``).
"""

from bmaml_robot.rl2.iteration import rl2_iteration
from bmaml_robot.rl2.policy import RL2_RECURRENCE, RL2Policy
from bmaml_robot.rl2.ppo import PPOLearner
from bmaml_robot.rl2.sampler import Trials, TrialSampler

__all__ = ["RL2_RECURRENCE", "PPOLearner", "RL2Policy", "TrialSampler", "Trials", "rl2_iteration"]
