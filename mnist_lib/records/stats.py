"""The statistics behind every claim: Welch's t-test between two configs, a one-sided t-test against a target.

    welch([0.9841, 0.9857, 0.9857], [0.9942, 0.9941, 0.9943])   # Welch(diff=0.0090..., p=..., ci95=(..., ...), df=...)
    at_least([0.9812, 0.9805, ...], 0.98)                        # p of "mean accuracy >= 98 %" (one-sided)

Both come from scipy.stats; tests/test_stats.py checks them against the
t-distribution integrated by hand. A p-value is nan where the test is undefined
(fewer than two values on a side, or no spread at all).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats


class Welch(NamedTuple):
    """Welch's two-sample t-test of mean(a) - mean(b), with its 95 % confidence interval."""

    diff: float  # mean(a) - mean(b)
    p: float  # two-sided
    ci95: tuple[float, float]  # of the difference, on Welch's degrees of freedom
    df: float  # Welch-Satterthwaite degrees of freedom


def welch(a: Sequence[float], b: Sequence[float]) -> Welch:
    """Welch's t-test (unequal variances) of a against b: the difference of means, two-sided p and 95 % CI."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    nan = Welch(diff, math.nan, (math.nan, math.nan), math.nan)
    if len(a) < 2 or len(b) < 2 or (a.var() == 0 and b.var() == 0):
        return nan
    result = stats.ttest_ind(a, b, equal_var=False)
    low, high = result.confidence_interval(0.95)
    return Welch(diff, float(result.pvalue), (float(low), float(high)), float(result.df))


def at_least(values: Sequence[float], target: float) -> float:
    """One-sided p-value that the mean of `values` is above `target` (H0: mean <= target); small means the target is met."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2 or x.var() == 0:
        return math.nan
    return float(stats.ttest_1samp(x, target, alternative="greater").pvalue)
