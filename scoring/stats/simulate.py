"""A/A and A/B simulator: many synthetic experiments through the real assignment and report.

Each run draws `users` shopper ids, splits them with the GrowthBook hash under a per-run seed
(`scoring.experiments`), lets each shopper convert with probability `base_rate` (times
1 + `lift` in variant B) and spend a log-normal basket when converting, then builds the report
GetExperimentResults answers (`scoring.stats.report`). Over many runs, the share of runs whose
95 % lift interval excludes 0 is the false-positive rate of an A/A test (should be ~5 %) and the
power of an A/B test (compared here with the normal-approximation power for the same design).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from scoring.experiments.assign import HASH_BUCKETS, SeedTable, bucket_ranges, choose_variation, hash_buckets
from scoring.stats.distributions import normal_cdf, normal_ppf
from scoring.stats.report import Report, VariantCounts, build_report


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    users: int = 10_000           # shoppers per run (both variants)
    base_rate: float = 0.05       # control conversion
    lift: float = 0.0             # B converts (1 + lift) times as often
    basket_mean: float = 60.0     # mean basket of a converter (log-normal, sigma 0.8)
    runs: int = 500


@dataclasses.dataclass(frozen=True)
class Outcome:
    scenario: Scenario
    conversion_significant: float   # share of runs whose conversion-lift CI excludes 0
    revenue_significant: float      # same for revenue per shopper
    srm_flagged: float              # share of runs with srm_detected (expected ~0.001)
    mean_users_b: float
    same_test_power: float          # lift_test_power: the same test on plain binomial draws
    difference_power: float         # difference_power: the textbook z test of pb - pa


    def row(self) -> list[str]:
        s = self.scenario
        return [s.name, f"{s.runs}", f"{s.users:,}", f"{s.base_rate:.1%}", f"{s.lift:+.0%}",
                f"{self.conversion_significant:.1%}", f"{self.same_test_power:.1%}", f"{self.difference_power:.1%}",
                f"{self.revenue_significant:.1%}", f"{self.srm_flagged:.1%}"]


HEADER = ["scenario", "runs", "users", "base rate", "true lift", "conversion significant",
          "same test, binomial draws", "z test of the difference", "revenue significant", "SRM flagged"]


def difference_power(users: int, base_rate: float, lift: float, confidence: float = 0.95) -> float:
    """Textbook normal-approximation power of the two-sided z test of pb - pa, half the users each."""
    n = users / 2
    pa, pb = base_rate, base_rate * (1 + lift)
    se = math.sqrt(pa * (1 - pa) / n + pb * (1 - pb) / n)
    d = abs(pb - pa) / se
    z = normal_ppf(0.5 + confidence / 2)
    return normal_cdf(d - z) + normal_cdf(-d - z)


def lift_test_power(users: int, base_rate: float, lift: float, draws: int = 20_000, seed: int = 99,
                    confidence: float = 0.95) -> float:
    """Power of the very test the report makes (the delta-method interval of B / A - 1 excludes 0)
    on plain binomial draws with exactly half the users in each variant: what assignment and the
    service's counting should neither lose nor add to. For a positive lift this test is a little
    less powerful than the difference test, as its standard error grows with pb / pa."""
    rng = np.random.default_rng(seed)
    n = users // 2
    ka = rng.binomial(n, base_rate, draws).astype(np.float64)
    kb = rng.binomial(n, base_rate * (1 + lift), draws).astype(np.float64)
    pa, pb = ka / n, kb / n
    va, vb = pa * (1 - pa) / n, pb * (1 - pb) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = pb / pa
        se = np.sqrt(vb / pa ** 2 + va * pb ** 2 / pa ** 4)
        z = normal_ppf(0.5 + confidence / 2)
        significant = np.abs(ratio - 1.0) > z * se
    return float(np.mean(significant & (pa > 0)))


def one_run(scenario: Scenario, run: int, rng: np.random.Generator) -> Report:
    seeds = SeedTable([f"sim-{scenario.name}-{run}"])
    ranges = bucket_ranges([1, 1])
    variant = np.fromiter((choose_variation(int(hash_buckets(seeds, f"shopper-{run}-{i}")[0]) / HASH_BUCKETS, ranges)
                           for i in range(scenario.users)), np.int64, scenario.users)
    rate = np.where(variant == 1, scenario.base_rate * (1 + scenario.lift), scenario.base_rate)
    converted = rng.random(scenario.users) < rate
    sigma = 0.8
    mu = math.log(scenario.basket_mean) - sigma * sigma / 2
    revenue = np.where(converted, rng.lognormal(mu, sigma, scenario.users), 0.0)
    counts = []
    for v, name in enumerate(("a", "b")):
        mine = variant == v
        r = revenue[mine]
        counts.append(VariantCounts(name, 1.0, int(mine.sum()), int(converted[mine].sum()), float(r.sum()),
                                    float((r * r).sum())))
    return build_report(counts)


def simulate(scenario: Scenario, seed: int = 0, progress: Callable[[int], object] | None = None) -> Outcome:
    rng = np.random.default_rng(seed)
    conv = rev = srm = 0
    users_b = 0
    for run in range(scenario.runs):
        report = one_run(scenario, run, rng)
        b = report.variants[1]
        conv += not (b.conversion_lift[1] <= 0.0 <= b.conversion_lift[2])
        rev += not (b.revenue_lift[1] <= 0.0 <= b.revenue_lift[2])
        srm += report.srm_detected
        users_b += b.counts.users
        if progress is not None:
            progress(1)
    n = scenario.runs
    return Outcome(scenario, conv / n, rev / n, srm / n, users_b / n,
                   lift_test_power(scenario.users, scenario.base_rate, scenario.lift),
                   difference_power(scenario.users, scenario.base_rate, scenario.lift))


DEFAULT_SCENARIOS = (
    Scenario("A/A", lift=0.0),
    Scenario("A/B +10%", lift=0.10),
    Scenario("A/B +20%", lift=0.20),
    Scenario("A/B +30%", lift=0.30),
)
