"""Device peaks and the roofline (infopt.peaks, infopt.roofline)."""

from __future__ import annotations

import math

import pytest
import torch

import infopt
from infopt.errors import InvalidInputError
from infopt.peaks import device_peaks, peak_bandwidth, peak_flops, peaks_table
from infopt.roofline import ROOF_TOLERANCE, roof_at, roofline
from infopt.timing import TimingConfig

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def cpu_peaks():
    # full measurement (not quick): on a shared CPU, more runs make the best one more representative
    return device_peaks("cpu", dtypes=["float32", "bfloat16"])


def test_cpu_peaks_are_positive_and_below_the_theoretical_peak(cpu_peaks):
    measured = peak_flops(cpu_peaks, "float32", "measured")
    theoretical = peak_flops(cpu_peaks, "float32", "theoretical")
    assert measured > 0 and theoretical > 0
    assert measured <= 1.1 * theoretical
    assert "physical cores" in cpu_peaks["theoretical"]["source"]
    assert cpu_peaks["matmul"]["bfloat16"]["status"] in ("ok", "unsupported")
    bandwidth = cpu_peaks["bandwidth"]
    assert peak_bandwidth(cpu_peaks) == bandwidth["measured_bytes_per_s"] > 0
    if bandwidth["llc_bytes"]:
        assert bandwidth["buffer_bytes"] >= 4 * bandwidth["llc_bytes"]
    table = peaks_table(cpu_peaks)
    assert list(table["quantity"]) == ["matmul float32", "matmul bfloat16", "copy bandwidth"]


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


def test_roofline_never_moves_the_model_silently(tiny_resnet, cpu_peaks):
    # no GPU: the device is refused; with one: the model is on the CPU, so it must be moved first
    expected = InvalidInputError if torch.cuda.is_available() else infopt.DeviceUnavailableError
    with pytest.raises(expected):
        roofline(tiny_resnet, 1, device="cuda", peaks=cpu_peaks)


def test_roofline_without_a_usable_peak_says_so(tiny_resnet, cpu_peaks):
    # CPU memory bandwidth has no theoretical figure: the theoretical roofline cannot be drawn.
    with pytest.raises(InvalidInputError, match="theoretical"):
        roofline(tiny_resnet, 1, peaks=cpu_peaks, peak_source="theoretical")


@pytest.mark.cuda
@requires_cuda
def test_cuda_peaks_and_roofline():
    peaks = device_peaks("cuda", quick=True)
    assert peak_flops(peaks, "float32") <= 1.1 * peak_flops(peaks, "float32", "theoretical")
    assert peak_bandwidth(peaks) <= 1.1 * peak_bandwidth(peaks, "theoretical")
    model = infopt.load_model("gpt2", device="cuda", size="tiny")
    result = roofline(model, 2, seq_len=32, peaks=peaks, timing=TimingConfig.quick())
    assert result.points_above_roof().empty
