"""Batch sweeps, memory passes, failure handling and cold start on tiny CPU models."""

import math
import threading

import numpy as np
import pytest
import torch

import infopt
from infopt.measure import benchmark
from infopt.measure.benchmark import BENCHMARK_COLUMNS, benchmark_point, cold_start, run_batch_sweep
from infopt.errors import InvalidInputError
from infopt.measure import timing as timing_module
from infopt.measure.memtrack import MIB, RssSampler, measure_peak_memory
from infopt.measure.timing import TimingConfig, visit_limits

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# One thread: the comparison of interest is the harness, and one thread is the
# least disturbed by other processes sharing a small CI machine.
QUICK = TimingConfig.quick(max_time_s=0.3, num_threads=1)
CONTRACT_COLUMNS = (
    "model", "device", "variant", "batch_size", "seq_len", "status", "error", "n_samples", "converged",
    "latency_mean_ms", "latency_std_ms", "latency_min_ms", "latency_p50_ms", "latency_p90_ms", "latency_p95_ms",
    "latency_p99_ms", "latency_max_ms", "latency_ci_low_ms", "latency_ci_high_ms", "throughput_items_per_s",
    "tokens_per_s", "peak_memory_mb", "activation_memory_mb", "memory_method", "warmup_calls", "wall_time_s",
    "samples_ms",
)


@pytest.fixture(scope="module")
def resnet():
    return infopt.load_model("resnet50", size="tiny")


@pytest.fixture(scope="module")
def gpt2():
    return infopt.load_model("gpt2", size="tiny")


def test_vision_sweep_rows_are_complete_and_consistent(resnet):
    df = run_batch_sweep(resnet, [2, 1], timing=QUICK)
    assert set(CONTRACT_COLUMNS) <= set(df.columns) and list(df.columns) == list(BENCHMARK_COLUMNS)
    assert list(df["batch_size"]) == [1, 2]
    assert (df["status"] == "ok").all() and df["error"].isna().all()
    assert (df[["model", "device", "variant"]].values == ["resnet50", "cpu", "eager-fp32"]).all()
    assert df["interference"].isin([True, False]).all()  # measured, whatever the machine's state
    assert df["interference_detail"].str.contains("CPU cores").all()
    for row in df.itertuples():
        samples = np.array(row.samples_ms)
        assert len(samples) == row.n_samples >= 1
        assert row.latency_mean_ms == pytest.approx(samples.mean())
        assert row.latency_p50_ms == pytest.approx(np.median(samples))
        assert row.latency_min_ms <= row.latency_p50_ms <= row.latency_p99_ms <= row.latency_max_ms
        if not math.isnan(row.latency_ci_low_ms):
            assert row.latency_ci_low_ms <= row.latency_p50_ms <= row.latency_ci_high_ms
        assert row.throughput_items_per_s == pytest.approx(row.batch_size * 1000 / row.latency_mean_ms)
        assert math.isnan(row.tokens_per_s) and math.isnan(row.seq_len)
        assert row.peak_memory_mb > row.activation_memory_mb >= 0
        assert row.memory_method == "cpu-rss-sampled"
        assert row.warmup_calls >= QUICK.min_warmup and row.wall_time_s > 0
        assert row.num_threads == 1


def test_text_sweep_reports_tokens_per_second(gpt2):
    df = run_batch_sweep(gpt2, [1, 2], seq_len=16, timing=QUICK, measure_memory=False)
    assert (df["status"] == "ok").all() and (df["seq_len"] == 16).all()
    expected = df["batch_size"] * 16 * 1000 / df["latency_mean_ms"]
    assert np.allclose(df["tokens_per_s"], expected)
    assert df["peak_memory_mb"].isna().all()  # memory pass switched off, not faked


def test_default_seq_len_is_recorded(gpt2):
    row = benchmark_point(gpt2, 1, timing=QUICK, measure_memory=False)
    assert row["seq_len"] == 128 and row["status"] == "ok"


def test_thread_count_is_applied_to_both_passes_and_recorded(resnet, monkeypatch):
    seen = []
    real_forward = resnet.forward
    monkeypatch.setattr(resnet, "forward", lambda inputs: (seen.append(torch.get_num_threads()), real_forward(inputs)))
    before = torch.get_num_threads()
    df = run_batch_sweep(resnet, [1], timing=QUICK)
    assert df["num_threads"].tolist() == [1]
    assert set(seen) == {1}  # timing and memory passes alike
    assert torch.get_num_threads() == before


def test_short_points_are_timed_in_two_visits_keeping_every_sample_in_order(resnet, monkeypatch):
    df = run_batch_sweep(resnet, [1, 2], timing=QUICK, measure_memory=False)
    for _, row in df.iterrows():
        counts, medians = list(row["visit_samples"]), list(row["visit_medians_ms"])
        assert len(counts) == benchmark.VISITS == 2 and row["n_samples"] == sum(counts) == len(row["samples_ms"])
        samples = row["samples_ms"]
        assert medians == [float(np.median(samples[:counts[0]])), float(np.median(samples[counts[0]:]))]
        assert row["latency_p50_ms"] == float(np.median(row["samples_ms"]))  # the statistics are the whole row's
    calls = []
    real_measure = benchmark.measure
    monkeypatch.setattr(benchmark, "measure", lambda *args: (calls.append(1), real_measure(*args))[1])
    monkeypatch.setattr(timing_module, "SINGLE_VISIT_CALL_S", 0.0)  # every call is "long": one visit each
    single = run_batch_sweep(resnet, [1, 2], timing=QUICK, measure_memory=False)
    assert [len(v) for v in single["visit_samples"]] == [1, 1] and len(calls) == 2


def test_a_short_point_times_its_share_of_the_budget_per_visit_and_a_long_one_all_of_it():
    config = TimingConfig(min_samples=30, min_time_s=1.0, max_time_s=4.0, visits=2)
    share = visit_limits(config, 0.01)
    assert (share.min_samples, share.min_time_s, share.max_time_s) == (15, 0.5, 2.0)
    assert visit_limits(config, timing_module.SINGLE_VISIT_CALL_S) is config  # a long call: one visit, all of it
    assert visit_limits(TimingConfig(visits=1), 0.01).max_time_s == TimingConfig().max_time_s
    with pytest.raises(InvalidInputError, match="visits must be an integer"):
        TimingConfig(visits=0)


def test_simulated_oom_is_recorded_and_the_sweep_goes_on(resnet, monkeypatch):
    real_forward = resnet.forward

    def forward(inputs):
        if inputs["pixel_values"].shape[0] == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_forward(inputs)

    monkeypatch.setattr(resnet, "forward", forward)
    freed = []
    real_release = benchmark.release_memory
    monkeypatch.setattr(benchmark, "release_memory",
                        lambda device, thorough=False: (freed.append(thorough), real_release(device, thorough)))
    df = run_batch_sweep(resnet, [1, 2, 4, 8], timing=QUICK, measure_memory=False)
    assert df["status"].tolist() == ["ok", "oom", "skipped", "skipped"]
    oom = df.set_index("batch_size").loc[2]
    assert "out of memory" in oom["error"] and oom["n_samples"] == 0
    assert "batch size 2" in df.set_index("batch_size").loc[4, "error"]
    assert freed == [False, True, False]  # after each point that ran, thoroughly after the OOM, after bs=1's second visit
    assert df.loc[df["status"] != "ok", "latency_mean_ms"].isna().all()


def test_other_errors_are_recorded_and_larger_sizes_still_run(resnet, monkeypatch):
    real_forward = resnet.forward

    def forward(inputs):
        if inputs["pixel_values"].shape[0] == 2:
            raise RuntimeError("kernel exploded\nsecond line of detail")
        return real_forward(inputs)

    monkeypatch.setattr(resnet, "forward", forward)
    df = run_batch_sweep(resnet, [1, 2, 4], timing=QUICK, measure_memory=False)
    assert df["status"].tolist() == ["ok", "error", "ok"]
    assert df.loc[1, "error"] == "RuntimeError: kernel exploded"


def test_bad_inputs_raise_before_anything_runs(gpt2, resnet):
    with pytest.raises(InvalidInputError):
        run_batch_sweep(resnet, [1, 0], timing=QUICK)
    with pytest.raises(InvalidInputError):
        run_batch_sweep(resnet, [], timing=QUICK)
    with pytest.raises(InvalidInputError, match="1024"):
        run_batch_sweep(gpt2, [1], seq_len=2048, timing=QUICK)
    with pytest.raises(InvalidInputError):
        benchmark_point(resnet, 1, seq_len=8, timing=QUICK)


def test_memory_pass_is_separate_from_timing(resnet, monkeypatch):
    """No sampler thread runs while latency is timed; one runs during the memory pass."""
    sampler_alive = []
    real_forward = resnet.forward

    def forward(inputs):
        sampler_alive.append(any(t.name == "infopt-memory-sampler" for t in threading.enumerate()))
        return real_forward(inputs)

    monkeypatch.setattr(resnet, "forward", forward)
    row = benchmark_point(resnet, 1, timing=QUICK)
    memory_calls = benchmark.MEMORY_CALLS
    assert row["status"] == "ok"
    assert not any(sampler_alive[:-memory_calls]) and all(sampler_alive[-memory_calls:])


def test_rss_sampler_sees_a_large_allocation():
    with RssSampler(interval_s=0.0005) as sampler:
        block = torch.ones(64 * MIB // 4)  # 64 MiB, written so the pages are resident
        del block
    assert sampler.increase_bytes >= 48 * MIB
    assert sampler.peak_bytes >= sampler.baseline_bytes and len(sampler.samples) >= 2
    times = [t for t, _ in sampler.samples]
    assert times == sorted(times)


def test_measure_peak_memory_reports_activation_growth():
    result = measure_peak_memory(lambda: torch.ones(64 * MIB // 4).sum(), "cpu", calls=2)
    assert result["memory_method"] == "cpu-rss-sampled"
    assert result["activation_memory_mb"] >= 48
    assert result["peak_memory_mb"] >= result["baseline_memory_mb"] + 48
    assert result["peak_reserved_mb"] is None


def test_cold_start_reports_load_and_first_call():
    result = cold_start("resnet50", "cpu", size="tiny")
    assert result["load_s"] > 0 and result["first_call_ms"] > 0 and result["second_call_ms"] > 0
    assert result["model"] == "resnet50" and result["device"] == "cpu" and result["batch_size"] == 1


@pytest.mark.cuda
@needs_cuda
def test_cuda_sweep_uses_events_and_allocator_peaks():
    model = infopt.load_model("resnet50", device="cuda", size="tiny")
    df = run_batch_sweep(model, [1, 4], timing=TimingConfig.quick())
    assert (df["status"] == "ok").all()
    assert (df["timer"] == "cuda-event").all() and (df["memory_method"] == "cuda-max-allocated").all()
    assert (df["peak_memory_mb"] > 0).all() and (df["peak_reserved_mb"] >= df["peak_memory_mb"]).all()


def test_out_of_memory_while_building_inputs_is_oom_and_larger_sizes_are_skipped(resnet, monkeypatch):
    """The input builder itself runs out of memory (batch 1 included): recorded per point, never the sweep's end."""
    real_prepare = resnet.prepare_input
    built = []

    def prepare(batch_size, seq_len=None, **kwargs):
        built.append(batch_size)
        if batch_size >= 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB (inputs)")
        return real_prepare(batch_size, seq_len, **kwargs)

    monkeypatch.setattr(resnet, "prepare_input", prepare)
    df = run_batch_sweep(resnet, [1, 2, 4], timing=QUICK, measure_memory=False)
    assert df["status"].tolist() == ["ok", "oom", "skipped"]
    assert "out of memory" in df.loc[1, "error"] and "batch size 2" in df.loc[2, "error"]
    assert 4 not in built  # the skipped point never built its inputs

    def always_oom(batch_size, seq_len=None, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (inputs, simulated)")

    monkeypatch.setattr(resnet, "prepare_input", always_oom)  # even the up-front check input fails
    df = run_batch_sweep(resnet, [1, 2], timing=QUICK, measure_memory=False)
    assert df["status"].tolist() == ["oom", "skipped"]


def test_rows_carry_the_models_own_footprint_beside_the_process_figure(resnet):
    row = benchmark_point(resnet, 2, timing=QUICK)
    assert row["weight_memory_mb"] == pytest.approx(resnet.weight_bytes() / MIB)
    assert row["model_memory_mb"] == pytest.approx(row["weight_memory_mb"] + row["activation_memory_mb"])
    # on CPU the method sees the whole process (interpreter, torch): far more than this model's own memory
    assert row["memory_method"] == "cpu-rss-sampled" and row["peak_memory_mb"] > row["model_memory_mb"]
