"""Roofline analysis: how close each module, operator and the whole model get to the device's limits.

For every point: FLOPs (2 x multiply-adds, :mod:`infopt.opcount` with the
formulas of :mod:`infopt.flops`), bytes (unfused eager bytes: an upper bound
on DRAM traffic, so the intensity is a lower bound), operational intensity =
FLOPs / bytes, a measured time, achieved FLOP/s = FLOPs / time and the roof
at that intensity, ``min(peak FLOP/s, intensity x peak bandwidth)``.
``roof_fraction`` = achieved / roof. A point left of the ridge point
(peak FLOP/s / bandwidth) is memory-bound, right of it compute-bound.

Times: modules and operators use the profiler's attribution
(:mod:`infopt.profiling`; CPU time on CPU, GPU kernel time on CUDA), which
runs with the profiler on and is therefore somewhat slow; the whole-model
point uses the unprofiled median latency from :func:`infopt.timing.measure`.
Peaks default to the measured ones (:func:`infopt.peaks.device_peaks`) for
the model's dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
import torch

from .devices import device_kind, resolve_device
from .errors import InvalidInputError
from .opcount import BYTES_DEFINITION
from .peaks import device_peaks, dtype_name, peak_bandwidth, peak_flops
from .profiling import MPS_NOTE, profile_model, resolved_seq_len
from .timing import TimingConfig, measure

#: A point this far above its roof means the counting or the timing is wrong.
ROOF_TOLERANCE = 1.10


@dataclass
class RooflineResult:
    """Per-module and per-operator roofline tables, the whole-model point and the peaks used."""

    modules: pd.DataFrame
    operators: pd.DataFrame
    whole_model: dict
    peaks: dict
    notes: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)

    def points_above_roof(self, tolerance: float = ROOF_TOLERANCE) -> pd.DataFrame:
        """Rows (modules, operators, whole model) whose achieved FLOP/s exceeds ``tolerance`` x roof."""
        whole = pd.DataFrame([{**self.whole_model, "level": "model", "name": self.whole_model["model"]}])
        frames = [self.modules.assign(level="module", name=self.modules["module"]),
                  self.operators.assign(level="operator", name=self.operators["operator"]), whole]
        table = pd.concat([f[["level", "name", "roof_fraction"]] for f in frames], ignore_index=True)
        fractions = pd.to_numeric(table["roof_fraction"], errors="coerce")
        return table[fractions > tolerance]


def roof_at(intensity: float, peak_flops_per_s: float, bandwidth: float) -> float:
    """Attainable FLOP/s at an operational intensity: ``min(peak, intensity x bandwidth)``."""
    if intensity is None or not math.isfinite(intensity):
        return float("nan")
    return min(peak_flops_per_s, intensity * bandwidth)


def _add_roofline_columns(table: pd.DataFrame, time_ms: pd.Series, peak: float, bandwidth: float) -> pd.DataFrame:
    ridge = peak / bandwidth
    seconds = pd.to_numeric(time_ms, errors="coerce") / 1e3
    flops = table["flops"].astype(float)
    nbytes = table["bytes"].astype(float)
    table["operational_intensity"] = (flops / nbytes).where(nbytes > 0)
    table["time_ms"] = seconds * 1e3
    table["achieved_flops_per_s"] = (flops / seconds).where(seconds > 0)
    table["achieved_bytes_per_s"] = (nbytes / seconds).where(seconds > 0)
    table["roof_flops_per_s"] = table["operational_intensity"].map(lambda i: roof_at(i, peak, bandwidth))
    table["roof_fraction"] = (table["achieved_flops_per_s"] / table["roof_flops_per_s"]).where(
        table["roof_flops_per_s"] > 0)
    table["bound"] = table["operational_intensity"].map(
        lambda i: None if pd.isna(i) else ("memory" if i < ridge else "compute"))
    return table


def _model_io_bytes(model, inputs: dict) -> int:
    """Bytes of weights + inputs + output: what any implementation must move at least once."""
    with torch.inference_mode():
        output = model.forward(inputs)
    return model.weight_bytes() + sum(t.numel() * t.element_size() for t in inputs.values()) \
        + output.numel() * output.element_size()


def roofline(model, batch_size: int, device: str | torch.device | None = None, seq_len: int | None = None,
             peaks: dict | None = None, *, timing: TimingConfig | None = None, peak_source: str = "measured",
             compute_dtype: torch.dtype | str | None = None) -> RooflineResult:
    """Roofline of ``model`` at ``batch_size`` on ``device`` (default: the model's device).

    ``peaks``: a :func:`infopt.peaks.device_peaks` dict (measured now if
    omitted). ``peak_source``: ``"measured"`` (default) or ``"theoretical"``
    roofs. ``compute_dtype``: dtype whose matmul peak applies (default: the
    model's parameter dtype). ``timing``: config for the whole-model latency.
    """
    target = resolve_device(device) if device is not None else model.device
    if target != model.device:
        raise InvalidInputError(f"The model is on {model.device}, not {target}: move it with model.to(...) first.")
    kind = device_kind(target)
    dtype = dtype_name(compute_dtype if compute_dtype is not None else model.dtype)
    if peaks is None:
        peaks = device_peaks(target, dtypes=[dtype])
    peak, bandwidth = peak_flops(peaks, dtype, peak_source), peak_bandwidth(peaks, peak_source)
    if not peak or not bandwidth:
        raise InvalidInputError(f"The peaks hold no {peak_source} {dtype} matmul rate and bandwidth for "
                                f"{peaks.get('device')}: measure them with device_peaks(..., dtypes=['{dtype}']).")

    profiled = profile_model(model, batch_size, None, seq_len)
    counts = profiled.counts
    time_column = {"cuda": "inclusive_device_ms"}.get(kind, "inclusive_cpu_ms")
    op_time_column = {"cuda": "device_ms"}.get(kind, "cpu_ms")
    notes = [
        f"bytes: {BYTES_DEFINITION}; operational intensity is therefore a lower bound.",
        "FLOPs: 2 x multiply-adds from infopt.flops formulas; element-wise operators have no formula "
        "(0 FLOPs), so their points sit at intensity 0 and have no roof fraction.",
        f"roof = min(peak {dtype} matmul FLOP/s, intensity x copy bandwidth), {peak_source} peaks; "
        f"ridge point {peak / bandwidth:.3g} FLOP/byte.",
        "Module and operator times come from the profiler (profiling on: slower than unprofiled runs); "
        "the whole-model time is the unprofiled median latency.",
    ]
    if kind == "mps":
        notes.append(MPS_NOTE + " Module and operator points therefore have no time on MPS.")

    modules = counts.modules.merge(
        profiled.modules[["module", "calls_per_step", *([time_column] if kind != "mps" else [])]],
        on="module", how="left")
    module_times = modules[time_column] if kind != "mps" else pd.Series(float("nan"), index=modules.index)
    modules = _add_roofline_columns(modules.drop(columns=[c for c in (time_column,) if c in modules]),
                                    module_times, peak, bandwidth)

    operators = counts.operators.merge(profiled.counted_operator_times, on="operator", how="left")
    operator_times = operators[op_time_column] if kind != "mps" else pd.Series(float("nan"), index=operators.index)
    operators = _add_roofline_columns(operators.drop(columns=["cpu_ms", "device_ms"]), operator_times,
                                      peak, bandwidth)

    inputs = model.prepare_input(batch_size, seq_len)
    latency = measure(lambda: model.forward(inputs), target, timing or TimingConfig())
    whole = pd.DataFrame([{"flops": counts.total_flops, "bytes": counts.total_bytes}])
    whole = _add_roofline_columns(whole, pd.Series([latency.median_ms]), peak, bandwidth).iloc[0].to_dict()
    min_bytes = _model_io_bytes(model, inputs)
    whole_model = {
        "model": model.name, "device": str(target), "variant": model.variant, "batch_size": batch_size,
        "seq_len": resolved_seq_len(model, seq_len), "dtype": dtype,
        "flops": counts.total_flops, "flops_per_sample": counts.total_flops / batch_size,
        "bytes": counts.total_bytes, "operational_intensity": whole["operational_intensity"],
        "min_bytes": min_bytes, "max_operational_intensity": counts.total_flops / min_bytes,
        "time_ms": latency.median_ms, "time_ci_low_ms": latency.ci_low_ms, "time_ci_high_ms": latency.ci_high_ms,
        "time_converged": latency.converged, "profiled_time_ms": profiled.overhead["profiled_wall_ms_per_step"],
        "achieved_flops_per_s": whole["achieved_flops_per_s"], "achieved_bytes_per_s": whole["achieved_bytes_per_s"],
        "roof_flops_per_s": whole["roof_flops_per_s"], "roof_fraction": whole["roof_fraction"],
        "bound": whole["bound"], "peak_flops_per_s": peak, "peak_bandwidth_bytes_per_s": bandwidth,
        "ridge_point": peak / bandwidth, "peak_source": peak_source,
        "min_bytes_definition": "weights + inputs + output, each moved once: a lower bound on DRAM traffic",
    }
    result = RooflineResult(
        modules=modules, operators=operators, whole_model=whole_model, peaks=peaks, notes=notes,
        config={"model": model.name, "device": str(target), "batch_size": batch_size,
                "seq_len": resolved_seq_len(model, seq_len),
                "dtype": dtype, "peak_source": peak_source, "time_basis": time_column if kind != "mps" else None},
    )
    above = result.points_above_roof()
    if not above.empty:
        notes.append(f"WARNING: {len(above)} point(s) sit more than {ROOF_TOLERANCE - 1:.0%} above their roof "
                     f"({', '.join(map(str, above['name'].head(5)))}): the peaks were measured lower than these "
                     "kernels ran (a busy machine while measuring peaks?) or a count is wrong; re-measure the peaks.")
    return result
