"""Device peaks and the roofline (infopt.analyze.peaks, infopt.analyze.roofline)."""

from __future__ import annotations

import math
import platform

import pytest
import torch

import infopt
from infopt.errors import InvalidInputError
from infopt.analyze.peaks import device_peaks, peak_bandwidth, peak_flops, peaks_table
from infopt.analyze.roofline import ROOF_TOLERANCE, roof_at, roofline
from infopt.measure.timing import TimingConfig

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def cpu_peaks():
    # full measurement (not quick): on a shared CPU, more runs make the best one more representative
    return device_peaks("cpu", dtypes=["float32", "bfloat16"])


def test_cpu_peaks_are_positive_and_below_the_theoretical_peak(cpu_peaks):
    measured = peak_flops(cpu_peaks, "float32", "measured")
    theoretical = peak_flops(cpu_peaks, "float32", "theoretical")
    assert measured > 0 and theoretical > 0
    if cpu_peaks["theoretical"]["clock_measured"]:  # the clock the cores really run at: a true upper bound
        assert measured <= 1.1 * theoretical
    else:  # only the OS's (base) clock: the figure must say it is a lower bound that turbo exceeds
        assert any("lower bound" in line for line in cpu_peaks["theoretical"]["assumptions"])
    assert "physical cores" in cpu_peaks["theoretical"]["source"]
    assert cpu_peaks["matmul"]["bfloat16"]["status"] in ("ok", "unsupported")
    bandwidth = cpu_peaks["bandwidth"]
    assert peak_bandwidth(cpu_peaks) == bandwidth["measured_bytes_per_s"] > 0
    if bandwidth["llc_bytes"]:
        assert bandwidth["buffer_bytes"] >= 4 * bandwidth["llc_bytes"]
    table = peaks_table(cpu_peaks)
    assert list(table["quantity"]) == ["compute float32", "compute bfloat16", "copy bandwidth"]


def test_measured_peak_is_the_best_kernel_family_and_names_it(cpu_peaks):
    compute = cpu_peaks["compute"]["float32"]
    matmul, conv = cpu_peaks["matmul"]["float32"], cpu_peaks["conv"]["float32"]
    assert compute["measured_flops_per_s"] == max(matmul["measured_flops_per_s"], conv["measured_flops_per_s"])
    assert peak_flops(cpu_peaks, "float32") == compute["measured_flops_per_s"]
    winner = conv if compute["family"] == "conv" else matmul
    assert winner["measured_flops_per_s"] == compute["measured_flops_per_s"]
    assert compute["kernel"] in (conv["kernel"], f"matmul {matmul['size']}x{matmul['size']}")
    kernels = list(conv["by_kernel"])
    for family in ("conv3x3 channels_last", "conv3x3 contiguous", "conv1x1 channels_last", "conv1x1 contiguous"):
        assert any(k.startswith(family) for k in kernels), family
    assert peaks_table(cpu_peaks).at[0, "note"] == compute["kernel"]


def test_quick_peaks_use_smaller_cpu_sizes_than_full():
    from infopt.analyze.peaks import _CONV_SHAPES, _conv_batch, _matmul_sizes

    assert max(_matmul_sizes("cpu", True)) < max(_matmul_sizes("cpu", False))
    assert _conv_batch("cpu", True) < _conv_batch("cpu", False)
    quick_flops = max(k * k * ci * co * s * s for k, ci, co, s in _CONV_SHAPES[True])
    full_flops = max(k * k * ci * co * s * s for k, ci, co, s in _CONV_SHAPES[False])
    assert quick_flops < full_flops


def test_peak_flops_reads_older_matmul_only_files():
    old = {"matmul": {"float32": {"status": "ok", "measured_flops_per_s": 5e9}}}
    assert peak_flops(old, "float32") == 5e9


def test_points_above_roof_are_explained(tiny_resnet, cpu_peaks):
    # a deliberately low peak puts convolutions above their roof: stride-1 3x3 ones are labelled as possible
    # reduced-FLOP (Winograd/FFT) kernels with nominal FLOPs and rate; others say the peak or count is wrong
    from infopt.analyze.roofline import REDUCED_FLOP_NOTE, UNEXPLAINED_NOTE, reduced_flop_candidates

    low = {**cpu_peaks, "compute": {"float32": {"status": "ok", "measured_flops_per_s": 1e6, "kernel": "fake"}}}
    result = roofline(tiny_resnet, 1, peaks=low, timing=TimingConfig.quick())
    above = result.points_above_roof()
    candidates = reduced_flop_candidates(tiny_resnet.module)
    assert "layer1.0.conv2" in candidates and "layer1.0.conv1" not in candidates  # 3x3 vs 1x1
    assert "conv1" not in candidates  # 7x7 stride 2
    modules = above[above["level"] == "module"].set_index("name")
    assert modules.at["layer1.0.conv2", "roof_note"].startswith(REDUCED_FLOP_NOTE[:20])
    assert "GFLOP" in modules.at["layer1.0.conv2", "roof_note"]
    assert modules.at["layer1.0.conv1", "roof_note"] == UNEXPLAINED_NOTE
    assert any("Winograd" in note for note in result.notes) and any("WARNING" in n for n in result.notes)
    assert result.whole_model["peak_kernel"] == "fake"
    largest = result.largest_roof_fractions()
    assert list(largest["level"]) == ["operator", "module", "model"]
    assert (result.points()["roof_note"].fillna("") == "").sum() > 0  # points within their roof carry no note


def test_no_full_size_convolution_sits_above_its_roof(cpu_peaks):
    # the rule on convolutions large enough to matter (issue #18): full-width resnet50 at 224x224
    model = infopt.load_model("resnet50")
    result = roofline(model, 2, peaks=cpu_peaks, timing=TimingConfig.quick())
    above = result.points_above_roof(ROOF_TOLERANCE)
    assert above.empty, above


def test_peaks_reject_unknown_dtype():
    with pytest.raises(InvalidInputError, match="dtype"):
        device_peaks("cpu", dtypes=["int8"], quick=True)


def test_roof_is_the_lower_of_compute_and_memory_limits():
    assert roof_at(1.0, peak_flops_per_s=100.0, bandwidth=10.0) == 10.0
    assert roof_at(50.0, peak_flops_per_s=100.0, bandwidth=10.0) == 100.0
    assert math.isnan(roof_at(float("nan"), 100.0, 10.0))


@pytest.mark.parametrize("name", ["gpt2", "distilbert", "resnet50"])
def test_no_roofline_point_sits_above_its_roof(tiny_models, cpu_peaks, name):
    model = tiny_models[name]
    seq_len = 32 if model.is_text else None
    result = roofline(model, 2, seq_len=seq_len, peaks=cpu_peaks, timing=TimingConfig.quick())
    assert result.points_above_roof(ROOF_TOLERANCE).empty, result.points_above_roof(ROOF_TOLERANCE)
    whole = result.whole_model
    assert whole["flops"] == result.modules.set_index("module").at["<root>", "flops"] > 0
    assert whole["roof_fraction"] > 0 and whole["time_ms"] > 0
    assert whole["bound"] in ("memory", "compute")
    assert whole["min_bytes"] <= whole["bytes"]
    assert whole["peak_flops_per_s"] == peak_flops(cpu_peaks, "float32")
    points = result.modules.dropna(subset=["roof_fraction"])
    assert len(points) > 3
    assert set(points["bound"]) <= {"memory", "compute"}
    ridge = whole["ridge_point"]
    assert (points.loc[points["bound"] == "memory", "operational_intensity"] < ridge).all()
    real = set(dict(model.module.named_modules())) - {""}
    assert set(result.modules["module"]) - {"<root>"} == real
    timed_ops = result.operators.dropna(subset=["time_ms"])
    assert timed_ops["flops"].sum() == whole["flops"]  # every FLOP-carrying operator got a time


def test_a_profile_already_taken_is_used_and_one_of_another_point_is_refused(tiny_resnet, cpu_peaks, monkeypatch):
    """The profile notebook hands its own profile to the roofline: no second profile, the same counts; a profile
    of another batch size would pair one point's FLOPs with another's times and is refused."""
    from infopt.analyze import roofline as roofline_module
    from infopt.analyze.profiling import profile_model

    taken = profile_model(tiny_resnet, 2, None, active=1)
    monkeypatch.setattr(roofline_module, "profile_model", lambda *a, **k: pytest.fail("profiled a second time"))
    result = roofline(tiny_resnet, 2, peaks=cpu_peaks, timing=TimingConfig.quick(), profiled=taken)
    assert result.whole_model["flops"] == taken.counts.total_flops > 0
    assert result.whole_model["profiled_time_ms"] == taken.overhead["profiled_wall_ms_per_step"]
    assert result.modules["time_ms"].notna().sum() > 3
    with pytest.raises(InvalidInputError, match="batch_size 2 .not 1."):
        roofline(tiny_resnet, 1, peaks=cpu_peaks, timing=TimingConfig.quick(), profiled=taken)


def test_roofline_never_moves_the_model_silently(tiny_resnet, cpu_peaks):
    # no GPU: the device is refused; with one: the model is on the CPU, so it must be moved first
    expected = InvalidInputError if torch.cuda.is_available() else infopt.DeviceUnavailableError
    with pytest.raises(expected):
        roofline(tiny_resnet, 1, device="cuda", peaks=cpu_peaks)


def test_roofline_without_a_usable_peak_says_so(tiny_resnet, cpu_peaks):
    # CPU memory bandwidth has no theoretical figure: the theoretical roofline cannot be drawn.
    with pytest.raises(InvalidInputError, match="theoretical"):
        roofline(tiny_resnet, 1, peaks=cpu_peaks, peak_source="theoretical")


def test_the_cpu_clock_is_measured_or_says_why_not():
    from infopt.analyze.cpu_clock import measured_clock_mhz

    mhz, how = measured_clock_mhz(iterations=200_000, repeats=2)
    if mhz is None:
        assert how.startswith("not measured")
    else:  # any real core: between 0.2 and 8 GHz; the OS's figure can only be lower than a turbo clock
        assert 200 < mhz < 8000 and how.startswith("measured")


@pytest.mark.cuda
@requires_cuda
def test_cuda_peaks_and_roofline():
    peaks = device_peaks("cuda", quick=True)
    assert peak_flops(peaks, "float32") <= 1.1 * peak_flops(peaks, "float32", "theoretical")
    assert peak_bandwidth(peaks) <= 1.1 * peak_bandwidth(peaks, "theoretical")
    model = infopt.load_model("gpt2", device="cuda", size="tiny")
    result = roofline(model, 2, seq_len=32, peaks=peaks, timing=TimingConfig.quick())
    assert result.points_above_roof().empty


def test_a_chain_faster_than_any_real_clock_is_refused_not_reported(monkeypatch):
    """A core that folds the chain (as Golden Cove folds immediate adds) must not yield a 19 GHz 'clock'."""
    import itertools

    from infopt.analyze import cpu_clock

    ticks = itertools.count(0.0, 1e-6)  # every timed chain appears to take 1 us
    monkeypatch.setattr(cpu_clock.time, "perf_counter", lambda: next(ticks))
    mhz, how = cpu_clock.measured_clock_mhz(iterations=100_000, repeats=2)
    if platform.machine().lower() in ("x86_64", "amd64") and platform.system() == "Linux":
        assert mhz is None and how.startswith("not measured") and "above any real clock" in how
