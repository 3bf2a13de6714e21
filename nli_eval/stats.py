"""Exact, dependency-free statistics: Wilson intervals, binomial and McNemar tests, Holm, trends."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


def wilson(successes: int, n: int, z: float = Z95) -> Interval:
    """Wilson score interval for a binomial proportion (95% by default)."""
    if n <= 0:
        return Interval(0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


def _log_binom_pmf(k: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if k == n else -math.inf
    return (
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
        + k * math.log(p) + (n - k) * math.log1p(-p)
    )


def binomial_test(successes: int, n: int, p: float, alternative: str = "two-sided") -> float:
    """Exact binomial test p-value (two-sided sums outcomes no more likely than the observed one)."""
    if n <= 0:
        return 1.0
    logs = [_log_binom_pmf(k, n, p) for k in range(n + 1)]
    if alternative == "greater":
        return min(1.0, sum(math.exp(v) for v in logs[successes:]))
    if alternative == "less":
        return min(1.0, sum(math.exp(v) for v in logs[: successes + 1]))
    observed = logs[successes]
    tol = 1e-7  # relative tolerance, as scipy uses, so ties of equal likelihood count
    total = sum(math.exp(v) for v in logs if v <= observed + tol)
    return min(1.0, total)


def mcnemar_exact(b: int, c: int) -> float:
    """Exact McNemar test on the discordant pairs b (only A right) and c (only B right)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.exp(_log_binom_pmf(i, n, 0.5)) for i in range(k + 1))
    return min(1.0, 2 * tail)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def t_quantile_975(df: int) -> float:
    """Two-sided 95% Student t quantile (exact table for small df, normal limit beyond)."""
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
             9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042,
             40: 2.021, 60: 2.000, 120: 1.980}
    if df <= 0:
        return math.inf
    if df in table:
        return table[df]
    keys = sorted(table)
    for lo, hi in zip(keys, keys[1:]):
        if lo < df < hi:  # interpolate in 1/df, which is close to linear
            w = (1 / df - 1 / hi) / (1 / lo - 1 / hi)
            return table[hi] + w * (table[lo] - table[hi])
    return Z95


@dataclass(frozen=True)
class Trend:
    slope: float          # accuracy per decade of parameters
    intercept: float
    slope_interval: Interval
    n_points: int

    def predict(self, params: float) -> float:
        return self.intercept + self.slope * math.log10(params)

    def params_for(self, target: float) -> float | None:
        """Parameters the line needs to reach a target accuracy (an extrapolation), or None."""
        if self.slope <= 0:
            return None
        exponent = (target - self.intercept) / self.slope
        if exponent > 300:
            return math.inf
        return 10 ** exponent


def fit_trend(params: Sequence[float], accuracies: Sequence[float]) -> Trend | None:
    """Least-squares line of accuracy on log10(parameters), with a 95% t interval on the slope."""
    pts = [(math.log10(p), a) for p, a in zip(params, accuracies) if p and p > 0]
    n = len(pts)
    if n < 2:
        return None
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    if sxx == 0:
        return None
    sxy = sum((x - mx) * (y - my) for x, y in pts)
    slope = sxy / sxx
    intercept = my - slope * mx
    if n > 2:
        resid = sum((y - (intercept + slope * x)) ** 2 for x, y in pts)
        se = math.sqrt(resid / (n - 2) / sxx)
        half = t_quantile_975(n - 2) * se
    else:
        half = math.inf
    return Trend(slope, intercept, Interval(slope - half, slope + half), n)
