"""records.stats against the t-distribution integrated by hand (Simpson's rule on its density), not scipy."""

import math

import numpy as np
import pytest

from mnist_lib.records.stats import at_least, welch


def t_density(t: np.ndarray, df: float) -> np.ndarray:
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return np.exp(log_c - (df + 1) / 2 * np.log1p(t * t / df))


def upper_tail(t: float, df: float) -> float:
    """P(T > t) = 1/2 - integral of the density from 0 to t (the density is symmetric), by Simpson's rule."""
    x = np.linspace(0.0, abs(t), 20_001)
    f = t_density(x, df)
    h = x[1] - x[0]
    inner = h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())
    return 0.5 - inner if t >= 0 else 0.5 + inner


def quantile_975(df: float) -> float:
    lo, hi = 0.0, 50.0
    for _ in range(80):  # bisection on the upper tail
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if upper_tail(mid, df) > 0.025 else (lo, mid)
    return (lo + hi) / 2


def test_welch_matches_the_hand_computation():
    a = [0.9942, 0.9941, 0.9943, 0.9936]  # unequal sizes and spreads
    b = [0.9841, 0.9857, 0.9857]
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
    diff = np.mean(a) - np.mean(b)
    t = diff / math.sqrt(va + vb)
    result = welch(a, b)
    assert result.diff == pytest.approx(diff, abs=1e-12)
    assert result.df == pytest.approx(df, rel=1e-9)
    assert result.p == pytest.approx(2 * upper_tail(t, df), rel=1e-6)
    half = quantile_975(df) * math.sqrt(va + vb)
    assert result.ci95 == pytest.approx((diff - half, diff + half), rel=1e-6)
    assert welch(b, a).p == pytest.approx(result.p) and welch(b, a).diff == pytest.approx(-diff)


def test_welch_on_overlapping_samples_is_not_significant():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.98, 0.001, 10), rng.normal(0.98, 0.001, 10)
    r = welch(a, b)
    t = r.diff / math.sqrt(np.var(a, ddof=1) / 10 + np.var(b, ddof=1) / 10)
    assert r.p == pytest.approx(2 * upper_tail(abs(t), r.df), rel=1e-6)
    assert r.ci95[0] < 0 < r.ci95[1] or r.p < 0.05  # the interval holds 0 exactly when p >= 0.05


def test_at_least_is_the_one_sided_upper_tail():
    acc = [0.9812, 0.9805, 0.9821, 0.9809, 0.9816, 0.9811, 0.9803, 0.9819, 0.9814, 0.9808]
    n = len(acc)
    t = (np.mean(acc) - 0.98) / (np.std(acc, ddof=1) / math.sqrt(n))
    assert at_least(acc, 0.98) == pytest.approx(upper_tail(t, n - 1), rel=1e-6)
    assert at_least(acc, 0.98) < 0.01  # clearly above 98 %
    assert at_least(acc, 0.9812) > 0.2  # the target at the mean: no evidence either way
    assert at_least(acc, 0.99) > 0.99  # clearly below


def test_undefined_tests_give_nan():
    assert math.isnan(welch([0.98], [0.97, 0.96]).p)
    assert math.isnan(welch([0.98, 0.98], [0.97, 0.97]).p)  # no spread on either side
    assert welch([0.98, 0.98], [0.97, 0.97]).diff == pytest.approx(0.01)
    assert math.isnan(at_least([0.99], 0.98)) and math.isnan(at_least([0.99, 0.99], 0.98))
