"""Interference detection under a deliberate background load, paired speedups, and run-consistency checks.

The load is child processes spinning on the CPU (:class:`infopt.measure.interference.BackgroundLoad`), started and
stopped by each test and bounded in time. Assertions that need a quiet machine skip when the machine is
already busy before the test starts (other work on a shared box): run this file alone for the full check.
Loaded-case assertions hold either way, because the load adds far more than the threshold.
"""

import math
import threading
import time

import pandas as pd
import pytest
import torch

from infopt.measure import benchmark
from infopt.measure.interference import (CPU_THRESHOLD_CORES, DISAGREE_MESSAGE, BackgroundLoad, Interference, check_machine,
                                 ci_text, combine, disagreements, quality_counts, watch)
from infopt.measure.timing import TimingConfig, measure
from infopt.optimize import paired_speedup

#: More spinners than the 2 cores of a small CI machine, so the load is unmistakable.
LOAD = 3
ONE_SECOND = TimingConfig(min_samples=5, min_time_s=1.0, max_time_s=1.0, target_rel_ci=1e-9, min_warmup=1,
                          warmup_window=1, max_warmup_s=0.0, num_threads=1)


def _work(n: int = 128, reps: int = 1):
    a = torch.randn(n, n)

    def run():
        for _ in range(reps):
            torch.mm(a, a)
    return run


def _require_quiet_machine() -> None:
    state = check_machine(1.0)
    if state.busy:
        pytest.skip(f"machine already busy before the test ({state.other_cpu_cores:.2f} cores): run it alone")


def test_quiet_measurement_is_not_flagged():
    _require_quiet_machine()
    result = measure(_work(), "cpu", ONE_SECOND)
    assert result.interference is False
    assert "CPU cores" in result.interference_detail and "threshold 0.25" in result.interference_detail


def test_loaded_measurement_is_flagged_with_the_figure():
    with BackgroundLoad(LOAD, max_seconds=30):
        result = measure(_work(), "cpu", ONE_SECOND)
        with watch() as window:
            time.sleep(0.5)
    assert result.interference is True
    assert window.result.flagged and window.result.other_cpu_cores > CPU_THRESHOLD_CORES + 0.5
    assert "other processes used" in result.interference_detail


def test_check_machine_names_the_busy_processes():
    with BackgroundLoad(LOAD, max_seconds=30) as load:
        state = check_machine(1.0, top=20)  # other work on a shared machine may outrank the spinners
        pids = {child.pid for child in load.children}
    assert state.busy and state.other_cpu_cores > 1.0
    assert pids & {p["pid"] for p in state.top_processes}
    assert state.line.startswith("Machine BUSY") and "busiest:" in state.line
    assert state.to_dict()["busy"] is True


def test_a_load_starting_halfway_flags_the_rows_it_touched(tiny_resnet, monkeypatch):
    load = BackgroundLoad(LOAD, max_seconds=60)
    real_prepare = tiny_resnet.prepare_input

    def prepare(batch_size, seq_len=None, **kwargs):
        if batch_size == 4 and not load.children:  # the third point of the sweep: the load starts
            load.start()
        return real_prepare(batch_size, seq_len, **kwargs)

    monkeypatch.setattr(tiny_resnet, "prepare_input", prepare)
    quiet_before = not check_machine(1.0).busy
    try:
        # one visit per point: a second pass would time batch 1 and 2 again while the load runs (and flag them)
        df = benchmark.run_batch_sweep(tiny_resnet, [1, 2, 4, 8], timing=ONE_SECOND, measure_memory=False,
                                       visits=1)
    finally:
        load.stop()
    flags = df.set_index("batch_size")["interference"]
    assert bool(flags[4]) and bool(flags[8])
    assert df["interference_detail"].str.contains("CPU cores").all()
    if quiet_before:
        assert not bool(flags[1]) and not bool(flags[2])


class _Work:
    """A stand-in model: ``reps`` matrix products per call (the variant does half the baseline's work).

    Calls last tens of milliseconds, longer than the scheduler's time slice, so sharing the CPU with the
    load slows each call (a call shorter than a slice often runs untouched and its median would not move).
    """

    device = torch.device("cpu")

    def __init__(self, reps: int):
        self.run = _work(256, reps)

    def prepare_input(self, batch_size, seq_len=None):
        return {}

    def forward(self, inputs):
        self.run()


def test_paired_speedup_survives_a_load_that_comes_and_goes_while_the_unpaired_ratio_does_not():
    baseline, variant = _Work(40), _Work(20)
    config = TimingConfig(min_samples=10, min_time_s=1.5, max_time_s=1.5, target_rel_ci=1e-9, min_warmup=2,
                          warmup_window=2, max_warmup_s=0.2, num_threads=1)
    quiet = paired_speedup(baseline, variant, 1, rounds=20, timing=config, block_s=0.0)["paired_speedup"]

    with BackgroundLoad(LOAD, max_seconds=60) as load:
        # unpaired: the baseline is timed while the machine is busy, the variant after it became quiet
        slow_base = measure(lambda: baseline.forward({}), "cpu", config).median_ms
        load.pause()
        fast_variant = measure(lambda: variant.forward({}), "cpu", config).median_ms
        # paired: the same load switching on and off every 0.25 s during the rounds (one call per block)
        stop = threading.Event()

        def toggle():
            on = True  # the load is on when the rounds start, so the paired window surely sees it
            while not stop.wait(0.25):
                load.resume() if not on else load.pause()
                on = not on
        load.resume()
        switcher = threading.Thread(target=toggle, daemon=True)
        switcher.start()
        try:
            loaded = paired_speedup(baseline, variant, 1, rounds=20, timing=config, block_s=0.0)
        finally:
            stop.set()
            switcher.join()
    unpaired = slow_base / fast_variant
    assert loaded["paired_speedup"] == pytest.approx(quiet, rel=0.25)
    assert unpaired > 1.4 * quiet
    assert loaded["interference"] is True  # the pairing survives the load, and the row still says it was there


def test_combine_flags_a_row_if_any_window_was_flagged():
    clean = Interference(False, "clean", 0.05, 1.0)
    busy = Interference(True, "busy", 1.5, 1.0)
    assert combine([clean, busy]).flagged and combine([clean, busy]).detail == "busy"
    assert not combine([clean, clean]).flagged and combine([]).detail == "not measured"


def _timed(p50, low, high, **extra):
    return {"model": "m", "device": "cpu", "variant": "eager-fp32", "batch_size": 1, "seq_len": None, "status": "ok",
            "latency_p50_ms": p50, "latency_ci_low_ms": low, "latency_ci_high_ms": high, **extra}


def test_disagreements_flag_a_baseline_that_moved_between_notebooks():
    bench = pd.DataFrame([_timed(100.0, 98.0, 102.0), {**_timed(50.0, 49.0, 51.0), "batch_size": 8}])
    optimize = pd.DataFrame([_timed(400.0, 390.0, 410.0), {**_timed(53.0, 51.0, 55.0), "batch_size": 8},
                             {**_timed(10.0, 9.0, 11.0), "variant": "bf16"}])
    table = disagreements(bench, optimize).set_index("batch_size")
    assert not table.loc[1, "agree"] and table.loc[1, "message"].startswith(DISAGREE_MESSAGE)
    assert table.loc[1, "ratio"] == pytest.approx(4.0)
    assert table.loc[8, "agree"] and table.loc[8, "message"] == "consistent"  # within CIs + 10%


def test_quality_counts_and_too_few_samples():
    df = pd.DataFrame([_timed(1.0, 0.9, 1.1, converged=True, interference=False),
                       _timed(1.0, math.nan, math.nan, converged=False, interference=True),
                       {**_timed(None, None, None), "status": "oom"}])
    assert quality_counts(df) == {"rows": 2, "interference": 1, "not_converged": 1, "too_few_samples": 1}
    assert ci_text(math.nan, 2.0) == "too few samples" and ci_text(1.0, 2.0) == "[1, 2] ms"


def _run_args(tmp_path, *extra):
    return ["--device", "cpu", "--quick", "--models", "resnet50", "--notebooks", "benchmark", "--no-html",
            "--output", str(tmp_path), "--run-name", "r", *extra]


def test_runner_checks_the_machine_and_strict_quiet_refuses(tmp_path, capsys):
    import json

    from infopt.run import runner

    with BackgroundLoad(LOAD, max_seconds=60):
        code = runner.main(_run_args(tmp_path, "--strict-quiet"))
    manifest = json.loads((tmp_path / "r" / "run.json").read_text())
    assert code == 2 and manifest["status"] == "refused"
    assert manifest["machine_check"]["busy"] is True and manifest["machine_check"]["other_cpu_cores"] > 1.0
    out = capsys.readouterr().out
    assert "Machine BUSY" in out and "Refusing to measure (--strict-quiet)" in out
    assert all(entry["status"] != "succeeded" for entry in manifest["notebooks"])


def test_runner_records_a_busy_machine_and_carries_on(tmp_path, capsys, monkeypatch):
    import json

    from infopt.run import runner

    ran = []

    def run_plan(plan, args, argv, manifest=None):
        ran.append(plan)
        manifest.save("succeeded")
        return 0

    monkeypatch.setattr(runner, "run_plan", run_plan)
    with BackgroundLoad(LOAD, max_seconds=60):
        code = runner.main(_run_args(tmp_path))
    manifest = json.loads((tmp_path / "r" / "run.json").read_text())
    assert code == 0 and ran and manifest["machine_check"]["busy"] is True
    assert "Measuring anyway" in capsys.readouterr().out


def test_run_quality_lines_count_what_needs_attention(tmp_path):
    from infopt.measure.interference import run_quality_lines

    folder = tmp_path / "cpu" / "m"
    folder.mkdir(parents=True)
    pd.DataFrame([_timed(1.0, 0.9, 1.1, converged=True, interference=False),
                  _timed(1.0, math.nan, math.nan, converged=False, interference=True)]).to_csv(
        folder / "m_cpu_results.csv", index=False)
    pd.DataFrame([_timed(1.0, 0.9, 1.1, converged=True, interference=False)]).to_csv(
        folder / "m_cpu_variants.csv", index=False)
    lines = run_quality_lines(tmp_path)
    assert len(lines) == 1 and "m_cpu_results: Of 2 timed rows: 1 timed on a busy machine" in lines[0]
    assert "1 not converged (more time per point: --param max_time_s=...)" in lines[0]
    assert "1 with too few samples for a CI" in lines[0]


def test_quality_table_lists_only_groups_that_need_attention():
    from infopt.measure.interference import quality_table

    clean = pd.DataFrame([{**_timed(1.0, 0.9, 1.1, converged=True, interference=False), "run": "a"}])
    noisy = pd.DataFrame([{**_timed(1.0, 0.9, 1.1, converged=False, interference=True), "run": "a"}])
    table = quality_table({"benchmark": clean, "optimize": noisy, "generation": pd.DataFrame()})
    assert table[["results", "run", "model", "interference", "not_converged"]].values.tolist() == [
        ["optimize", "a", "m", 1, 1]]


def test_device_peaks_carry_interference_per_measurement():
    from infopt.analyze.peaks import device_peaks

    peaks = device_peaks("cpu", dtypes=["float32"], quick=True)
    for entry in (peaks["matmul"]["float32"], peaks["conv"]["float32"], peaks["bandwidth"]):
        assert entry["interference"] in (True, False) and "CPU cores" in entry["interference_detail"]


def _fake_nvml(monkeypatch, processes, utilisation, throttle=0):
    import sys
    import types
    from collections import namedtuple

    process, sample = namedtuple("P", "pid usedGpuMemory"), namedtuple("S", "pid smUtil")
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlDeviceGetHandleByIndex=lambda index: ("gpu", index),
        nvmlDeviceGetHandleByUUID=lambda uuid: ("gpu", uuid),
        nvmlDeviceGetComputeRunningProcesses=lambda handle: [process(pid, 1) for pid in processes],
        nvmlDeviceGetGraphicsRunningProcesses=lambda handle: [],
        nvmlDeviceGetProcessUtilization=lambda handle, since: [sample(pid, u) for pid, u in utilisation.items()],
        nvmlDeviceGetCurrentClocksThrottleReasons=lambda handle: throttle,
        nvmlClocksThrottleReasonSwThermalSlowdown=32, nvmlClocksThrottleReasonHwSlowdown=8)
    real = pytest.importorskip("pynvml")  # the fake uses nvidia-ml-py's own names: a rename there fails here
    assert not [name for name in vars(fake) if not hasattr(real, name)]
    monkeypatch.setitem(sys.modules, "pynvml", types.ModuleType("pynvml"))
    sys.modules["pynvml"].__dict__.update(vars(fake))


def test_gpu_window_reports_other_processes_foreign_utilisation_and_throttling(monkeypatch):
    import os

    _fake_nvml(monkeypatch, [os.getpid(), 4242], {os.getpid(): 95, 4242: 40}, throttle=32)
    with watch("cuda:0") as window:
        pass
    assert window.result.flagged
    assert "1 other process(es) on the GPU" in window.result.detail
    assert "40% GPU utilisation not ours" in window.result.detail and "clocks slowed (thermal)" in window.result.detail

    _fake_nvml(monkeypatch, [os.getpid()], {os.getpid(): 95})
    with watch("cuda:0") as window:
        pass
    assert window.result.gpu == "GPU clean (NVML)"


def test_gpu_without_nvml_is_not_checked_never_clean(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    with watch("cuda:0") as window:
        pass
    assert "GPU not checked" in window.result.detail and "clean" not in window.result.detail


def test_quality_line_says_what_to_do():
    from infopt.measure.interference import quality_line

    clean = pd.DataFrame([_timed(1.0, 0.9, 1.1, converged=True, interference=False)])
    assert quality_line(clean) == "All 1 timed rows are converged, with a CI, on a quiet machine."
    noisy = pd.DataFrame([_timed(1.0, math.nan, math.nan, converged=False, interference=True)])
    line = quality_line(noisy)
    assert "1 timed on a busy machine" in line and "--param max_time_s=..." in line and "too few samples" in line


def test_slow_calls_get_fewer_paired_rounds_within_the_time_share():
    # Sizes come from this machine's own speed: the cap is a quarter of one call of each side, so one round (a
    # call each) overruns the paired share (half the cap) several times on any CPU; the fast case gets 1000
    # calls' worth.
    def one_call_s(work):
        work.forward({})
        start = time.perf_counter()
        work.forward({})
        return time.perf_counter() - start

    slow, half = _Work(40), _Work(20)
    config = TimingConfig(max_time_s=(one_call_s(slow) + one_call_s(half)) / 4, min_time_s=0.0, num_threads=1)
    result = paired_speedup(slow, half, 1, rounds=10, timing=config)
    assert result["paired_rounds"] == 6 and result["paired_speedup_ci_low"] <= result["paired_speedup"]
    tiny = _Work(1)
    roomy = TimingConfig(max_time_s=1000 * one_call_s(tiny), min_time_s=0.0, num_threads=1)
    fast = paired_speedup(tiny, _Work(1), 1, rounds=10, timing=roomy)
    assert fast["paired_rounds"] == 10
