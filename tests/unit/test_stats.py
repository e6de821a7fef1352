"""Statistics across seeds: known cases (identical groups, clearly shifted groups, equal and very
different spreads), agreement with scipy where it offers the same computation, coverage and
error rates measured by simulation, seeded bootstrap reproducibility, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from bmaml_robot.stats import (
    bootstrap_difference,
    brown_forsythe,
    cohens_d,
    f_test_variance,
    hedges_correction,
    holm,
    mean_ci,
    welch_test,
)

RNG = np.random.default_rng(12345)
BASE = RNG.normal(0.0, 1.0, size=5)  # one fixed group of "seeds"


# ----------------------------------------------------------------------------- mean CI
def test_mean_ci_matches_scipy_t_interval() -> None:
    values = [-20.1, -18.4, -19.7]
    ci = mean_ci(values)
    low, high = scipy_stats.t.interval(0.95, df=2, loc=np.mean(values), scale=scipy_stats.sem(values))
    assert ci.mean == pytest.approx(np.mean(values))
    assert (ci.low, ci.high) == pytest.approx((low, high), rel=1e-12)
    assert ci.half_width == pytest.approx((high - low) / 2)
    assert ci.n == 3 and ci.std == pytest.approx(np.std(values, ddof=1))
    # 90% is narrower than 95%.
    assert mean_ci(values, 0.9).half_width < ci.half_width


def test_mean_ci_small_samples() -> None:
    one = mean_ci([4.0])
    assert one.mean == 4.0 and math.isnan(one.low) and math.isnan(one.high) and one.n == 1
    constant = mean_ci([2.0, 2.0, 2.0])
    assert constant.low == constant.high == 2.0


def test_mean_ci_covers_the_true_mean_95_percent_of_the_time_with_3_seeds() -> None:
    rng = np.random.default_rng(0)
    intervals = [mean_ci(s) for s in rng.normal(10.0, 3.0, size=(2000, 3))]
    covered = [ci.low <= 10.0 <= ci.high for ci in intervals]
    # Binomial(2000, 0.95): standard deviation 0.005.
    assert abs(np.mean(covered) - 0.95) < 0.016


# ----------------------------------------------------------------------------- Welch
def test_identical_groups_show_no_difference() -> None:
    result = welch_test(BASE, BASE.copy())
    assert result.difference == 0.0 and result.t == 0.0
    assert result.p_value == pytest.approx(1.0)
    assert result.cohens_d == 0.0 and result.hedges_g == 0.0
    assert result.ci_low < 0.0 < result.ci_high
    boot = bootstrap_difference(BASE, BASE.copy(), seed=1)
    assert boot.low < 0.0 < boot.high and boot.p_value > 0.5


def test_clearly_shifted_groups_show_a_difference() -> None:
    shifted = BASE + 5.0  # five standard deviations
    result = welch_test(shifted, BASE)
    assert result.p_value < 1e-3
    assert result.difference == pytest.approx(5.0)
    assert result.ci_low > 0.0
    assert result.cohens_d == pytest.approx(5.0 / BASE.std(ddof=1))
    assert 0.0 < result.hedges_g < result.cohens_d
    boot = bootstrap_difference(shifted, BASE, seed=1)
    assert boot.low > 0.0 and boot.p_value < 0.01
    # The sign follows the order of the groups.
    assert welch_test(BASE, shifted).difference == pytest.approx(-5.0)
    assert welch_test(BASE, shifted).cohens_d < 0


@pytest.mark.parametrize("a, b", [
    ([1.0, 2.0, 3.0], [4.0, 5.0, 7.0]),
    (list(RNG.normal(0, 1, 4)), list(RNG.normal(1, 3, 7))),
    ([-17.2, -12.9, -15.0], [-20.3, -19.8, -20.1]),
])
def test_welch_agrees_with_scipy(a: list[float], b: list[float]) -> None:
    ours = welch_test(a, b)
    reference = scipy_stats.ttest_ind(a, b, equal_var=False)
    assert ours.t == pytest.approx(reference.statistic, rel=1e-12)
    assert ours.p_value == pytest.approx(reference.pvalue, rel=1e-12)
    # Our own Satterthwaite df and interval against scipy's.
    assert ours.df == pytest.approx(reference.df, rel=1e-12)
    interval = reference.confidence_interval(0.95)
    assert (ours.ci_low, ours.ci_high) == pytest.approx((interval.low, interval.high), rel=1e-10)


def test_effect_sizes_known_values() -> None:
    a, b = [2.0, 4.0, 6.0], [0.0, 2.0, 4.0]  # both sd 2, means 4 and 2
    assert cohens_d(a, b) == pytest.approx(1.0)
    # J(4) = Gamma(2) / (sqrt(2) Gamma(1.5)) = 1 / (sqrt(2) * sqrt(pi) / 2)
    assert hedges_correction(4) == pytest.approx(2.0 / (math.sqrt(2.0) * math.sqrt(math.pi)))
    assert hedges_correction(200) == pytest.approx(1 - 3 / (4 * 200 - 1), abs=1e-5)
    assert welch_test(a, b).hedges_g == pytest.approx(hedges_correction(4))
    assert cohens_d([1.0, 1.0], [1.0, 1.0]) == 0.0
    assert cohens_d([2.0, 2.0], [1.0, 1.0]) == math.inf


def test_welch_with_constant_groups() -> None:
    same = welch_test([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    assert math.isnan(same.p_value) and same.difference == 0.0
    apart = welch_test([2.0, 2.0, 2.0], [1.0, 1.0, 1.0])
    assert apart.p_value == 0.0 and apart.t == math.inf


def test_welch_false_positive_rate_is_nominal_with_3_seeds() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(0.0, 1.0, size=(1000, 3))
    b = rng.normal(0.0, 2.0, size=(1000, 3))  # equal means, unequal spreads: Welch's case
    rejections = np.mean([welch_test(x, y).p_value < 0.05 for x, y in zip(a, b)])
    # Binomial(1000, 0.05): sd 0.007; Welch is slightly conservative at tiny n.
    assert 0.015 < rejections < 0.075


# ----------------------------------------------------------------------------- bootstrap
def test_bootstrap_is_reproducible_with_a_seed() -> None:
    a, b = RNG.normal(1.0, 1.0, 6), RNG.normal(0.0, 1.0, 6)
    first = bootstrap_difference(a, b, seed=7)
    assert first == bootstrap_difference(a, b, seed=7)
    assert first != bootstrap_difference(a, b, seed=8)
    assert first.difference == pytest.approx(a.mean() - b.mean())
    assert first.low < first.difference < first.high


def test_bootstrap_agrees_with_scipy_percentile_bootstrap() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(2.0, 1.0, 20), rng.normal(0.0, 2.0, 25)
    ours = bootstrap_difference(a, b, num_resamples=20_000, seed=0)
    reference = scipy_stats.bootstrap(
        (a, b), lambda x, y, axis: x.mean(axis=axis) - y.mean(axis=axis), n_resamples=20_000,
        method="percentile", rng=np.random.default_rng(1), vectorized=True,
    ).confidence_interval
    width = reference.high - reference.low
    assert ours.low == pytest.approx(reference.low, abs=0.03 * width)
    assert ours.high == pytest.approx(reference.high, abs=0.03 * width)


# ----------------------------------------------------------------------------- variances
def test_variance_tests_equal_spreads() -> None:
    a = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    b = a + 100.0  # same spread, other location
    bf = brown_forsythe(a, b)
    assert bf.p_value == pytest.approx(1.0) and bf.statistic == pytest.approx(0.0)
    f = f_test_variance(a, b)
    assert f.ratio == pytest.approx(1.0) and f.p_value == pytest.approx(1.0)
    assert f.ratio_low < 1.0 < f.ratio_high


def test_variance_tests_very_different_spreads() -> None:
    rng = np.random.default_rng(5)
    narrow, wide = rng.normal(0.0, 1.0, 12), rng.normal(0.0, 20.0, 12)
    assert brown_forsythe(narrow, wide).p_value < 0.01
    f = f_test_variance(wide, narrow)
    assert f.p_value < 1e-6 and f.ratio > 50 and f.ratio_low > 1.0
    assert brown_forsythe(narrow, wide).stds == pytest.approx((narrow.std(ddof=1), wide.std(ddof=1)))


@pytest.mark.parametrize("groups", [
    ([1.0, 2.0, 6.0], [1.0, 5.0, 9.5]),
    (list(RNG.normal(0, 1, 5)), list(RNG.normal(0, 3, 4)), list(RNG.normal(2, 1, 6))),
])
def test_brown_forsythe_agrees_with_scipy_levene_median(groups: tuple[list[float], ...]) -> None:
    reference = scipy_stats.levene(*groups, center="median")
    ours = brown_forsythe(*groups)
    assert ours.statistic == pytest.approx(reference.statistic, rel=1e-12)
    assert ours.p_value == pytest.approx(reference.pvalue, rel=1e-12)
    # scipy's mean-centred Levene is a different test: the centre matters.
    assert ours.statistic != pytest.approx(scipy_stats.levene(*groups, center="mean").statistic)


def test_f_test_matches_the_f_distribution() -> None:
    a, b = [1.0, 4.0, 2.0, 8.0], [3.0, 3.5, 2.0]
    ratio = np.var(a, ddof=1) / np.var(b, ddof=1)
    expected = 2 * min(scipy_stats.f.cdf(ratio, 3, 2), scipy_stats.f.sf(ratio, 3, 2))
    result = f_test_variance(a, b)
    assert result.ratio == pytest.approx(ratio) and result.p_value == pytest.approx(expected)
    assert (result.df_a, result.df_b) == (3, 2)
    # Symmetric: swapping the groups inverts the ratio and keeps the p-value.
    swapped = f_test_variance(b, a)
    assert swapped.ratio == pytest.approx(1 / ratio) and swapped.p_value == pytest.approx(result.p_value)


def test_f_test_false_positive_rate_is_nominal() -> None:
    rng = np.random.default_rng(2)
    samples = rng.normal(0.0, 1.0, size=(1000, 2, 3))
    rejections = np.mean([f_test_variance(s[0], s[1]).p_value < 0.05 for s in samples])
    assert abs(rejections - 0.05) < 0.022  # Binomial(1000, 0.05): sd 0.007


def test_variance_tests_with_constant_groups() -> None:
    assert math.isnan(brown_forsythe([1.0, 1.0, 1.0], [2.0, 2.0, 2.0]).p_value)
    # Two values per group: both deviations from the median are |a - b| / 2 (up to rounding, which
    # must not turn into an enormous W and a tiny p-value).
    rng = np.random.default_rng(4)
    for _ in range(20):
        pairs = rng.normal(-20.0, 3.0, size=(3, 2))
        assert math.isnan(brown_forsythe(*pairs).p_value)
    assert math.isnan(f_test_variance([1.0, 1.0], [2.0, 2.0]).p_value)
    assert f_test_variance([1.0, 3.0], [2.0, 2.0]).ratio == math.inf


# ----------------------------------------------------------------------------- Holm
def test_holm_adjustment_known_case() -> None:
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert np.isnan(holm([np.nan, 0.2])[0]) and holm([np.nan, 0.2])[1] == pytest.approx(0.2)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call, message", [
    (lambda: mean_ci([]), "values: expected at least 1"),
    (lambda: mean_ci([1.0, float("nan")]), "values: expected finite"),
    (lambda: mean_ci([[1.0, 2.0]]), "values: expected a 1-D"),
    (lambda: mean_ci([1.0, 2.0], confidence=95), "confidence: expected a number in \\(0, 1\\)"),
    (lambda: welch_test([1.0], [1.0, 2.0]), "a: expected at least 2"),
    (lambda: brown_forsythe([1.0, 2.0]), "groups: expected at least 2 groups"),
    (lambda: bootstrap_difference([1.0], [2.0], num_resamples=5), "num_resamples"),
    (lambda: bootstrap_difference([1.0], [2.0], seed=-1), "seed"),
])
def test_bad_input_is_a_clear_error(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_detectable_effect_is_the_power_statement_of_a_null_result():
    """The classic values (Cohen: d = 0.50 with 64 + 64 at 80% power) and a simulation: a true
    difference of that size is found in 80% of experiments with these seeds."""
    from bmaml_robot.stats import detectable_effect

    assert abs(detectable_effect(64, 64) - 0.4991) < 1e-3
    assert abs(detectable_effect(3, 3) - 3.071) < 1e-3
    assert detectable_effect(5, 5) > detectable_effect(10, 10) > detectable_effect(20, 20)
    assert detectable_effect(5, 5, power=0.9) > detectable_effect(5, 5)
    d = detectable_effect(5, 5)
    rng = np.random.default_rng(0)
    found = np.mean([scipy_stats.ttest_ind(rng.normal(d, 1, 5), rng.normal(0, 1, 5)).pvalue < 0.05 for _ in range(4000)])
    assert abs(found - 0.8) < 0.025
    with pytest.raises(ValueError, match=r"n_a: expected an integer >= 2, got 1"):
        detectable_effect(1, 5)
