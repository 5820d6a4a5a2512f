"""Statistics of latency samples: agreement with numpy and a trustworthy median CI."""

import math

import numpy as np
import pytest

from infopt.measure.stats import STAT_KEYS, median_ci, median_ci_ranks, relative_ci_halfwidth, summarize


def test_summarize_matches_numpy_on_known_samples():
    samples = [12.0, 10.0, 11.0, 10.5, 30.0, 10.2, 9.8, 10.1, 10.4, 10.3]
    result = summarize(samples)
    values = np.array(samples)
    assert tuple(result) == STAT_KEYS
    assert result["n"] == 10
    assert result["mean"] == pytest.approx(values.mean())
    assert result["std"] == pytest.approx(values.std(ddof=1))
    assert result["min"] == 9.8 and result["max"] == 30.0
    for key, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99)):
        assert result[key] == pytest.approx(np.percentile(values, q))
    assert result["p50"] == pytest.approx(np.median(values))
    assert result["iqr"] == pytest.approx(np.percentile(values, 75) - np.percentile(values, 25))
    assert result["cv"] == pytest.approx(values.std(ddof=1) / values.mean())
    assert result["ci_low"] <= result["p50"] <= result["ci_high"]


def test_median_ci_uses_the_tabulated_order_statistics():
    # For n = 100 at 95% the distribution-free interval is [x(40), x(61)] (1-based ranks).
    assert median_ci_ranks(100) == (39, 60)
    samples = np.arange(1.0, 101.0)
    assert median_ci(samples) == (40.0, 61.0)
    # n = 6 is the smallest size with a 95% interval: [min, max].
    assert median_ci([5, 1, 3, 2, 6, 4]) == (1.0, 6.0)


def test_median_ci_is_nan_when_too_few_samples():
    low, high = median_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert math.isnan(low) and math.isnan(high)
    assert relative_ci_halfwidth([1.0, 2.0]) == math.inf
    empty = summarize([])
    assert empty["n"] == 0 and math.isnan(empty["mean"])


def test_median_ci_covers_the_true_median_at_least_95_percent():
    rng = np.random.default_rng(0)
    true_median = math.log(2)  # exponential(1): skewed like real latencies
    hits = 0
    trials = 2000
    for _ in range(trials):
        low, high = median_ci(rng.exponential(1.0, 40))
        hits += low <= true_median <= high
    assert hits / trials >= 0.94


def test_ci_shrinks_as_samples_grow():
    rng = np.random.default_rng(1)
    widths = [relative_ci_halfwidth(rng.normal(10.0, 1.0, n)) for n in (20, 200, 2000, 20000)]
    assert all(later < earlier for earlier, later in zip(widths, widths[1:]))
    assert widths[-1] < 0.005


def test_non_finite_samples_are_rejected():
    with pytest.raises(ValueError, match="finite"):
        summarize([1.0, float("nan")])
