"""The machine-drift reference workload: timed for real (short budget), and the drift it implies."""

import math

from infopt.measure import drift


def test_the_reference_workload_times_both_kernels():
    record = drift.record_reference(None, "start", "cpu", quick=True)
    assert record["definition"]["version"] == drift.REFERENCE_VERSION
    for kernel in drift.REFERENCE_KERNELS:
        timed = record["start"][kernel]
        assert timed["n"] >= 3 * drift.QUICK_TIMING["blocks"]  # how many fit a block depends on the machine
        assert len(timed["block_medians_ms"]) == drift.QUICK_TIMING["blocks"]
        # the speed is the fastest block's median: never slower than the median of all samples
        assert 0 < timed["speed_ms"] == min(timed["block_medians_ms"]) <= timed["median_ms"]
    record = drift.record_reference(record, "end", "cpu", quick=True)
    assert set(drift.reference_times(record)) == set(drift.REFERENCE_KERNELS)
    assert all(len(v) == 2 for v in drift.reference_times(record).values())


def _record(start: float, end: float) -> dict:
    return {"definition": drift.describe_reference(),
            "start": {k: {"median_ms": start} for k in drift.REFERENCE_KERNELS},
            "end": {k: {"median_ms": end} for k in drift.REFERENCE_KERNELS}}


def test_the_drift_factor_and_band_follow_the_reference_times():
    same = drift.drift_between(_record(1.0, 1.0), _record(1.0, 1.0))
    assert same.known and math.isclose(same.factor, 1.0) and same.band == 0
    slower = drift.drift_between(_record(1.0, 1.0), _record(1.2, 1.2))
    assert math.isclose(slower.factor, 1.2) and math.isclose(slower.band, math.log(1.2))
    moving = drift.drift_between(_record(1.0, 1.1), _record(1.0, 1.1))
    # each run's speed at a row's moment is uncertain on its own: the two spreads add in quadrature
    assert math.isclose(moving.factor, 1.0) and math.isclose(moving.spread, math.hypot(math.log(1.1), math.log(1.1)))
    one_moving = drift.drift_between(_record(1.0, 1.0), _record(1.0, 1.1))
    assert math.isclose(one_moving.spread, math.log(1.1)) and math.isclose(one_moving.band, math.log(1.1))
    # a point the new run timed twice 30% apart: the machine moved more than its reference showed
    repeated = drift.drift_between(_record(1.0, 1.0), _record(1.0, 1.0), repeat_spreads=(0.0, math.log(1.3)))
    assert math.isclose(repeated.band, math.log(1.3)) and "timed twice" in repeated.detail


def test_checkpoints_between_notebooks_count_towards_the_spread_and_the_factor():
    """The runner times the reference after each timing notebook: a slow moment in the middle of a run, which
    start and end alone would miss, widens the run's spread; every moment enters the run's mean speed."""
    record = _record(1.0, 1.0)
    assert drift.within_run_spread(record) == 0
    record["checkpoints"] = [{**{k: {"median_ms": 1.5} for k in drift.REFERENCE_KERNELS}, "after": "m/benchmark"},
                             {"error": "RuntimeError: lost", "after": "m/optimize"}]
    assert drift.reference_times(record)["matmul"] == [1.0, 1.5, 1.0]  # in time order; a failed moment is skipped
    assert math.isclose(drift.within_run_spread(record), math.log(1.5))
    between = drift.drift_between(_record(1.0, 1.0), record)
    assert math.isclose(between.factor, 1.5 ** (1 / 3)) and math.isclose(between.spread, math.log(1.5))


def test_a_checkpoint_is_appended_after_the_notebook_it_followed():
    record = drift.record_reference(None, "start", "cpu", quick=True)
    record = drift.record_reference(record, "checkpoint", "cpu", quick=True, after="resnet50/benchmark")
    assert [c["after"] for c in record["checkpoints"]] == ["resnet50/benchmark"]
    assert all(len(v) == 2 for v in drift.reference_times(record).values())


def test_a_run_without_a_reference_is_not_normalised():
    unknown = drift.drift_between(None, _record(1.0, 1.0))
    assert not unknown.known and unknown.factor == 1.0 and "not accounted" in unknown.detail
    errored = {"start": {"error": "RuntimeError: no device"}}
    assert not drift.drift_between(errored, _record(1.0, 1.0)).known
