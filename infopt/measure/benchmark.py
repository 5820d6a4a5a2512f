"""Batch-size sweeps: one tidy row of latency, throughput and memory per point.

Each point is timed by :func:`infopt.measure.timing.measure` and then, in a separate
pass, measured for memory by :func:`infopt.measure.memtrack.measure_peak_memory`, so
memory tracking never perturbs latency. A point that runs out of memory is
recorded as ``status="oom"`` (larger batch sizes are ``"skipped"``); any other
failure is ``status="error"`` with its message; the sweep always goes on.

Memory: ``model_memory_mb`` = ``weight_memory_mb`` (weights as stored) + ``activation_memory_mb`` (the
memory pass's increase: activations and workspace) is the model's own footprint, the figure to compare across
devices; ``peak_memory_mb`` is what the method in ``memory_method`` sees (CPU: the whole process's resident set).

``interference`` / ``interference_detail``: whether other processes used the
machine while the point was timed (:mod:`infopt.measure.interference`).

Visits: a point whose calls are short (:data:`~infopt.measure.timing.SINGLE_VISIT_CALL_S`) is timed in
:data:`VISITS` passes over the sweep (each with its share of the time budget, each warmed up again), so its
samples come from moments a few batch sizes apart; the row keeps every sample, in order, with
``visit_samples`` (how many each visit gave) and ``visit_medians_ms``. A shared machine's slow spells
(measured here with one thread: 7-8% of 50 ms windows ran over 8% slow, weakly correlated beyond a quarter
second) then rarely cover a whole row, and a run-vs-run comparison can take the fastest visit
(:mod:`infopt.report.compare`).

Definitions: latencies are per forward call of the whole batch (ms);
``throughput_items_per_s = batch_size / mean latency``; ``tokens_per_s`` (text
models) ``= batch_size * seq_len / mean latency``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Iterable

import pandas as pd
import torch

from infopt.devices import synchronize
from infopt.measure import stats
from infopt.measure.interference import Interference, combine
from infopt.measure.memtrack import MIB, measure_peak_memory, release_memory
from infopt.presets import DEFAULT_BATCH_SIZES
from infopt.results import numeric_columns
from infopt.measure.sweep import Point, check_batch_sizes, run_points, validate_inputs
from infopt.measure.timing import TimingConfig, measure, recorded_failure, splits_budget, thread_count

#: Columns of :func:`run_batch_sweep`, in order (``samples_ms`` holds the raw per-call latencies).
BENCHMARK_COLUMNS = (
    "model", "device", "variant", "batch_size", "seq_len", "status", "error", "n_samples", "converged",
    "interference", "interference_detail",
    "latency_mean_ms", "latency_std_ms", "latency_min_ms", "latency_p50_ms", "latency_p90_ms", "latency_p95_ms",
    "latency_p99_ms", "latency_max_ms", "latency_ci_low_ms", "latency_ci_high_ms", "latency_iqr_ms", "latency_cv",
    "throughput_items_per_s", "tokens_per_s", "model_memory_mb", "weight_memory_mb", "peak_memory_mb",
    "activation_memory_mb", "baseline_memory_mb",
    "peak_reserved_mb", "memory_method", "warmup_calls", "warmup_stable", "stop_reason", "timer", "num_threads",
    "wall_time_s", "visit_medians_ms", "visit_samples", "samples_ms",
)
_STAT_COLUMNS = {"mean": "latency_mean_ms", "std": "latency_std_ms", "min": "latency_min_ms",
                 "p50": "latency_p50_ms", "p90": "latency_p90_ms", "p95": "latency_p95_ms", "p99": "latency_p99_ms",
                 "max": "latency_max_ms", "ci_low": "latency_ci_low_ms", "ci_high": "latency_ci_high_ms",
                 "iqr": "latency_iqr_ms", "cv": "latency_cv"}
#: How many calls the memory pass makes per point.
MEMORY_CALLS = 3
#: Passes over the sweep that share each short point's timing budget (see the module docstring).
VISITS = 2


def model_footprint(weight_bytes: int, activation_memory_mb: float) -> dict:
    """The model's own memory: its weights as stored plus the activations and workspace the pass added.

    The same sum on every device, so a CPU row (whose ``peak_memory_mb`` is the whole process's resident set:
    interpreter and libraries included) and a CUDA row (the allocator's tensors) compare like with like.
    """
    weights = weight_bytes / MIB
    return {"weight_memory_mb": weights, "model_memory_mb": weights + float(activation_memory_mb)}


def empty_row(point: Point, status: str, error: str | None = None) -> dict:
    """A :data:`BENCHMARK_COLUMNS` row for ``point`` with nothing measured yet."""
    row = dict.fromkeys(BENCHMARK_COLUMNS)
    row.update(point.identity(), status=status, error=error, n_samples=0, converged=False, samples_ms=[])
    return row


def benchmark_point(model, batch_size: int, seq_len: int | None = None, *, timing: TimingConfig | None = None,
                    measure_memory: bool = True) -> dict:
    """Time (then, separately, measure memory of) ``model.forward`` at one batch size.

    Invalid inputs raise :class:`~infopt.errors.InvalidInputError`; a failure while
    running is returned as a row with ``status`` ``"oom"`` or ``"error"``.
    """
    row = empty_row(Point.of(model, batch_size, seq_len), "ok")
    return time_visit(model, row, seq_len, timing or TimingConfig(), measure_memory)


def time_visit(model, row: dict, seq_len: int | None, timing: TimingConfig, measure_memory: bool = False) -> dict:
    """Time ``row``'s point once (a visit: :func:`add_visit`; ``seq_len`` as the caller gave it, so a wrong one is
    refused), then, with ``measure_memory``, its memory pass; a failure is recorded in ``row`` (``status``,
    ``error``) like any point's, and the inputs are released."""
    started = time.perf_counter()
    inputs = None
    try:
        with recorded_failure(row):
            inputs = model.prepare_input(int(row["batch_size"]), seq_len)
            add_visit(row, measure(lambda: model.forward(inputs), model.device, timing), model, inputs)
            if measure_memory:
                with thread_count(timing.num_threads):
                    row.update(measure_peak_memory(lambda: model.forward(inputs), model.device, calls=MEMORY_CALLS))
                row.update(model_footprint(model.weight_bytes(), row["activation_memory_mb"]))
    finally:
        del inputs
        release_memory(model.device, thorough=row["status"] != "ok")
    row["wall_time_s"] = (row.get("wall_time_s") or 0.0) + time.perf_counter() - started
    return row


def add_visit(row: dict, measurement, model, inputs) -> None:
    """Fold one visit's :class:`~infopt.measure.timing.Measurement` into ``row``: samples appended, statistics,
    throughput and flags over every visit so far."""
    samples = [*(row.get("samples_ms") or []), *measurement.samples_ms]
    first = not row.get("visit_samples")
    if first:
        row.update(warmup_stable=measurement.warmup_stable, timer=measurement.timer,
                   num_threads=measurement.num_threads)
    summary = stats.summarize(samples)
    row.update({column: summary[key] for key, column in _STAT_COLUMNS.items()})
    mean_s = summary["mean"] / 1e3
    tokens = model.tokens_per_batch(inputs)
    window = Interference(measurement.interference, measurement.interference_detail)
    if not first:  # one verdict for the row's windows, as for a variant's unpaired and paired ones
        window = combine([Interference(bool(row["interference"]), row["interference_detail"]), window])
    row.update(
        **window.columns(), samples_ms=samples, n_samples=summary["n"],
        # later visits: the whole row's median CI against the target (each visit had half the budget)
        converged=measurement.converged if first else
        bool(stats.relative_ci_halfwidth(samples) <= measurement.config.get("target_rel_ci", 0)),
        throughput_items_per_s=model.items_per_batch(inputs) / mean_s,
        tokens_per_s=None if tokens is None else tokens / mean_s,
        warmup_calls=measurement.warmup_calls + (0 if first else int(row["warmup_calls"])),
        stop_reason=measurement.stop_reason if first else f"{row['stop_reason']}; {measurement.stop_reason}",
        visit_samples=[*(row.get("visit_samples") or []), measurement.n],
        visit_medians_ms=[*(row.get("visit_medians_ms") or []), measurement.median_ms],
    )


def run_batch_sweep(model, batch_sizes: Iterable[int] = DEFAULT_BATCH_SIZES, seq_len: int | None = None, *,
                    timing: TimingConfig | None = None, measure_memory: bool = True,
                    visits: int = VISITS) -> pd.DataFrame:
    """One row per batch size (ascending); after an out-of-memory point, larger sizes are ``skipped``.

    Points whose budget splits (:func:`~infopt.measure.timing.splits_budget`: calls under
    :data:`~infopt.measure.timing.SINGLE_VISIT_CALL_S`) are timed in ``visits`` passes (module docstring); the
    others get their whole budget in the first."""
    sizes = check_batch_sizes(batch_sizes)
    validate_inputs(model, seq_len)  # invalid seq_len raises before anything runs; an OOM is the points'
    points = [Point.of(model, size, seq_len) for size in sizes]
    timing = dataclasses.replace(timing or TimingConfig(), visits=visits)
    rows = run_points(points, lambda point: benchmark_point(model, point.batch_size, seq_len, timing=timing,
                                                            measure_memory=measure_memory), empty_row)
    for _ in range(visits - 1):
        for row in rows:
            if row["status"] == "ok" and splits_budget(timing, row["visit_medians_ms"][0] / 1e3):
                time_visit(model, row, seq_len, timing)
    return numeric_columns(pd.DataFrame(rows, columns=list(BENCHMARK_COLUMNS)))


def cold_start(name: str, device: str | torch.device = "cpu", size: str = "full", **load_kwargs) -> dict:
    """Seconds to build/load a model and the latency of its very first call (batch 1).

    "Cold" means a new model instance: process-wide caches (libraries already
    imported, kernels already compiled for the same shapes by an earlier model)
    stay warm, so run this first in a fresh process for the truest figure.
    ``second_call_ms`` shows how much of the first call was one-off cost.
    """
    from infopt.models import load_model

    started = time.perf_counter()
    model = load_model(name, device, size=size, **load_kwargs)
    synchronize(model.device)
    load_s = time.perf_counter() - started
    inputs = model.prepare_input(1)
    calls_ms = []
    with torch.inference_mode():
        for _ in range(2):
            synchronize(model.device)
            call_started = time.perf_counter_ns()
            model.forward(inputs)
            synchronize(model.device)
            calls_ms.append((time.perf_counter_ns() - call_started) / 1e6)
    seq_len = int(inputs["input_ids"].shape[1]) if model.is_text else None
    return {"model": name, "device": str(model.device), "size": size, "variant": model.variant,
            "weights": model.weights, "batch_size": 1, "seq_len": seq_len, "load_s": load_s,
            "first_call_ms": calls_ms[0], "second_call_ms": calls_ms[1]}


def __getattr__(name: str):
    """``infopt.measure.benchmark.run_generation_sweep`` is re-exported lazily: it needs transformers, vision runs do not."""
    if name == "run_generation_sweep":
        from infopt.measure.generation import run_generation_sweep

        return run_generation_sweep
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BENCHMARK_COLUMNS", "VISITS", "add_visit", "benchmark_point", "cold_start", "empty_row", "model_footprint",
           "run_batch_sweep", "run_generation_sweep", "time_visit"]
