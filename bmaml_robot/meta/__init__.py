"""Meta-learning: episodes, baseline, advantages, inner adaptation and loop, the MAML-TRPO outer update."""

from .adaptation import Params, action_log_probs, adapt, inner_loss, policy_distribution
from .advantages import compute_advantages, discounted_returns, normalize_per_task
from .baseline import (
    baseline_features,
    episode_features,
    fit_linear_baseline,
    predict_linear_baseline,
)
from .episodes import Episodes, ProcessedEpisodes, task_mean, zero_masked
from .inner_loop import InnerLoop, adapt_to_tasks
from .maml_trpo import MetaLearner
from .outer import AutogradOuterProblem, OuterProblem, exact_kl_hvp, make_outer_problem, mean_kl, surrogate_loss
from .trpo import (
    LineSearchResult,
    backtracking_line_search,
    conjugate_gradient,
    hessian_vector_product,
    trust_region_step,
)

__all__ = [
    "AutogradOuterProblem",
    "Episodes",
    "InnerLoop",
    "ProcessedEpisodes",
    "LineSearchResult",
    "MetaLearner",
    "OuterProblem",
    "Params",
    "action_log_probs",
    "adapt",
    "adapt_to_tasks",
    "backtracking_line_search",
    "baseline_features",
    "compute_advantages",
    "conjugate_gradient",
    "discounted_returns",
    "episode_features",
    "exact_kl_hvp",
    "fit_linear_baseline",
    "hessian_vector_product",
    "inner_loss",
    "make_outer_problem",
    "mean_kl",
    "normalize_per_task",
    "policy_distribution",
    "predict_linear_baseline",
    "surrogate_loss",
    "task_mean",
    "trust_region_step",
    "zero_masked",
]
