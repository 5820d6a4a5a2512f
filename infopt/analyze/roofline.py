"""Roofline analysis: how close each module, operator and the whole model get to the device's limits.

For every point: FLOPs (2 x multiply-adds, :mod:`infopt.analyze.opcount` with the
formulas of :mod:`infopt.flops`), bytes (unfused eager bytes: an upper bound
on DRAM traffic, so the intensity is a lower bound), operational intensity =
FLOPs / bytes, a measured time, achieved FLOP/s = FLOPs / time and the roof
at that intensity, ``min(peak FLOP/s, intensity x peak bandwidth)``.
``roof_fraction`` = achieved / roof. A point left of the ridge point
(peak FLOP/s / bandwidth) is memory-bound, right of it compute-bound.

Times: modules and operators use the profiler's attribution
(:mod:`infopt.analyze.profiling`; CPU time on CPU, GPU kernel time on CUDA), which
runs with the profiler on and is therefore somewhat slow; the whole-model
point uses the unprofiled median latency from :func:`infopt.measure.timing.measure`.
Peaks default to the measured ones (:func:`infopt.analyze.peaks.device_peaks`) for
the model's dtype: the best of the matmul and convolution kernels, so a roof
is never one the model's own kernels beat. A point still above its roof gets
a ``roof_note`` saying why (a stride-1 convolution that may use a
reduced-FLOP Winograd/FFT algorithm: nominal FLOPs and nominal-rate shown)
instead of silently standing as an impossible point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
import torch

from infopt.devices import device_kind, resolve_device
from infopt.errors import InvalidInputError
from infopt.analyze.opcount import BYTES_DEFINITION, ROOT_NAME
from infopt.analyze.peaks import device_peaks, dtype_name, peak_bandwidth, peak_flops
from infopt.analyze.profiling import MPS_NOTE, ProfileResult, profile_model
from infopt.measure.sweep import resolve_seq_len
from infopt.measure.timing import TimingConfig, measure

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

    def points(self) -> pd.DataFrame:
        """Every point of the three levels (operator, module, model) with its roof fraction and note."""
        whole = pd.DataFrame([{**self.whole_model, "level": "model", "name": self.whole_model["model"]}])
        frames = [self.operators.assign(level="operator", name=self.operators["operator"]),
                  self.modules.assign(level="module", name=self.modules["module"]), whole]
        columns = ["level", "name", "flops", "achieved_flops_per_s", "roof_fraction", "roof_note"]
        return pd.concat([f.reindex(columns=columns) for f in frames], ignore_index=True)

    def points_above_roof(self, tolerance: float = ROOF_TOLERANCE) -> pd.DataFrame:
        """Rows (operators, modules, whole model) whose achieved FLOP/s exceeds ``tolerance`` x roof,
        each with its ``roof_note`` (why it can: e.g. a reduced-FLOP convolution algorithm)."""
        table = self.points()
        return table[pd.to_numeric(table["roof_fraction"], errors="coerce") > tolerance]

    def largest_roof_fractions(self) -> pd.DataFrame:
        """The point with the largest roof fraction at each level (operator, module, model)."""
        table = self.points()
        table["roof_fraction"] = pd.to_numeric(table["roof_fraction"], errors="coerce")
        table = table.dropna(subset=["roof_fraction"])
        best = table.loc[table.groupby("level", sort=False)["roof_fraction"].idxmax()]
        return best.reset_index(drop=True)


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


def reduced_flop_candidates(module: torch.nn.Module) -> set[str]:
    """Qualified names of convolutions a library may run with fewer FLOPs than the nominal count.

    Winograd (3x3 and 5x5, stride 1) and FFT (large kernels) convolutions do fewer multiply-adds than
    2 x N x C_out x H x W x C_in x k x k, so their nominal rate can exceed a true roof.
    """
    names = set()
    for name, sub in module.named_modules():
        if isinstance(sub, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)) and sub.groups == 1 \
                and all(s == 1 for s in sub.stride) and all(d == 1 for d in sub.dilation) \
                and max(sub.kernel_size) >= 3:
            names.add(name)
    return names


REDUCED_FLOP_NOTE = ("above its roof at the nominal FLOP count: a stride-1 convolution with a kernel of 3 or more "
                     "may run a reduced-FLOP algorithm (Winograd/FFT); nominal {flops:.3g} GFLOP, "
                     "nominal-rate {rate:.3g} GFLOP/s")
UNEXPLAINED_NOTE = ("above its roof with no reduced-FLOP kernel to explain it: the peaks were measured lower than "
                    "this ran (busy machine while measuring?) or a count is wrong")


def _explain_above_roof(table: pd.DataFrame, names: pd.Series, candidates: set[str]) -> pd.DataFrame:
    """``roof_note``: why each point above its roof (by more than the tolerance) can be there; empty otherwise."""
    notes = []
    for name, flops, rate, fraction in zip(names, table["flops"], table["achieved_flops_per_s"],
                                           table["roof_fraction"]):
        if not (pd.notna(fraction) and fraction > ROOF_TOLERANCE):
            notes.append("")
        elif name in candidates or (name == "aten::convolution" and candidates):
            notes.append(REDUCED_FLOP_NOTE.format(flops=flops / 1e9, rate=rate / 1e9))
        else:
            notes.append(UNEXPLAINED_NOTE)
    table["roof_note"] = notes
    return table


def _model_io_bytes(model, inputs: dict) -> int:
    """Bytes of weights + inputs + output: what any implementation must move at least once."""
    with torch.inference_mode():
        output = model.forward(inputs)
    return model.weight_bytes() + sum(t.numel() * t.element_size() for t in inputs.values()) \
        + output.numel() * output.element_size()


def check_profile_matches(profiled: ProfileResult, model, batch_size: int, seq_len: int | None) -> None:
    """Raise when ``profiled`` was not taken of ``model`` (its name, device, variant) at this batch size and
    sequence length: the roofline would pair one model's FLOP counts with another's times."""
    wanted = {"model": model.name, "device": str(model.device), "variant": model.variant, "batch_size": batch_size,
              "seq_len": resolve_seq_len(model, seq_len)}
    differing = {key: (profiled.config.get(key), value) for key, value in wanted.items()
                 if profiled.config.get(key) != value}
    if differing or profiled.counts is None:
        what = ", ".join(f"{key} {got!r} (not {want!r})" for key, (got, want) in differing.items()) or "no counts"
        raise InvalidInputError(f"The profile given to roofline() was taken of something else: {what}.")


def roofline(model, batch_size: int, device: str | torch.device | None = None, seq_len: int | None = None,
             peaks: dict | None = None, *, timing: TimingConfig | None = None, peak_source: str = "measured",
             compute_dtype: torch.dtype | str | None = None, profiled: ProfileResult | None = None) -> RooflineResult:
    """Roofline of ``model`` at ``batch_size`` on ``device`` (default: the model's device).

    ``peaks``: a :func:`infopt.analyze.peaks.device_peaks` dict (measured now if
    omitted). ``peak_source``: ``"measured"`` (default) or ``"theoretical"``
    roofs. ``compute_dtype``: dtype whose compute peak applies (default: the
    model's parameter dtype). ``timing``: config for the whole-model latency. ``profiled``: a
    :func:`infopt.analyze.profiling.profile_model` result of this model at this batch size already taken (the
    profile notebook's), whose counts and module and operator times are used instead of profiling again (a
    full-size gpt2 profile takes 14 s on a 2-core CPU); refused when it was taken of anything else.
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
        raise InvalidInputError(f"The peaks hold no {peak_source} {dtype} compute rate and bandwidth for "
                                f"{peaks.get('device')}: measure them with device_peaks(..., dtypes=['{dtype}']).")

    if profiled is None:
        profiled = profile_model(model, batch_size, None, seq_len)
    else:
        check_profile_matches(profiled, model, batch_size, seq_len)
    counts = profiled.counts
    time_column = {"cuda": "inclusive_device_ms"}.get(kind, "inclusive_cpu_ms")
    op_time_column = {"cuda": "device_ms"}.get(kind, "cpu_ms")
    notes = [
        f"bytes: {BYTES_DEFINITION}; operational intensity is therefore a lower bound.",
        "FLOPs: 2 x multiply-adds from infopt.flops formulas; element-wise operators have no formula "
        "(0 FLOPs), so their points sit at intensity 0 and have no roof fraction.",
        f"roof = min(peak {dtype} FLOP/s ({_peak_kernel(peaks, dtype, peak_source) or peak_source}), "
        f"intensity x copy bandwidth), {peak_source} peaks; "
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
    candidates = reduced_flop_candidates(model.module)
    modules = _explain_above_roof(modules, modules["module"], candidates)

    operators = counts.operators.merge(profiled.counted_operator_times, on="operator", how="left")
    operator_times = operators[op_time_column] if kind != "mps" else pd.Series(float("nan"), index=operators.index)
    operators = _add_roofline_columns(operators.drop(columns=["cpu_ms", "device_ms"]), operator_times,
                                      peak, bandwidth)
    operators = _explain_above_roof(operators, operators["operator"], candidates)

    inputs = model.prepare_input(batch_size, seq_len)
    latency = measure(lambda: model.forward(inputs), target, timing or TimingConfig())
    whole = pd.DataFrame([{"flops": counts.total_flops, "bytes": counts.total_bytes}])
    whole = _add_roofline_columns(whole, pd.Series([latency.median_ms]), peak, bandwidth)
    whole = _explain_above_roof(whole, pd.Series([ROOT_NAME]), candidates).iloc[0].to_dict()
    min_bytes = _model_io_bytes(model, inputs)
    whole_model = {
        "model": model.name, "device": str(target), "variant": model.variant, "batch_size": batch_size,
        "seq_len": resolve_seq_len(model, seq_len), "dtype": dtype,
        "flops": counts.total_flops, "flops_per_sample": counts.total_flops / batch_size,
        "bytes": counts.total_bytes, "operational_intensity": whole["operational_intensity"],
        "min_bytes": min_bytes, "max_operational_intensity": counts.total_flops / min_bytes,
        "time_ms": latency.median_ms, "time_ci_low_ms": latency.ci_low_ms, "time_ci_high_ms": latency.ci_high_ms,
        "time_converged": latency.converged, "profiled_time_ms": profiled.overhead["profiled_wall_ms_per_step"],
        "achieved_flops_per_s": whole["achieved_flops_per_s"], "achieved_bytes_per_s": whole["achieved_bytes_per_s"],
        "roof_flops_per_s": whole["roof_flops_per_s"], "roof_fraction": whole["roof_fraction"],
        "bound": whole["bound"], "peak_flops_per_s": peak, "peak_bandwidth_bytes_per_s": bandwidth,
        "ridge_point": peak / bandwidth, "peak_source": peak_source, "roof_note": whole["roof_note"],
        "peak_kernel": _peak_kernel(peaks, dtype, peak_source),
        "min_bytes_definition": "weights + inputs + output, each moved once: a lower bound on DRAM traffic",
    }
    result = RooflineResult(
        modules=modules, operators=operators, whole_model=whole_model, peaks=peaks, notes=notes,
        config={"model": model.name, "device": str(target), "batch_size": batch_size,
                "seq_len": resolve_seq_len(model, seq_len),
                "dtype": dtype, "peak_source": peak_source, "time_basis": time_column if kind != "mps" else None},
    )
    above = result.points_above_roof()
    explained = above[above["roof_note"].str.startswith(REDUCED_FLOP_NOTE[:20])]
    unexplained = above.drop(explained.index)
    if not explained.empty:
        notes.append(f"{len(explained)} convolution point(s) sit more than {ROOF_TOLERANCE - 1:.0%} above their "
                     f"roof at the nominal FLOP count ({', '.join(map(str, explained['name'].head(5)))}): "
                     "Winograd/FFT-style kernels do fewer FLOPs than counted; see roof_note.")
    if not unexplained.empty:
        notes.append(f"WARNING: {len(unexplained)} point(s) sit more than {ROOF_TOLERANCE - 1:.0%} above their roof "
                     f"({', '.join(map(str, unexplained['name'].head(5)))}): the peaks were measured lower than "
                     "these kernels ran (a busy machine while measuring peaks?) or a count is wrong; re-measure the "
                     "peaks.")
    return result


def _peak_kernel(peaks: dict, dtype: str, source: str) -> str | None:
    """The kernel that set the measured peak (``None`` for theoretical roofs or older peaks files)."""
    if source != "measured":
        return None
    return peaks.get("compute", {}).get(dtype, {}).get("kernel")
