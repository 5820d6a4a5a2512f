"""The timing core: stopping rules, warm-up, execution context and agreement with torch's Timer."""

import gc
import json
import random
import statistics
import time

import pytest
import torch
from torch.utils import benchmark as torch_benchmark

import infopt
from infopt.errors import InvalidInputError
from infopt.measure.timing import Measurement, TimingConfig, describe_failure, make_timer, measure, thread_count

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_config_rejects_nonsense():
    with pytest.raises(InvalidInputError):
        TimingConfig(min_samples=0)
    with pytest.raises(InvalidInputError):
        TimingConfig(min_time_s=5.0, max_time_s=1.0)
    with pytest.raises(InvalidInputError):
        TimingConfig(num_threads=0)
    assert TimingConfig.quick(max_time_s=2.0).max_time_s == 2.0


def test_thread_count_applies_and_restores():
    before = torch.get_num_threads()
    with thread_count(1) as used:
        assert used == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with thread_count(None) as used:
        assert used == before
    with pytest.raises(InvalidInputError):
        with thread_count(0):
            pass


def test_stable_function_stops_early_with_converged_true():
    config = TimingConfig(min_samples=10, min_time_s=0.05, max_time_s=10.0, target_rel_ci=0.05,
                          min_warmup=2, warmup_window=3, warmup_tol=0.2, max_warmup_s=1.0)
    result = measure(lambda: time.sleep(0.002), "cpu", config)
    assert result.converged is True
    assert result.stop_reason == "ci-target-met"
    assert result.n >= 10
    assert result.wall_s < config.max_time_s  # stopped on the CI rule, not the cap
    assert result.rel_ci_halfwidth <= 0.05
    assert result.median_ms >= 2.0  # sleep(2 ms) never takes less
    assert result.ci_low_ms <= result.median_ms <= result.ci_high_ms


def test_noisy_function_is_flagged_not_converged_within_its_cap():
    rng = random.Random(0)
    config = TimingConfig(min_samples=10, min_time_s=0.05, max_time_s=0.3, target_rel_ci=0.0001,
                          min_warmup=2, warmup_window=3, warmup_tol=0.01, max_warmup_s=0.2)
    result = measure(lambda: time.sleep(rng.choice((0.0002, 0.003))), "cpu", config)
    assert result.converged is False
    assert result.stop_reason == "max-time"
    assert result.wall_s < config.max_warmup_s + config.max_time_s + 1.0
    assert result.n >= 1


def test_warmup_runs_until_call_times_settle():
    """Calls that speed up like 1 + 10/n ms (caches filling): warm-up must outlast the fast-changing start."""
    durations = []

    def settling():
        durations.append(0.001 + 0.010 / (len(durations) + 1))
        time.sleep(durations[-1])

    config = TimingConfig(min_samples=10, min_time_s=0.02, max_time_s=2.0, target_rel_ci=0.05,
                          min_warmup=2, warmup_window=3, warmup_tol=0.1, max_warmup_s=2.0)
    result = measure(settling, "cpu", config)
    assert result.warmup_stable
    assert result.warmup_calls >= 8  # window medians still move > 10% before ~call 10
    assert len(result.samples_ms) == len(durations) - result.warmup_calls
    assert result.median_ms < 1e3 * statistics.median(durations[: result.warmup_calls])


def test_timed_code_runs_in_inference_mode_without_gc_at_the_requested_threads():
    seen = []

    def probe():
        seen.append((torch.is_inference_mode_enabled(), gc.isenabled(), torch.get_num_threads()))

    gc_was_enabled = gc.isenabled()
    result = measure(probe, "cpu", TimingConfig.quick(num_threads=1))
    assert set(seen) == {(True, False, 1)}
    assert result.num_threads == 1
    assert gc.isenabled() == gc_was_enabled


def test_measurement_stats_and_dict_are_consistent_and_json_safe():
    result = measure(lambda: sum(range(200)), "cpu", TimingConfig.quick())
    summary = result.stats()
    assert summary["n"] == len(result.samples_ms) == result.n
    assert summary["p50"] == pytest.approx(result.median_ms)
    assert summary["mean"] == pytest.approx(result.mean_ms)
    assert summary["min"] > 0
    payload = result.to_dict()
    assert payload["samples_ms"] == result.samples_ms and payload["timer"] == "cpu-perf_counter_ns"
    json.dumps(payload, allow_nan=True)
    assert isinstance(result, Measurement) and "median" in repr(result)


def test_describe_failure_separates_oom_from_other_errors():
    assert describe_failure(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))[0] == "oom"
    status, message = describe_failure(ValueError("bad shape\nlong traceback text"))
    assert status == "error" and message == "ValueError: bad shape"


@pytest.mark.slow
def test_median_agrees_with_torch_utils_benchmark_timer():
    """Same model, inputs and thread count: the two medians agree within 15%.

    Rounds alternate between the two timers (swapping which goes first) and the
    median ratio is compared, so drift in background load affects both alike. One thread on both sides:
    the comparison is of the timers, and one thread is the least disturbed by
    other processes sharing the CPU.
    """
    model = infopt.load_model("resnet50", size="tiny")
    inputs = model.prepare_input(8)
    threads = 1

    def forward():
        with torch.inference_mode():
            model.forward(inputs)

    config = TimingConfig(min_samples=20, min_time_s=0.3, max_time_s=1.5, target_rel_ci=0.02, num_threads=threads)
    timer = torch_benchmark.Timer(stmt="forward()", globals={"forward": forward}, num_threads=threads)
    timer.blocked_autorange(min_run_time=0.1)  # prime the process (allocator, oneDNN) for both timers
    ratios = []
    for index in range(3):
        if index % 2:  # swap which timer goes first so slow drift cancels
            theirs = timer.blocked_autorange(min_run_time=0.3).median * 1e3
            ours = measure(forward, "cpu", config).median_ms
        else:
            ours = measure(forward, "cpu", config).median_ms
            theirs = timer.blocked_autorange(min_run_time=0.3).median * 1e3
        ratios.append(ours / theirs)
    assert statistics.median(ratios) == pytest.approx(1.0, rel=0.15), ratios


def test_timer_per_device_kind():
    assert make_timer("cpu").name == "cpu-perf_counter_ns"
    assert make_timer("cuda").name == "cuda-event"
    assert make_timer("mps").name == "mps-sync-perf_counter_ns"


@pytest.mark.cuda
@needs_cuda
def test_cuda_timer_measures_a_matmul_with_events():
    a = torch.randn(1024, 1024, device="cuda")
    result = measure(lambda: a @ a, "cuda", TimingConfig.quick())
    assert result.timer == "cuda-event"
    assert result.n >= 7 and result.median_ms > 0
    assert result.ci_low_ms <= result.median_ms <= result.ci_high_ms


def test_a_warm_up_is_capped_at_half_the_timing_cap_unless_told_otherwise():
    from infopt.measure.timing import MAX_WARMUP_S

    assert TimingConfig().max_warmup_s == MAX_WARMUP_S  # 15 s points: the usual 5 s
    assert TimingConfig(max_time_s=4.0).max_warmup_s == 2.0  # a full-cpu benchmark point
    assert TimingConfig(max_time_s=4.0, max_warmup_s=3.0).max_warmup_s == 3.0  # an explicit limit stands
    with pytest.raises(InvalidInputError):
        TimingConfig(max_warmup_s=-1.0)
