"""bmaml_robot: meta-reinforcement learning (MAML) for MuJoCo robots."""
