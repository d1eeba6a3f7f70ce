"""An experiment's report from per-variant counts: every number GetExperimentResults answers."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from scoring.stats.intervals import (
    NAN,
    MeanSummary,
    proportion_mean_variance,
    relative_lift,
    srm_p_value,
    welch_mean_interval,
    wilson_interval,
)

SRM_THRESHOLD = 0.001   # a p-value below this flags a broken split (strict: checked often, rarely false)


@dataclasses.dataclass(frozen=True)
class VariantCounts:
    variant_id: str
    weight: float
    users: int               # exposed shoppers
    converters: int          # of them, with at least one purchase after their first exposure
    revenue: float           # sum over users of their revenue after exposure
    revenue_sq: float        # sum over users of the square of their revenue
    clicks: int = 0
    add_to_carts: int = 0


@dataclasses.dataclass(frozen=True)
class VariantReport:
    counts: VariantCounts
    conversion_rate: float
    conversion_ci: tuple[float, float]
    revenue_per_user: float
    revenue_ci: tuple[float, float]
    conversion_lift: tuple[float, float, float]   # estimate, low, high; 0s for the control
    revenue_lift: tuple[float, float, float]


@dataclasses.dataclass(frozen=True)
class Report:
    variants: tuple[VariantReport, ...]
    srm_p_value: float
    srm_detected: bool


def build_report(variants: Sequence[VariantCounts], confidence: float = 0.95,
                 srm_threshold: float = SRM_THRESHOLD) -> Report:
    """The first variant is the control: lifts are against it."""
    if len(variants) < 2:
        raise ValueError("an experiment has at least two variants")
    control = variants[0]
    control_rev = MeanSummary(control.users, control.revenue, control.revenue_sq)
    out = []
    for i, v in enumerate(variants):
        rate = wilson_interval(v.converters, v.users, confidence)
        rev = welch_mean_interval(MeanSummary(v.users, v.revenue, v.revenue_sq), confidence)
        if i == 0:
            conv_lift = rev_lift = (0.0, 0.0, 0.0)
        else:
            c = relative_lift(control.converters / control.users if control.users else NAN,
                              proportion_mean_variance(control.converters, control.users),
                              v.converters / v.users if v.users else NAN,
                              proportion_mean_variance(v.converters, v.users), confidence)
            mine = MeanSummary(v.users, v.revenue, v.revenue_sq)
            r = relative_lift(control_rev.mean, control_rev.mean_variance, mine.mean, mine.mean_variance,
                              confidence)
            conv_lift, rev_lift = (c.estimate, c.low, c.high), (r.estimate, r.low, r.high)
        out.append(VariantReport(v, rate.estimate, (rate.low, rate.high), rev.estimate, (rev.low, rev.high),
                                 conv_lift, rev_lift))
    p = srm_p_value([v.users for v in variants], [v.weight for v in variants])
    return Report(tuple(out), p, p < srm_threshold)
