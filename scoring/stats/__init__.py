"""Experiment statistics: plain functions on NumPy numbers, no service, no SciPy at run time.

`distributions.py` holds the few distribution functions the tests need (normal, Student t,
chi-square) from the regularized incomplete beta and gamma functions; `intervals.py` holds the
intervals an experiment report shows (Wilson for rates, Welch for means, the delta method for
relative lifts) and the sample-ratio-mismatch test.
"""

from scoring.stats.distributions import chi2_sf, normal_ppf, t_cdf, t_ppf
from scoring.stats.intervals import (
    Interval,
    MeanSummary,
    relative_lift,
    srm_p_value,
    welch_difference,
    welch_mean_interval,
    wilson_interval,
)

__all__ = ["Interval", "MeanSummary", "chi2_sf", "normal_ppf", "relative_lift", "srm_p_value", "t_cdf", "t_ppf",
           "welch_difference", "welch_mean_interval", "wilson_interval"]
