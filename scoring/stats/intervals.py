"""Intervals and tests of an experiment report.

* Rates (conversion): the Wilson score interval, which keeps its coverage near 95 % for small
  counts and rates near 0 where the normal (Wald) interval collapses (Brown, Cai & DasGupta 2001).
* Means (revenue per shopper, zeros included): the t interval of one mean, and Welch's
  unequal-variance t for the difference of two means (Welch-Satterthwaite degrees of freedom).
* Relative lift (B / A - 1) of either: the delta method, Var(B/A) ~ (B/A)^2 (Var B / B^2 + Var A / A^2)
  with the variances of the two means; a normal interval.
* Sample-ratio mismatch: Pearson's chi-square goodness of fit of the users per variant against
  the configured weights.

Undefined values (no data, a zero control) are NaN, never a made-up number.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from scoring.stats.distributions import chi2_sf, normal_ppf, t_cdf, t_ppf

NAN = float("nan")


@dataclasses.dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float


@dataclasses.dataclass(frozen=True)
class MeanSummary:
    """A sample as its sufficient statistics: count, sum and sum of squares."""

    n: int
    total: float
    total_sq: float

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else NAN

    @property
    def variance(self) -> float:
        """Sample variance (n - 1 in the denominator); NaN below two values."""
        if self.n < 2:
            return NAN
        return max(0.0, (self.total_sq - self.total * self.total / self.n) / (self.n - 1))

    @property
    def mean_variance(self) -> float:
        """Variance of the mean, s^2 / n."""
        return self.variance / self.n if self.n >= 2 else NAN


def _z(confidence: float) -> float:
    return normal_ppf(0.5 + confidence / 2.0)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    if n <= 0:
        return Interval(NAN, 0.0, 1.0)
    if not 0 <= successes <= n:
        raise ValueError(f"successes {successes} must be within 0..{n}")
    z = _z(confidence)
    p = successes / n
    z2n = z * z / n
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * math.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n))
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def welch_mean_interval(sample: MeanSummary, confidence: float = 0.95) -> Interval:
    """t interval of one mean (n - 1 degrees of freedom)."""
    mean = sample.mean
    if sample.n < 2:
        return Interval(mean, NAN, NAN)
    half = t_ppf(0.5 + confidence / 2.0, sample.n - 1) * math.sqrt(sample.mean_variance)
    return Interval(mean, mean - half, mean + half)


@dataclasses.dataclass(frozen=True)
class Difference:
    interval: Interval      # of mean_b - mean_a
    df: float
    p_value: float          # two-sided


def welch_difference(a: MeanSummary, b: MeanSummary, confidence: float = 0.95) -> Difference:
    """Welch's t for mean_b - mean_a: its interval, degrees of freedom and two-sided p-value."""
    diff = b.mean - a.mean
    va, vb = a.mean_variance, b.mean_variance
    if math.isnan(va) or math.isnan(vb):
        return Difference(Interval(diff, NAN, NAN), NAN, NAN)
    se2 = va + vb
    if se2 == 0.0:
        p = 1.0 if diff == 0 else 0.0
        return Difference(Interval(diff, diff, diff), math.inf, p)
    df = se2 * se2 / (va * va / (a.n - 1) + vb * vb / (b.n - 1))
    se = math.sqrt(se2)
    half = t_ppf(0.5 + confidence / 2.0, df) * se
    p = 2.0 * t_cdf(-abs(diff) / se, df)
    return Difference(Interval(diff, diff - half, diff + half), df, p)


def relative_lift(mean_a: float, var_mean_a: float, mean_b: float, var_mean_b: float,
                  confidence: float = 0.95) -> Interval:
    """B / A - 1 with a delta-method normal interval; NaN where A is 0 or a variance unknown."""
    if not mean_a or any(math.isnan(v) for v in (mean_a, var_mean_a, mean_b, var_mean_b)):
        return Interval(NAN, NAN, NAN)
    ratio = mean_b / mean_a
    var = var_mean_b / (mean_a * mean_a) + var_mean_a * mean_b * mean_b / mean_a ** 4
    half = _z(confidence) * math.sqrt(max(var, 0.0))
    return Interval(ratio - 1.0, ratio - 1.0 - half, ratio - 1.0 + half)


def proportion_mean_variance(successes: int, n: int) -> float:
    """Variance of an observed rate, p (1 - p) / n (the delta method's input for conversion)."""
    if n <= 0:
        return NAN
    p = successes / n
    return p * (1.0 - p) / n


def srm_p_value(users: Sequence[int], weights: Sequence[float]) -> float:
    """Chi-square goodness-of-fit p-value of users per variant against the weights; 1.0 without data."""
    if len(users) != len(weights) or len(users) < 2:
        raise ValueError("one user count per weight, at least two")
    total = float(sum(users))
    wsum = float(sum(weights))
    if total <= 0 or wsum <= 0:
        return 1.0
    stat = 0.0
    for observed, w in zip(users, weights, strict=True):
        expected = total * w / wsum
        stat += (observed - expected) ** 2 / expected
    return chi2_sf(stat, len(users) - 1)
