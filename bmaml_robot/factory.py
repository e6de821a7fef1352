"""What a ``TrainConfig`` builds: its policy, its meta-learner and its sampler (MAML's or RL^2's,
as ``config.algorithm`` says)."""

from __future__ import annotations

from bmaml_robot.config import TrainConfig
from bmaml_robot.envs.discrete import DISCRETE_FAMILIES
from bmaml_robot.envs.vector_env import BatchedRobotEnv
from bmaml_robot.meta import MetaLearner
from bmaml_robot.meta.sampler import MetaSampler, Sampler
from bmaml_robot.policies import Policy, make_policy
from bmaml_robot.rl2 import PPOLearner, RL2Policy, TrialSampler
from bmaml_robot.rl2.sampler import TrialSource


def build_policy(config: TrainConfig, obs_dim: int, act_dim: int) -> Policy | RL2Policy:
    """The policy of ``config`` (its architecture and initialisation seed) for these dimensions
    (``act_dim``: the number of actions of a discrete family)."""
    if config.algorithm == "rl2":
        return RL2Policy(
            obs_dim, act_dim, discrete=config.family in DISCRETE_FAMILIES, kind=config.policy,
            hidden_size=config.hidden_size, recurrence=config.recurrence, init_log_std=config.init_log_std,
            seed=config.seed,
        )
    return make_policy(
        config.policy, obs_dim, act_dim, hidden_sizes=config.hidden_sizes, hidden_size=config.hidden_size,
        recurrence=config.recurrence, init_log_std=config.init_log_std, seed=config.seed,
    )


def build_learner(config: TrainConfig, policy: Policy | RL2Policy) -> MetaLearner | PPOLearner:
    """The learner of ``config``: MAML-TRPO (its groups of tasks run on ``config.num_threads``) or
    RL^2's PPO."""
    if isinstance(policy, RL2Policy):
        return PPOLearner(
            policy, learning_rate=config.learning_rate, clip=config.ppo_clip, epochs=config.ppo_epochs,
            minibatches=config.ppo_minibatches, value_coef=config.value_coef, entropy_coef=config.entropy_coef,
            max_grad_norm=config.max_grad_norm, gamma=config.gamma, gae_lambda=config.gae_lambda,
            target_kl=config.ppo_target_kl,
        )
    return MetaLearner(
        policy, fast_lr=config.fast_lr, first_order=config.first_order, max_kl=config.max_kl,
        cg_iters=config.cg_iters, cg_damping=config.cg_damping, hvp_subsample=config.hvp_subsample,
        ls_max_steps=config.ls_max_steps,
        ls_backtrack=config.ls_backtrack, gamma=config.gamma, gae_lambda=config.gae_lambda,
        num_threads=config.num_threads,
    )


def build_sampler(config: TrainConfig) -> Sampler | TrialSource:
    """The sampler ``config.sampler`` names: ``local`` (``MetaSampler`` on ``num_threads``) or
    ``ray`` (``RaySampler``: ``workers`` actors x ``threads_per_worker``, on ``ray_address`` or a
    local Ray). Both give the same episodes. RL^2: ``TrialSampler`` (one trial per task) or, with
    ``ray``, ``RayTrialSampler`` (the same trials)."""
    if config.algorithm == "rl2" and config.sampler == "ray":
        from bmaml_robot.meta.ray_sampler import RayTrialSampler

        return RayTrialSampler(config.family, config.num_tasks, config.episodes_per_trial, config.horizon,
                               action_scale=config.action_scale, num_workers=config.workers,
                               threads_per_worker=config.threads_per_worker, address=config.ray_address or None)
    if config.algorithm == "rl2":
        return TrialSampler(config.family, config.num_tasks, config.episodes_per_trial, config.horizon,
                            num_threads=config.num_threads, action_scale=config.action_scale)
    if config.sampler == "ray":
        from bmaml_robot.meta.ray_sampler import RaySampler

        return RaySampler(config.family, config.num_tasks, config.episodes_per_task, config.horizon,
                          action_scale=config.action_scale, num_workers=config.workers,
                          threads_per_worker=config.threads_per_worker, address=config.ray_address or None)
    return MetaSampler(config.family, config.num_tasks, config.episodes_per_task, config.horizon,
                       num_threads=config.num_threads, action_scale=config.action_scale)


def check_sampler(config: TrainConfig) -> None:
    """ValueError (before any work starts) if ``config.sampler`` cannot run here: ``ray``
    without Ray installed names the command that installs it."""
    if config.sampler == "ray":
        from bmaml_robot.meta.ray_sampler import import_ray

        try:
            import_ray()
        except ImportError as error:
            raise ValueError(f"sampler: {error}") from None


def robot_dims(family: str) -> tuple[int, int]:
    """(obs_dim, act_dim) of ``family``'s robot; (obs_dim, number of actions) of a discrete task."""
    if family in DISCRETE_FAMILIES:
        spec = DISCRETE_FAMILIES[family]
        return spec.obs_dim, spec.num_actions
    env = BatchedRobotEnv(family, 1, max_episode_steps=1)
    try:
        return env.obs_dim, env.act_dim
    finally:
        env.close()
