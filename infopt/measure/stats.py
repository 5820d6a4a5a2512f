"""Summary statistics of raw latency samples, with a confidence interval of the median.

The median is the lab's headline latency because timing noise is one-sided
(interrupts, frequency changes and other processes only ever add time), so
the mean is pulled up by a few slow calls while the median is not.

Confidence interval of the median: the distribution-free order-statistic
(binomial) interval. For ``n`` sorted samples ``x(1) <= ... <= x(n)`` the
interval ``[x(l), x(n-l+1)]`` contains the true median with probability
``1 - 2 * P(Binom(n, 1/2) <= l - 1)``; ``l`` is the largest rank that keeps this
at or above the requested confidence, so coverage is never below it. It
assumes independent samples; it needs at least 6 samples at 95% (below that
no pair of order statistics reaches 95%, and the bounds are NaN).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

#: Keys of :func:`summarize`, in display order.
STAT_KEYS = ("n", "mean", "std", "min", "p50", "p90", "p95", "p99", "max", "iqr", "cv", "ci_low", "ci_high")


def _as_array(samples: Sequence[float]) -> np.ndarray:
    values = np.asarray(samples, dtype=float).ravel()
    if values.size and not np.all(np.isfinite(values)):
        raise ValueError("Samples must be finite numbers (found NaN or infinity).")
    return values


def median_ci_ranks(n: int, confidence: float = 0.95) -> tuple[int, int] | None:
    """0-based ranks ``(lo, hi)`` of the order-statistic CI of the median, or None if ``n`` is too small."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence!r}.")
    if n < 1:
        return None
    alpha_half = (1.0 - confidence) / 2.0
    # log C(n, k) for k = 0..n by the running product C(n, k) = C(n, k-1) * (n-k+1)/k.
    k = np.arange(1, n + 1, dtype=float)
    log_comb = np.concatenate([[0.0], np.cumsum(np.log((n - k + 1) / k))])
    cdf = np.cumsum(np.exp(log_comb + n * math.log(0.5)))
    # Largest l (1-based) with P(B <= l-1) <= alpha/2; cdf[l-1] = P(B <= l-1).
    allowed = np.nonzero(cdf <= alpha_half * (1 + 1e-12))[0]
    if allowed.size == 0:
        return None
    lower_rank = int(allowed[-1]) + 1          # 1-based l
    lower_rank = min(lower_rank, (n + 1) // 2)
    return lower_rank - 1, n - lower_rank       # 0-based indices of x(l) and x(n-l+1)


def median_ci(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free CI of the median (see module docstring); ``(nan, nan)`` if too few samples."""
    values = np.sort(_as_array(samples))
    ranks = median_ci_ranks(values.size, confidence)
    if ranks is None:
        return math.nan, math.nan
    return float(values[ranks[0]]), float(values[ranks[1]])


def relative_ci_halfwidth(samples: Sequence[float], confidence: float = 0.95) -> float:
    """Half the width of the median's CI divided by the median (``inf`` if undefined)."""
    values = _as_array(samples)
    low, high = median_ci(values, confidence)
    median = float(np.median(values)) if values.size else math.nan
    if math.isnan(low) or not median > 0:
        return math.inf
    return (high - low) / 2.0 / median


def summarize(samples: Sequence[float], confidence: float = 0.95) -> dict:
    """n, mean, std (sample, ddof=1), min, percentiles (numpy linear), max, IQR, CV and median CI.

    Values are in the samples' unit; ``cv`` (std / mean) is unitless. Undefined
    values (e.g. std of one sample) are NaN.
    """
    values = _as_array(samples)
    n = int(values.size)
    if n == 0:
        return {key: (0 if key == "n" else math.nan) for key in STAT_KEYS}
    p25, p50, p75, p90, p95, p99 = np.percentile(values, [25, 50, 75, 90, 95, 99])
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if n > 1 else math.nan
    low, high = median_ci(values, confidence)
    return {
        "n": n,
        "mean": mean,
        "std": std,
        "min": float(values.min()),
        "p50": float(p50),
        "p90": float(p90),
        "p95": float(p95),
        "p99": float(p99),
        "max": float(values.max()),
        "iqr": float(p75 - p25),
        "cv": std / mean if mean > 0 and not math.isnan(std) else math.nan,
        "ci_low": low,
        "ci_high": high,
    }


__all__ = ["STAT_KEYS", "median_ci", "median_ci_ranks", "relative_ci_halfwidth", "summarize"]
