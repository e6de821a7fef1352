"""Statistics for comparing training runs across seeds: confidence intervals, Welch's t-test with
effect sizes, a seeded bootstrap, and tests of a difference in variance.

Every function takes one value per independent unit (typically one number per seed: the final
return of a run) as a 1-D array-like of finite floats, and returns a small NamedTuple.

Small samples (read this before trusting a p-value). A meta-RL study usually has 3-5 seeds per
variant. With n = 3:

- the t-based 95% CI of a mean uses t(0.975, 2) = 4.30, so it is about 4.3 / 1.96 = 2.2 times
  wider than the normal-theory interval: honest, but wide;
- Welch's test has roughly 2-4 degrees of freedom and detects only large effects: at n = 3 per
  group and alpha 0.05 its power is about 12% for Cohen's d = 1, 37% for d = 2, 67% for d = 3 and
  88% for d = 4 (simulated, normal data); "no significant difference" then means "not
  detectable with this many seeds", not "equal";
- the bootstrap of a mean of 3 values sees only 10 distinct resamples per group and its
  percentile interval is too narrow (it ignores the (n - 1)/n shrinkage of the variance): prefer
  the Welch interval, use the bootstrap as a distribution-free cross-check;
- variance tests have very little power: Brown-Forsythe with n = 3 centres at the median, so one
  of the three deviations is always 0; the F-test is exact but only under normality, which 3
  values cannot check. Treat their p-values as weak evidence either way.

All tests are two-sided. Nothing here corrects for multiple comparisons except ``holm``, which
callers apply to a family of pairwise p-values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import optimize as _optimize
from scipy import special
from scipy import stats as _scipy_stats

from bmaml_robot_deploy.checks import check_float, check_int

ArrayLike = Sequence[float] | np.ndarray


def as_sample(values: ArrayLike, name: str = "values", min_size: int = 1) -> np.ndarray:
    """``values`` as a float64 1-D array, checked: finite numbers, at least ``min_size`` of them."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name}: expected a 1-D sequence of numbers, got {type(values).__name__}") from error
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of numbers, got shape {array.shape}")
    if array.size < min_size:
        raise ValueError(f"{name}: expected at least {min_size} values, got {array.size}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: expected finite numbers, got {array.tolist()}")
    return array


def _check_confidence(confidence: float) -> float:
    return check_float(confidence, "confidence", low=0, high=1, low_open=True, high_open=True, what="a number")


# ----------------------------------------------------------------------------- one sample
class MeanCI(NamedTuple):
    """A mean with its Student-t confidence interval."""

    mean: float
    low: float
    """Lower end of the interval (NaN with a single value: the spread is unknown)."""
    high: float
    half_width: float
    std: float
    """Sample standard deviation (ddof=1; NaN with a single value)."""
    n: int
    confidence: float


def mean_ci(values: ArrayLike, confidence: float = 0.95) -> MeanCI:
    """Mean of ``values`` [n] with the Student-t confidence interval ``mean +- t * s / sqrt(n)``.

    Assumes independent values from a distribution whose mean is roughly normal (exact for
    normal data; fine for means of many episodes). With n = 1 the interval is NaN (no spread can
    be estimated); with n = 3 it uses t(2) and is wide (module docstring). Identical values give
    a zero-width interval.
    """
    confidence = _check_confidence(confidence)
    x = as_sample(values)
    n = x.size
    mean = float(x.mean())
    if n < 2:
        return MeanCI(mean, math.nan, math.nan, math.nan, math.nan, n, confidence)
    std = float(x.std(ddof=1))
    half = float(_scipy_stats.t.ppf(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n))
    return MeanCI(mean, mean - half, mean + half, half, std, n, confidence)


# ----------------------------------------------------------------------------- two samples
class WelchResult(NamedTuple):
    """Welch's unequal-variance t-test of ``mean(a) - mean(b)``, with effect sizes."""

    mean_a: float
    mean_b: float
    difference: float
    """mean(a) - mean(b)."""
    ci_low: float
    """Welch (Satterthwaite df) confidence interval of the difference."""
    ci_high: float
    t: float
    df: float
    """Welch-Satterthwaite degrees of freedom."""
    p_value: float
    """Two-sided; NaN when both groups have zero variance."""
    cohens_d: float
    """(mean_a - mean_b) / pooled standard deviation."""
    hedges_g: float
    """Cohen's d times the exact small-sample correction J(n_a + n_b - 2)."""
    n_a: int
    n_b: int
    confidence: float


def pooled_std(a: np.ndarray, b: np.ndarray) -> float:
    """sqrt(((n_a - 1) s_a^2 + (n_b - 1) s_b^2) / (n_a + n_b - 2)), the effect-size denominator."""
    na, nb = a.size, b.size
    return math.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2))


def detectable_effect(n_a: int, n_b: int, power: float = 0.8, alpha: float = 0.05) -> float:
    """The smallest standardised difference |mean_a - mean_b| / pooled_std (Cohen's d) that a
    two-sided two-sample t-test at ``alpha`` detects with probability ``power`` from ``n_a`` and
    ``n_b`` values (normal data, equal variances: the noncentral t with n_a + n_b - 2 degrees of
    freedom; Welch's test is no more powerful). Times the pooled standard deviation, it is the
    difference in the data's units below which "no significant difference" says nothing: the power
    statement of a null result. 5 + 5 seeds: d = 2.02; 3 + 3: 3.07; 64 + 64: 0.50 (80% power, alpha 0.05)."""
    n_a, n_b = check_int(n_a, "n_a", minimum=2), check_int(n_b, "n_b", minimum=2)
    power = check_float(power, "power", low=alpha, high=1.0, low_open=True, high_open=True, what="a probability")
    df = n_a + n_b - 2
    critical = float(_scipy_stats.t.ppf(1.0 - alpha / 2.0, df))
    scale = math.sqrt(1.0 / n_a + 1.0 / n_b)

    def shortfall(d: float) -> float:
        nc = d / scale
        lower = float(_scipy_stats.nct.cdf(-critical, df, nc))  # NaN far out in scipy: it is ~0 there
        return float(_scipy_stats.nct.sf(critical, df, nc)) + (0.0 if math.isnan(lower) else lower) - power

    high = 1.0
    while shortfall(high) < 0.0:  # bracket the root: the power rises with d
        high *= 2.0
    return float(_optimize.brentq(shortfall, 0.0, high, xtol=1e-6))


def hedges_correction(df: float) -> float:
    """J(df) = Gamma(df / 2) / (sqrt(df / 2) Gamma((df - 1) / 2)), Hedges' exact bias factor
    (about 1 - 3 / (4 df - 1); J(4) = 0.798 for 3 + 3 seeds)."""
    if df <= 1:
        return math.nan
    return float(math.exp(special.gammaln(df / 2.0) - special.gammaln((df - 1.0) / 2.0)) / math.sqrt(df / 2.0))


def cohens_d(a: ArrayLike, b: ArrayLike) -> float:
    """Standardised difference (mean_a - mean_b) / pooled_std; needs >= 2 values per group.

    0 when both groups are constant and equal, +-inf when they are constant and differ. Rough
    reading (Cohen): 0.2 small, 0.5 medium, 0.8 large; seed-to-seed comparisons in RL often show
    |d| > 1 simply because there are few seeds, so read the CI of the difference too.
    """
    x, y = as_sample(a, "a", 2), as_sample(b, "b", 2)
    diff = float(x.mean() - y.mean())
    s = pooled_std(x, y)
    if s == 0.0:
        return 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
    return diff / s


def welch_test(a: ArrayLike, b: ArrayLike, confidence: float = 0.95) -> WelchResult:
    """Welch's t-test (``scipy.stats.ttest_ind(a, b, equal_var=False)``) with the confidence
    interval of the difference and Cohen's d / Hedges' g.

    a: [n_a], b: [n_b], each >= 2 independent values (e.g. one final return per seed). Assumes
    the two group means are roughly normal; does not assume equal variances. With 3 values per
    group the test has about 2-4 degrees of freedom and little power (module docstring).
    """
    confidence = _check_confidence(confidence)
    x, y = as_sample(a, "a", 2), as_sample(b, "b", 2)
    na, nb = x.size, y.size
    va, vb = x.var(ddof=1) / na, y.var(ddof=1) / nb
    diff = float(x.mean() - y.mean())
    se2 = va + vb
    if se2 == 0.0:
        t = math.nan if diff == 0.0 else math.copysign(math.inf, diff)
        p = math.nan if diff == 0.0 else 0.0
        df = float(na + nb - 2)
        low = high = diff
    else:
        result = _scipy_stats.ttest_ind(x, y, equal_var=False)
        t, p = float(result.statistic), float(result.pvalue)
        df = float(se2**2 / (va**2 / (na - 1) + vb**2 / (nb - 1)))
        half = float(_scipy_stats.t.ppf(0.5 + confidence / 2.0, df) * math.sqrt(se2))
        low, high = diff - half, diff + half
    d = cohens_d(x, y)
    g = d * hedges_correction(na + nb - 2) if math.isfinite(d) else d
    return WelchResult(float(x.mean()), float(y.mean()), diff, low, high, t, df, p, d, g, na, nb, confidence)


class BootstrapResult(NamedTuple):
    """Percentile bootstrap of ``mean(a) - mean(b)``."""

    difference: float
    """mean(a) - mean(b) of the data."""
    low: float
    high: float
    p_value: float
    """Two-sided bootstrap p-value: 2 x the smaller tail share of resampled differences beyond
    0 (capped at 1); crude, and at least 2 / (num_resamples + 1)."""
    num_resamples: int
    confidence: float
    seed: int


def bootstrap_difference(
    a: ArrayLike, b: ArrayLike, *, num_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> BootstrapResult:
    """Percentile-bootstrap confidence interval of ``mean(a) - mean(b)``.

    Each group is resampled with replacement independently (``num_resamples`` times, with
    ``numpy.random.default_rng(seed)``: the same seed gives the same interval). Assumes
    independent values; no normality. With 3 values per group the interval is coarse and too
    narrow (module docstring): a cross-check of ``welch_test``, not a replacement.
    """
    confidence = _check_confidence(confidence)
    x, y = as_sample(a, "a", 1), as_sample(b, "b", 1)
    check_int(num_resamples, "num_resamples", minimum=100)
    check_int(seed, "seed", minimum=0)
    rng = np.random.default_rng(seed)
    means_a = x[rng.integers(0, x.size, size=(num_resamples, x.size))].mean(axis=1)
    means_b = y[rng.integers(0, y.size, size=(num_resamples, y.size))].mean(axis=1)
    differences = means_a - means_b
    alpha = 1.0 - confidence
    low, high = np.quantile(differences, [alpha / 2.0, 1.0 - alpha / 2.0])
    below = (np.count_nonzero(differences <= 0.0) + 1) / (num_resamples + 1)
    above = (np.count_nonzero(differences >= 0.0) + 1) / (num_resamples + 1)
    p = min(1.0, 2.0 * min(below, above))
    return BootstrapResult(float(x.mean() - y.mean()), float(low), float(high), float(p), int(num_resamples),
                           confidence, int(seed))


# ----------------------------------------------------------------------------- variances
class VarianceTest(NamedTuple):
    """A test of equal variances (H0: all groups have the same variance)."""

    name: str
    statistic: float
    p_value: float
    """Two-sided; NaN when it is undefined (e.g. every group constant)."""
    stds: tuple[float, ...]
    """Sample standard deviation (ddof=1) of each group, in order."""


def brown_forsythe(*groups: ArrayLike) -> VarianceTest:
    """Brown-Forsythe test: Levene's test on absolute deviations from each group's median
    (``scipy.stats.levene(*groups, center='median')``). Robust to non-normal data; needs >= 2
    groups of >= 2 values. With n = 2 in every group it is undefined (NaN: both deviations of a
    group are equal); with n = 3 one deviation per group is always 0 and the power is very low
    (module docstring).
    """
    samples = _groups(groups)
    stds = tuple(float(s.std(ddof=1)) for s in samples)
    deviations = [np.abs(s - np.median(s)) for s in samples]
    scale = max(float(np.abs(np.concatenate(deviations)).max()), 1e-300)
    if all(np.ptp(d) <= 1e-9 * scale for d in deviations):
        # Levene's denominator (spread of the deviations within groups) is 0 up to rounding: W is
        # undefined. Always the case with 2 values per group (both deviate by |a - b| / 2).
        return VarianceTest("Brown-Forsythe", math.nan, math.nan, stds)
    result = _scipy_stats.levene(*samples, center="median")
    return VarianceTest("Brown-Forsythe", float(result.statistic), float(result.pvalue), stds)


class FTestResult(NamedTuple):
    """F-test of ``var(a) / var(b)``."""

    ratio: float
    """s_a^2 / s_b^2."""
    ratio_low: float
    """Confidence interval of the variance ratio (exact under normality)."""
    ratio_high: float
    p_value: float
    df_a: int
    df_b: int
    confidence: float


def f_test_variance(a: ArrayLike, b: ArrayLike, confidence: float = 0.95) -> FTestResult:
    """Two-sided F-test of equal variances: ``F = s_a^2 / s_b^2 ~ F(n_a - 1, n_b - 1)`` under H0,
    p = 2 min(P(F' <= F), P(F' >= F)).

    Exact when both groups are normal, and badly wrong when they are not (heavy tails inflate
    it): pair it with ``brown_forsythe``. With 3 + 3 values the 95% interval of the ratio spans a
    factor of about 39 x 39 = 1500, i.e. only enormous differences in spread are detectable.
    """
    confidence = _check_confidence(confidence)
    x, y = as_sample(a, "a", 2), as_sample(b, "b", 2)
    dfa, dfb = x.size - 1, y.size - 1
    va, vb = float(x.var(ddof=1)), float(y.var(ddof=1))
    if vb == 0.0:
        ratio = math.nan if va == 0.0 else math.inf
        return FTestResult(ratio, math.nan, math.nan, math.nan if va == 0.0 else 0.0, dfa, dfb, confidence)
    ratio = va / vb
    dist = _scipy_stats.f(dfa, dfb)
    p = min(1.0, 2.0 * min(float(dist.cdf(ratio)), float(dist.sf(ratio))))
    alpha = 1.0 - confidence
    low = ratio / float(dist.ppf(1.0 - alpha / 2.0))
    high = ratio / float(dist.ppf(alpha / 2.0))
    return FTestResult(ratio, low, high, p, dfa, dfb, confidence)


def _groups(groups: tuple[ArrayLike, ...]) -> list[np.ndarray]:
    if len(groups) < 2:
        raise ValueError(f"groups: expected at least 2 groups, got {len(groups)}")
    return [as_sample(g, f"groups[{i}]", 2) for i, g in enumerate(groups)]


# ----------------------------------------------------------------------------- many tests
def holm(p_values: ArrayLike) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values [m] (same order as given) for a family of m tests.

    Controls the family-wise error rate without assuming independence: reject test i at level
    alpha when its adjusted p-value is <= alpha. NaN p-values stay NaN and do not count.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p_values: expected a 1-D sequence, got shape {p.shape}")
    adjusted = np.full(p.shape, np.nan)
    valid = np.flatnonzero(np.isfinite(p))
    if valid.size == 0:
        return adjusted
    if np.any((p[valid] < 0) | (p[valid] > 1)):
        raise ValueError(f"p_values: expected values in [0, 1], got {p.tolist()}")
    m = valid.size
    order = valid[np.argsort(p[valid], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted
