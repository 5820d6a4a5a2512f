"""Where the time of a forward pass goes: operators, modules and framework overhead.

``profile_model`` runs ``torch.profiler`` over a few forward passes with a
schedule (skipped, warm-up and recorded steps), exports a Chrome/Perfetto
trace and turns the recorded events into tables:

- operators: every operator the profiler saw, with self and total time per
  step (and device time on CUDA), its share of the profiled wall time and the
  FLOPs counted for it (:mod:`infopt.analyze.opcount`);
- modules: each submodule's forward is wrapped in a ``record_function`` named
  ``module::<qualified name>`` by global module hooks, so its inclusive time
  (children included) and self time (children excluded) come from the same
  trace, with no extra stopwatch and no missing device synchronization;
- overhead, measured without double counting nested events: on CPU, the wall
  time of the recorded steps against the time spent inside operators (the
  sum of every operator's self time); the rest is framework and Python
  dispatch. On CUDA, the share of wall time during which the GPU runs a
  kernel or copy (union of their intervals), the rest being GPU idle time.

On MPS the profiler records host activity only: device kernel time is not
available there and is never shown.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function, schedule

from infopt.devices import device_kind, synchronize
from infopt.errors import InvalidInputError
from infopt.analyze.opcount import ROOT_NAME, ModuleScopes, OpCounts, count_model, fill_uncalled_containers, module_table_skeleton
from infopt.results import atomic_path
from infopt.measure.sweep import resolve_seq_len

MODULE_PREFIX = "module::"

# On a machine without CUDA, libkineto prints "USDT: profiler_start/stop" and "ERROR ... gpuGetDeviceCount failed
# with code 35" to the process's stderr at every profile: noise, not errors. Level 6 silences them; a user's own
# KINETO_LOG_LEVEL wins, and with CUDA present its messages stay visible (they may be real).
if not torch.cuda.is_available():
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")

CPU_OVERHEAD_DEFINITION = (
    "framework_and_python_fraction = 1 - operator time / wall time of the profiled steps, where operator time "
    "is the sum of the self time of every operator (= the union of outermost operator intervals: nested time "
    "is counted once). The remainder is time outside any operator: Python code, nn.Module call machinery, "
    "hooks and the profiler's own cost."
)
LEAF_DEFINITION = (
    "leaf_operator_fraction = time covered by operators with no child operator / wall time. A lower bound "
    "on kernel work: an operator that allocates its output through a child (aten::empty) is not a leaf, so "
    "its compute is left out; shown for reference, not as the overhead figure."
)
CUDA_OVERHEAD_DEFINITION = (
    "gpu_busy_fraction = (union of GPU kernel, memcpy and memset intervals) / (wall time of the profiled steps); "
    "gpu_idle_fraction = 1 - gpu_busy_fraction (time the GPU waits on the host)."
)
MPS_NOTE = (
    "MPS: torch.profiler records host (CPU) activity only; Metal kernel time is not available, so operator and "
    "module times are host-side dispatch/encoding times, not device execution times."
)

_DEVICE_ACTIVITY_TYPES = {"kernel", "gpu_memcpy", "gpu_memset"}


@dataclass
class ProfileResult:
    """Tables from one profiled run. Times are milliseconds per profiled step (mean over the active steps)."""

    operators: pd.DataFrame
    modules: pd.DataFrame
    overhead: dict
    trace_path: Path | None
    notes: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    #: Time of each operator as the FLOP/byte counter sees it (outermost dispatched call), for the roofline.
    counted_operator_times: pd.DataFrame | None = None
    counts: OpCounts | None = None


# --------------------------------------------------------------------------- events helpers

def _is_annotation(event) -> bool:
    """User annotations: module scopes, profiler steps and any other ``record_function``."""
    name = event.key  # FunctionEvent and FunctionEventAvg both have ``key``
    return bool(getattr(event, "is_user_annotation", False)) or name.startswith(MODULE_PREFIX) \
        or name.startswith("ProfilerStep")


def _is_host_event(event) -> bool:
    return event.device_type == DeviceType.CPU and not event.is_async


def _is_device_work(event) -> bool:
    if event.device_type == DeviceType.CPU:
        return False
    activity = getattr(event, "activity_type", None)
    if activity:
        return activity in _DEVICE_ACTIVITY_TYPES
    return not _is_annotation(event)


def _union_us(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of ``(start, end)`` intervals (overlaps counted once)."""
    total, current_start, current_end = 0.0, None, None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += current_end - current_start
    return total


def _clip(intervals, windows) -> list[tuple[float, float]]:
    clipped = []
    for start, end in intervals:
        for w_start, w_end in windows:
            lo, hi = max(start, w_start), min(end, w_end)
            if hi > lo:
                clipped.append((lo, hi))
    return clipped


def _nearest(event, predicate) -> list:
    """Nearest descendants of ``event`` (through its CPU children) that satisfy ``predicate``."""
    found, stack = [], list(event.cpu_children)
    while stack:
        child = stack.pop()
        if predicate(child):
            found.append(child)
        else:
            stack.extend(child.cpu_children)
    return found


def _outermost(events, predicate) -> list:
    """Events satisfying ``predicate`` that have no ancestor satisfying it."""
    found = []
    for event in events:
        if not predicate(event):
            continue
        parent = event.cpu_parent
        while parent is not None and not predicate(parent):
            parent = parent.cpu_parent
        if parent is None:
            found.append(event)
    return found


# --------------------------------------------------------------------------- tables

def _operator_table(prof, steps: int, wall_us: float, kind: str, counts: OpCounts | None,
                    record_memory: bool) -> pd.DataFrame:
    rows = []
    for avg in prof.key_averages():
        if _is_annotation(avg) or avg.key == "[memory]" or avg.device_type != DeviceType.CPU:
            continue
        row = {
            "operator": avg.key,
            "calls_per_step": avg.count / steps,
            "self_cpu_ms": avg.self_cpu_time_total / 1e3 / steps,
            "total_cpu_ms": avg.cpu_time_total / 1e3 / steps,
            "share_of_profiled_time": avg.self_cpu_time_total / wall_us if wall_us else float("nan"),
        }
        if kind == "cuda":
            row["self_device_ms"] = avg.self_device_time_total / 1e3 / steps
            row["total_device_ms"] = avg.device_time_total / 1e3 / steps
            row["device_share_of_profiled_time"] = avg.self_device_time_total / wall_us if wall_us else float("nan")
        if record_memory:
            row["self_cpu_memory_mb"] = avg.self_cpu_memory_usage / 2**20 / steps
            if kind == "cuda":
                row["self_device_memory_mb"] = avg.self_device_memory_usage / 2**20 / steps
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    flops = {} if counts is None else {name: value for name, value
                                       in zip(counts.operators["operator"], counts.operators["flops"]) if value}
    table["flops_per_step"] = table["operator"].map(flops).astype("Float64")  # <NA>: no FLOP formula
    sort_by = "self_device_ms" if kind == "cuda" else "self_cpu_ms"
    return table.sort_values(sort_by, ascending=False, ignore_index=True)


def _module_table(module: torch.nn.Module, events, steps: int, wall_us: float, kind: str) -> pd.DataFrame:
    is_module = lambda e: e.name.startswith(MODULE_PREFIX) and _is_host_event(e)  # noqa: E731
    totals: dict[str, dict] = {}
    for event in events:
        if not is_module(event):
            continue
        name = event.name[len(MODULE_PREFIX):]
        children = _nearest(event, is_module)
        entry = totals.setdefault(name, {"calls": 0, "cpu": 0.0, "self_cpu": 0.0, "dev": 0.0, "self_dev": 0.0})
        entry["calls"] += 1
        entry["cpu"] += event.cpu_time_total
        entry["self_cpu"] += event.cpu_time_total - sum(c.cpu_time_total for c in children)
        if kind == "cuda":
            entry["dev"] += event.device_time_total
            entry["self_dev"] += event.device_time_total - sum(c.device_time_total for c in children)
    table = module_table_skeleton(module)
    get = lambda key: table["module"].map(lambda n: totals.get(n, {}).get(key, 0.0))  # noqa: E731
    table["calls_per_step"] = get("calls") / steps
    table["inclusive_cpu_ms"] = get("cpu") / 1e3 / steps
    table["self_cpu_ms"] = get("self_cpu") / 1e3 / steps
    table["share_of_profiled_time"] = get("cpu") / wall_us if wall_us else float("nan")
    table["self_share_of_profiled_time"] = get("self_cpu") / wall_us if wall_us else float("nan")
    if kind == "cuda":
        table["inclusive_device_ms"] = get("dev") / 1e3 / steps
        table["self_device_ms"] = get("self_dev") / 1e3 / steps
    table["calls"] = table["calls_per_step"]
    inclusive = ["inclusive_cpu_ms", "share_of_profiled_time"] + (["inclusive_device_ms"] if kind == "cuda" else [])
    return add_stack_column(module, fill_uncalled_containers(table, inclusive).drop(columns="calls"))


def _stack_prefixes(module: torch.nn.Module) -> dict[str, str]:
    """An encoder-decoder's encoder and decoder module names (``{"encoder.": "encoder", ...}``), else empty."""
    if not getattr(getattr(module, "config", None), "is_encoder_decoder", False):
        return {}
    parts = {"encoder": getattr(module, "get_encoder", lambda: None)(),
             "decoder": getattr(module, "get_decoder", lambda: None)()}
    prefixes = {}
    for name, child in module.named_modules():
        for stack, part in parts.items():
            if name and child is part and stack not in prefixes.values():
                prefixes[name] = stack
    return prefixes if len(prefixes) == 2 else {}


def add_stack_column(module: torch.nn.Module, table: pd.DataFrame) -> pd.DataFrame:
    """Encoder-decoders: a ``stack`` column, ``encoder`` / ``decoder`` for the modules inside each stack and
    ``shared`` for the rest (shared embeddings, the output head, the root), so the two groups read apart."""
    prefixes = _stack_prefixes(module)
    if not prefixes:
        return table

    def stack(name: str) -> str:
        return next((s for p, s in prefixes.items() if name == p or name.startswith(p + ".")), "shared")

    table = table.copy()
    table.insert(1, "stack", table["module"].map(stack))
    return table


def stack_totals(modules: pd.DataFrame) -> pd.DataFrame:
    """Self time per stack (encoder, decoder, shared) of a module table with a ``stack`` column; empty without."""
    if modules is None or "stack" not in modules:
        return pd.DataFrame()
    times = [c for c in ("self_cpu_ms", "self_device_ms", "self_share_of_profiled_time") if c in modules]
    totals = modules.groupby("stack", sort=False)[times].sum().reset_index()
    totals["modules"] = modules.groupby("stack", sort=False).size().values
    return totals


#: Operators the counting mode sees through a Python decomposition, and the eager operator that runs instead.
_EAGER_EQUIVALENT = {"aten::_native_batch_norm_legit_no_training": "aten::batch_norm"}


def _counted_operator_times(events, names: set[str], steps: int, kind: str) -> pd.DataFrame:
    """Per counted operator: time of its outermost calls (what the counting mode attributed FLOPs/bytes to)."""
    eager_to_counted = {_EAGER_EQUIVALENT.get(name, name): name for name in names}
    chosen = _outermost([e for e in events if _is_host_event(e)], lambda e: e.name in eager_to_counted)
    rows: dict[str, dict] = {}
    for event in chosen:
        counted = eager_to_counted[event.name]
        row = rows.setdefault(counted, {"operator": counted, "calls_per_step": 0.0, "cpu_ms": 0.0,
                                           "device_ms": 0.0})
        row["calls_per_step"] += 1 / steps
        row["cpu_ms"] += event.cpu_time_total / 1e3 / steps
        if kind == "cuda":
            row["device_ms"] += event.device_time_total / 1e3 / steps
    table = pd.DataFrame(list(rows.values()), columns=["operator", "calls_per_step", "cpu_ms", "device_ms"])
    if kind != "cuda":
        table["device_ms"] = float("nan")
    return table


def _overhead(events, windows: list[tuple[float, float]], steps: int, kind: str) -> dict:
    wall_us = sum(end - start for start, end in windows)
    is_op = lambda e: _is_host_event(e) and not _is_annotation(e) and e.name != "[memory]"  # noqa: E731
    ops = [e for e in events if is_op(e)]
    outermost = _outermost(ops, is_op)
    inside_us = _union_us(_clip([(e.time_range.start, e.time_range.end) for e in outermost], windows))
    leaves = [(e.time_range.start, e.time_range.end) for e in ops if not any(map(is_op, e.cpu_children))]
    leaf_us = _union_us(_clip(leaves, windows))
    fraction = lambda part: part / wall_us if wall_us else float("nan")  # noqa: E731
    result = {
        "device_kind": kind,
        "profiled_steps": steps,
        "profiled_wall_ms_per_step": wall_us / 1e3 / steps,
        "operator_ms_per_step": inside_us / 1e3 / steps,
        "framework_and_python_ms_per_step": (wall_us - inside_us) / 1e3 / steps,
        "framework_and_python_fraction": fraction(wall_us - inside_us),
        "definition": CPU_OVERHEAD_DEFINITION,
        "leaf_operator_ms_per_step": leaf_us / 1e3 / steps,
        "leaf_operator_fraction": fraction(leaf_us),
        "leaf_definition": LEAF_DEFINITION,
    }
    if kind == "cuda":
        device = [(e.time_range.start, e.time_range.end) for e in events if _is_device_work(e)]
        busy_us = _union_us(_clip(device, windows))
        result.update({
            "gpu_busy_ms_per_step": busy_us / 1e3 / steps,
            "gpu_busy_fraction": fraction(busy_us),
            "gpu_idle_fraction": 1 - fraction(busy_us),
            "gpu_definition": CUDA_OVERHEAD_DEFINITION,
        })
    elif kind == "mps":
        result["note"] = MPS_NOTE + " The operator split above is host time only."
    return result


# --------------------------------------------------------------------------- running

class _ModuleAnnotations:
    """Opens ``record_function("module::<name>")`` around each submodule's forward."""

    def __init__(self, module: torch.nn.Module):
        self.open: list[tuple[str, record_function]] = []
        self.scopes = ModuleScopes(module, self._enter, self._exit)

    def _enter(self, name: str) -> None:
        scope = record_function(MODULE_PREFIX + name)
        scope.__enter__()
        self.open.append((name, scope))

    def _exit(self, name: str) -> None:
        while self.open:
            open_name, scope = self.open.pop()
            scope.__exit__(None, None, None)
            if open_name == name:
                break

    def __enter__(self):
        self.scopes.__enter__()
        return self

    def __exit__(self, *exc):
        try:
            while self.open:  # scopes left open by an exception inside a forward
                self.open.pop()[1].__exit__(None, None, None)
        finally:
            self.scopes.__exit__(*exc)


def _check_schedule(wait: int, warmup: int, active: int) -> None:
    for name, value in (("wait", wait), ("warmup", warmup), ("active", active)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInputError(f"Profiler schedule '{name}' must be a non-negative integer, got {value!r}.")
    if active < 1:
        raise InvalidInputError(f"Profiler schedule needs at least one active step, got active={active}.")


def _write_trace(prof, path: Path) -> None:
    """Export the Chrome/Perfetto trace atomically (temporary file, then rename)."""
    with atomic_path(path) as temporary:
        prof.export_chrome_trace(str(temporary))


def run_profiler(model, inputs: dict, *, wait: int = 1, warmup: int = 2, active: int = 3,
                 record_memory: bool = False, with_stack: bool = False, trace_path: Path | None = None):
    """Profile ``model.forward(inputs)`` over ``wait + warmup + active`` steps.

    Returns ``(profiler, step_windows_us, host_wall_s)``: the finished profiler,
    the ``(start, end)`` of each recorded step on the trace's clock, and the
    perf_counter wall time of each recorded step.
    """
    _check_schedule(wait, warmup, active)
    device = model.device
    kind = device_kind(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if kind == "cuda" else [])

    def on_ready(prof) -> None:
        if trace_path is not None:
            _write_trace(prof, trace_path)

    host_wall_s: list[float] = []
    with torch.inference_mode(), _ModuleAnnotations(model.module):
        with profile(activities=activities, schedule=schedule(wait=wait, warmup=warmup, active=active, repeat=1),
                     on_trace_ready=on_ready, record_shapes=True, profile_memory=record_memory,
                     with_stack=with_stack) as prof:
            for step in range(wait + warmup + active):
                start = time.perf_counter()
                model.forward(inputs)
                synchronize(device)
                if step >= wait + warmup:
                    host_wall_s.append(time.perf_counter() - start)
                prof.step()
    events = prof.events()
    windows = sorted((e.time_range.start, e.time_range.end) for e in events
                     if e.name.startswith("ProfilerStep") and _is_host_event(e))
    return prof, windows, host_wall_s


def profile_model(model, batch_size: int, out_dir: str | os.PathLike | None, seq_len: int | None = None, *,
                  wait: int = 1, warmup: int = 2, active: int = 3, record_memory: bool = False,
                  with_stack: bool = False) -> ProfileResult:
    """Profile ``active`` forward passes of ``model`` at ``batch_size`` and explain where time went.

    Writes ``out_dir/trace.json`` (Chrome trace format, opens in Perfetto or
    chrome://tracing; replaced if present); ``out_dir=None`` skips the trace.
    ``record_memory`` and ``with_stack`` add allocation and Python stack
    records to the trace (off by default: they make it large and slow).
    """
    kind = device_kind(model.device)
    inputs = model.prepare_input(batch_size, seq_len)
    counts = count_model(model, batch_size, seq_len)
    trace_path = Path(out_dir) / "trace.json" if out_dir is not None else None
    prof, windows, host_wall_s = run_profiler(model, inputs, wait=wait, warmup=warmup, active=active,
                                              record_memory=record_memory, with_stack=with_stack,
                                              trace_path=trace_path)
    events = prof.events()
    steps = len(windows) or active
    wall_us = sum(end - start for start, end in windows)
    notes = [
        "Times are per profiled step (mean over the active steps), measured with the profiler and module "
        "annotations on; they are slower than unprofiled runs (see the benchmark for latency).",
        "operators: self time excludes child operators, total time includes them; shares use self time, so "
        "they never count the same time twice.",
        "modules: inclusive time includes submodules, self time excludes them; the module '" + ROOT_NAME
        + "' is the whole model.",
        "flops_per_step: FLOPs counted by infopt.flops formulas (2 x multiply-adds) on the operator that "
        "received them at dispatch; <NA> where no formula exists (for example element-wise operators).",
    ]
    if kind == "mps":
        notes.append(MPS_NOTE)
    if kind == "cuda":
        notes.append("CUDA: device times are GPU kernel durations launched from the operator or module "
                     "(attributed through the launch correlation); CPU times are host launch times.")
    overhead = _overhead(events, windows, steps, kind)
    overhead["host_wall_ms_per_step_unannotated_clock"] = 1e3 * sum(host_wall_s) / max(1, len(host_wall_s))
    modules = _module_table(model.module, events, steps, wall_us, kind)
    return ProfileResult(
        operators=_operator_table(prof, steps, wall_us, kind, counts, record_memory),
        modules=modules,
        overhead=overhead,
        trace_path=trace_path,
        notes=notes,
        config={"model": model.name, "device": str(model.device), "variant": model.variant,
                "batch_size": batch_size, "seq_len": resolve_seq_len(model, seq_len), "wait": wait,
                "warmup": warmup, "active": active, "record_memory": record_memory, "with_stack": with_stack,
                "torch_threads": torch.get_num_threads()},
        counted_operator_times=_counted_operator_times(events, set(counts.operators["operator"]), steps, kind),
        counts=counts,
    )


def python_hotspots(model, batch_size: int, seq_len: int | None = None, *, calls: int = 3,
                    top: int = 25) -> pd.DataFrame:
    """cProfile view of the Python functions a forward spends time in (cumulative per call).

    This shows *where* Python time goes; it is not an overhead percentage
    (cProfile's own cost inflates every Python call). Use
    :func:`profile_model`'s ``overhead`` for that.
    """
    inputs = model.prepare_input(batch_size, seq_len)
    profiler = cProfile.Profile()
    with torch.inference_mode():
        model.forward(inputs)
        synchronize(model.device)
        profiler.enable()
        for _ in range(calls):
            model.forward(inputs)
        synchronize(model.device)
        profiler.disable()
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, function), (_, ncalls, tottime, cumtime, _) in stats.stats.items():
        rows.append({"function": function, "location": f"{filename}:{line}", "calls_per_forward": ncalls / calls,
                     "self_ms_per_forward": 1e3 * tottime / calls, "cumulative_ms_per_forward": 1e3 * cumtime / calls})
    table = pd.DataFrame(rows).sort_values("self_ms_per_forward", ascending=False, ignore_index=True)
    return table.head(top)
