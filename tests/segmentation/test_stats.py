"""scoring/stats against SciPy (the oracle) and the coverage a 95 % interval promises."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from scoring.stats.distributions import betainc, chi2_sf, gammaincc, normal_ppf, t_cdf, t_ppf
from scoring.stats.intervals import (
    MeanSummary,
    proportion_mean_variance,
    relative_lift,
    srm_p_value,
    welch_difference,
    welch_mean_interval,
    wilson_interval,
)
from scoring.stats.report import VariantCounts, build_report


def summary(x: np.ndarray) -> MeanSummary:
    return MeanSummary(int(x.size), float(x.sum()), float((x * x).sum()))


@pytest.mark.parametrize("p", [1e-12, 1e-4, 0.01, 0.025, 0.3, 0.5, 0.8, 0.975, 0.999999])
def test_normal_ppf(p: float) -> None:
    assert normal_ppf(p) == pytest.approx(stats.norm.ppf(p), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("df", [1, 2.5, 7, 57.3, 1000, 1e6])
def test_t_distribution(df: float) -> None:
    # lgamma(a + 1/2) - lgamma(a) cancels ~log10(a) digits: 1e-9 relative at a million degrees of freedom
    rel = 1e-10 if df < 1e5 else 1e-8
    for t in (-30, -4, -1, -0.2, 0, 0.7, 2, 12):
        assert t_cdf(t, df) == pytest.approx(stats.t.cdf(t, df), rel=rel, abs=1e-14)
    for p in (0.0005, 0.025, 0.3, 0.5, 0.975):
        assert t_ppf(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9, abs=1e-12)


def test_incomplete_functions() -> None:
    for a, b, x in [(0.5, 0.5, 0.1), (3, 7, 0.4), (40, 0.5, 0.99), (500, 0.5, 0.999)]:
        assert betainc(a, b, x) == pytest.approx(special.betainc(a, b, x), rel=1e-10, abs=1e-15)
    for a, x in [(0.5, 0.01), (1, 3), (2.5, 2.0), (10, 30), (200, 180)]:
        assert gammaincc(a, x) == pytest.approx(special.gammaincc(a, x), rel=1e-10, abs=1e-300)
    for df in (1, 2, 3, 9, 40):
        for x in (0.001, 1.0, 5.0, 30.0, 200.0):
            assert chi2_sf(x, df) == pytest.approx(stats.chi2.sf(x, df), rel=1e-9, abs=1e-300)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (1, 10), (7, 50), (50, 50), (312, 10_000), (9_990, 10_000)])
def test_wilson_matches_scipy(k: int, n: int) -> None:
    ours = wilson_interval(k, n)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert (ours.low, ours.high) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert ours.estimate == k / n


def test_wilson_published_example() -> None:
    """Newcombe (1998), Statistics in Medicine 17:857, Table I: 81/263 -> 0.2553 to 0.3662."""
    ci = wilson_interval(81, 263)
    assert (round(ci.low, 4), round(ci.high, 4)) == (0.2553, 0.3662)


def test_mean_and_welch_match_scipy() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        a = rng.exponential(40, rng.integers(5, 400)) * (rng.random() < 0.5 or rng.random(1))
        b = rng.exponential(45, rng.integers(5, 400)) * (rng.random(1) < 0.3)
        ours = welch_difference(summary(a), summary(b))
        ref = stats.ttest_ind(b, a, equal_var=False)
        ci = ref.confidence_interval(0.95)
        assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-8)
        assert ours.df == pytest.approx(ref.df, rel=1e-10)
        assert (ours.interval.low, ours.interval.high) == pytest.approx((ci.low, ci.high), rel=1e-8)
        one = welch_mean_interval(summary(a))
        lo, hi = stats.t.interval(0.95, a.size - 1, loc=a.mean(), scale=stats.sem(a))
        assert (one.low, one.high) == pytest.approx((lo, hi), rel=1e-9)


def test_srm_matches_scipy() -> None:
    for users, weights in [([5050, 4950], [1, 1]), ([1000, 3100, 5900], [1, 3, 6]), ([500, 430], [1, 1])]:
        expected = np.array(weights) / sum(weights) * sum(users)
        assert srm_p_value(users, weights) == pytest.approx(stats.chisquare(users, expected).pvalue, rel=1e-9)
    assert srm_p_value([0, 0], [1, 1]) == 1.0


def test_delta_method_lift_covers_95_percent() -> None:
    """Over 2,000 simulated experiments the delta-method interval of B/A - 1 holds the true lift
    about 95 % of the time (binomial 99.9 % band around 0.95 for 2,000 trials: 0.937..0.963)."""
    rng = np.random.default_rng(11)
    n, pa, lift = 4000, 0.05, 0.10
    pb = pa * (1 + lift)
    hits = 0
    for _ in range(2000):
        ka, kb = rng.binomial(n, pa), rng.binomial(n, pb)
        ci = relative_lift(ka / n, proportion_mean_variance(ka, n), kb / n, proportion_mean_variance(kb, n))
        hits += ci.low <= lift <= ci.high
    assert 0.937 <= hits / 2000 <= 0.963


def test_report() -> None:
    report = build_report([VariantCounts("a", 1, 1000, 50, 2500.0, 2500.0 * 90), VariantCounts("b", 1, 1010, 70,
                                                                                                 3600.0, 3600.0 * 95)])
    a, b = report.variants
    assert a.conversion_lift == (0.0, 0.0, 0.0)
    assert b.conversion_lift[0] == pytest.approx((70 / 1010) / (50 / 1000) - 1)
    assert b.conversion_lift[1] < b.conversion_lift[0] < b.conversion_lift[2]
    assert a.revenue_per_user == 2.5 and not report.srm_detected
    broken = build_report([VariantCounts("a", 1, 1000, 0, 0, 0), VariantCounts("b", 1, 800, 0, 0, 0)])
    assert broken.srm_detected and broken.srm_p_value < 1e-5
    assert math.isnan(broken.variants[1].conversion_lift[0])  # a control without converters: no lift


def test_simulator_aa_and_power() -> None:
    """A small seeded run of the simulator: an A/A test rejects about 5 % of the time and a large
    true lift is found about as often as the same test finds it on plain binomial draws."""
    from scoring.stats.simulate import Scenario, lift_test_power, simulate

    aa = simulate(Scenario("A/A", users=2000, runs=200, lift=0.0), seed=1)
    assert 0.01 <= aa.conversion_significant <= 0.10
    assert abs(aa.mean_users_b - 1000) < 15
    ab = simulate(Scenario("A/B", users=2000, runs=100, base_rate=0.1, lift=0.6), seed=2)
    assert abs(ab.conversion_significant - lift_test_power(2000, 0.1, 0.6)) < 0.12
