"""Meta-learning: episodes, baseline, advantages, inner adaptation and the MAML-TRPO outer step."""

from .adaptation import Params, action_log_probs, adapt, inner_loss, policy_distribution
from .advantages import compute_advantages, discounted_returns, normalize_per_task
from .baseline import (
    baseline_features,
    episode_features,
    fit_linear_baseline,
    predict_linear_baseline,
)
from .episodes import Episodes, task_mean, zero_masked
from .maml_trpo import MetaLearner, OuterProblem, exact_kl_hvp, mean_kl, surrogate_loss
from .trpo import (
    LineSearchResult,
    backtracking_line_search,
    conjugate_gradient,
    hessian_vector_product,
    trust_region_step,
)

__all__ = [
    "Episodes",
    "LineSearchResult",
    "MetaLearner",
    "OuterProblem",
    "Params",
    "action_log_probs",
    "adapt",
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
    "mean_kl",
    "normalize_per_task",
    "policy_distribution",
    "predict_linear_baseline",
    "surrogate_loss",
    "task_mean",
    "trust_region_step",
    "zero_masked",
]
