"""One model (or variant) served: SingleStream, a low-rate Server run, then the batcher grid (max batch x max
wait), each setting's Offline throughput and its Server peak under the bound; token latencies for causal LMs.

The grid runs in the order given until its time budget is spent; settings left out are reported, never guessed.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd

from infopt.serve.batcher import DynamicBatcher, check_batcher_limits
from infopt.serve.queueing import md1_peak_rate
from infopt.serve.scenarios import ScenarioRunner, lowest_testable_qps, max_test_s, min_query_count
from infopt.serve.settings import ServeSettings
from infopt.serve.sut import QueryPayload, SampleLibrary, batch_buckets, model_batch_runner, warm_up_sizes

#: The low-rate Server run offers this share of one batch-1 worker's capacity (1 / SingleStream p50), for at least
#: this many queries (a median of a handful of requests would decide the low-rate check by chance).
LOW_RATE_UTILISATION = 0.1
LOW_RATE_MIN_QUERIES = 20
#: ... but no longer than this, down to a floor of queries: at 10% utilisation a model of 400 ms a call (gpt2 on a
#: 2-core CPU) took 80 s for 20 queries.
LOW_RATE_MAX_S = 15.0
LOW_RATE_FLOOR_QUERIES = 5


def batcher_grid(settings: ServeSettings) -> list[tuple[int, float]]:
    """(max batch, max wait ms) pairs; a max batch of 1 needs no wait, so it appears once with 0 ms."""
    pairs = []
    for max_batch in settings.max_batches:
        for wait in ((0.0,) if max_batch == 1 else settings.max_waits_ms):
            if (max_batch, wait) not in pairs:
                pairs.append((max_batch, wait))
    return pairs


def bound_out_of_reach(single_stream: dict, settings: ServeSettings) -> str | None:
    """Why no Server rate can meet the bound, or ``None``: SingleStream (one query at a time, no queue) already
    exceeds it at the bound's own percentile, and queueing or batching only add to a request's latency, so
    the Server search would spend its minimum query counts (minutes on a slow model) to find nothing."""
    latency = single_stream.get("latency_at_percentile_ms")
    if latency is None or single_stream.get("error") or not latency > settings.bound_ms:
        return None
    return (f"not searched: SingleStream's p{settings.percentile:g} is already {latency:.4g} ms, above the "
            f"{settings.bound_ms:g} ms bound with no queue, so no arrival rate can meet it")


def _tag(rows: list[dict], **extra) -> list[dict]:
    return [{**row, **extra} for row in rows]


def serve_model(model, variant: str, settings: ServeSettings, log_root: str | Path, *, seq_len: int | None = None,
                grid_budget_s: float = 60.0, new_tokens: int = 8, token_latencies: bool = True) -> pd.DataFrame:
    """Every serving row of one model or variant (``variant`` labels the rows and the log folders).
    ``token_latencies``: also the token scenario for a causal LM (the notebook asks it of eager fp32, whose
    ``generate`` path is the model's own)."""
    library = SampleLibrary(model, settings.samples, seq_len, settings.seed)
    run_batch = model_batch_runner(model, library)
    first_warm_up_s = warm_up_sizes(run_batch, [1])  # before LoadGen's clock starts (a compiled one: compiles)
    static_shapes = bool(getattr(model, "compiled", False))  # one compiled graph per batch size
    rows: list[dict] = []
    log_root = Path(log_root)

    # batchers serve in this thread while LoadGen runs its test (infopt.serve.sut.run_loadgen): no worker thread
    single = DynamicBatcher(run_batch, 1, 0.0)
    runner = ScenarioRunner(single, library.count, settings, log_root, variant)
    base_latency_s, unreachable = None, None
    if "single-stream" in settings.scenarios:
        rows.append(runner.single_stream())
        base_latency_s = (rows[-1].get("latency_p50_ms") or 0) / 1000.0 or None
        unreachable = bound_out_of_reach(rows[-1], settings)
    if base_latency_s is None:
        start = time.perf_counter()
        run_batch([QueryPayload(-1, 0)])
        base_latency_s = time.perf_counter() - start
    if "server" in settings.scenarios:
        low_rate = LOW_RATE_UTILISATION / base_latency_s
        queries = max(LOW_RATE_FLOOR_QUERIES, min(LOW_RATE_MIN_QUERIES, settings.min_queries,
                                                  int(low_rate * LOW_RATE_MAX_S)))
        low = runner.server(low_rate, tag="-low-rate", judged=False, min_queries=queries)
        low["role"] = "low-rate"
        limits = check_batcher_limits(runner.runs[-1].batches, 1, 0.0)
        rows.append({**low, **{f"batcher_{k}": v for k, v in limits.items()}})

    grid = batcher_grid(settings) if ("server" in settings.scenarios or "offline" in settings.scenarios) else []
    started, skipped, warmed = time.perf_counter(), [], {1}
    for max_batch, wait_ms in grid:
        spent = time.perf_counter() - started
        if spent > grid_budget_s:
            skipped.append((max_batch, wait_ms, f"not measured: the grid's budget of {grid_budget_s:g} s was spent"))
            continue
        buckets = batch_buckets(max_batch) if static_shapes else None
        sizes = [size for size in (buckets or [max_batch]) if size not in warmed]  # a size warmed once stays warm
        if buckets and sizes and spent + first_warm_up_s * len(sizes) > grid_budget_s:
            skipped.append((max_batch, wait_ms, f"not measured: compiling batch sizes {', '.join(map(str, sizes))} "
                            f"(batch 1 took {first_warm_up_s:.0f} s) would overrun the grid's budget of "
                            f"{grid_budget_s:g} s"))
            continue
        batched = model_batch_runner(model, library, buckets) if buckets else run_batch
        warm_up_s = warm_up_sizes(batched, sizes)
        warmed.update(sizes)
        batcher = DynamicBatcher(batched, max_batch, wait_ms / 1000.0)
        runner = ScenarioRunner(batcher, library.count, settings, log_root, f"{variant}-b{max_batch}-w{wait_ms:g}")
        offline = runner.offline(expected_qps=1.0 / base_latency_s)  # batch-1 rate; rerun at 1.5x if short
        offline.update(role="offline", warm_up_s=warm_up_s,
                       padded_to=",".join(map(str, buckets)) if buckets else None)
        rows.append(offline)
        if "server" not in settings.scenarios or not offline.get("achieved_qps"):
            continue
        capacity = offline["achieved_qps"]
        untestable = unreachable or _below_the_floor(capacity, settings)
        if untestable:
            rows.append(_peak_row(max_batch, wait_ms, capacity, settings, None, error=untestable))
            continue
        estimate = md1_peak_rate(base_latency_s, settings.bound_s, settings.percentile)
        peak, tests = runner.find_peak(estimate, capacity)
        limits = check_batcher_limits(runner.runs[-1].batches, max_batch, wait_ms / 1000.0)
        tests = _tag(tests, role="bisection", offline_qps=capacity)
        tests[-1].update({f"batcher_{k}": v for k, v in limits.items()})
        rows.extend(tests)
        rows.append(_peak_row(max_batch, wait_ms, capacity, settings, peak, md1_estimate_qps=estimate,
                              verdict_basis=tests[-1].get("verdict_basis"),
                              error=None if peak is not None else _below_the_search(tests, estimate, settings)))
    for max_batch, wait_ms, reason in skipped:
        rows.append({"scenario": "server", "role": "skipped", "max_batch": max_batch, "max_wait_ms": wait_ms,
                     "error": reason})

    if token_latencies and "server-tokens" in settings.scenarios and getattr(model, "is_causal_lm", False):
        rows.extend(_token_rows(model, variant, settings, log_root, library, new_tokens))
    frame = pd.DataFrame(rows)
    frame.insert(0, "variant", variant)
    return frame


def _peak_row(max_batch: int, wait_ms: float, capacity: float, settings: ServeSettings, peak: float | None,
              **fields) -> dict:
    """The ``peak`` row of one batcher setting: its peak QPS under the bound (``None``: none; ``error`` says why)."""
    return {"scenario": "server", "role": "peak", "max_batch": max_batch, "max_wait_ms": wait_ms, "peak_qps": peak,
            "offline_qps": capacity, "bound_ms": settings.bound_ms, "percentile": settings.percentile,
            "meets_bound": peak is not None, **fields}


def _test_cap(settings: ServeSettings) -> str:
    """Why low rates go untested, in the words both messages below use."""
    return (f"LoadGen's {min_query_count(settings)} minimum queries take more than the {max_test_s(settings):g} s "
            "one test may last (--param max_test_s)")


def _below_the_search(tests: list[dict], estimate: float, settings: ServeSettings) -> str:
    """Why no peak: every tested rate failed, and lower ones would take longer than one test may."""
    prediction = f"M/D/1 from SingleStream's median predicts {estimate:.3g} QPS."
    confirms = [row for row in tests if row.get("search_phase") == "confirm"]
    if confirms:  # the screen found rates under the bound; LoadGen's strict test did not confirm them
        tried = " and ".join(f"{row['target_qps']:.3g} QPS ({_percentile_text(row, settings) or 'not measured'}, "
                             f"{row.get('loadgen_result')})" for row in confirms)
        return (f"no rate confirmed: short screen tests met the bound up to {confirms[0]['target_qps']:.3g} QPS, but "
                f"LoadGen's strict test at {tried} did not. {prediction}")
    lowest = min(tests, key=lambda row: row.get("target_qps") or math.inf)
    latency = _percentile_text(lowest, settings)
    more = lowest.get("early_stopping_more_queries")
    short = (f" (under the bound, but LoadGen's early stopping wanted {more:.0f} more queries than that test had, "
             "more than one test may take at that rate)"
             if lowest.get("latency_constraint_met") and isinstance(more, (int, float)) and more > 0 else "")
    return (f"no tested rate met it: the lowest, {lowest.get('target_qps', math.nan):.3g} QPS"
            f"{', ' + latency if latency else ''}{short}. Lower rates were not tested: {_test_cap(settings)}. "
            f"{prediction}")


def _percentile_text(row: dict, settings: ServeSettings) -> str | None:
    """``p99 91 ms``: a test's latency at the bound's percentile, or None when it has none."""
    at = row.get("latency_at_percentile_ms")
    return f"p{settings.percentile:g} {at:.0f} ms" if isinstance(at, (int, float)) and math.isfinite(at) else None


def _below_the_floor(capacity: float, settings: ServeSettings) -> str | None:
    """Why no Server rate can be tested, or ``None``: even the Offline throughput is below the lowest rate whose
    minimum queries fit in one test, so every rate the system could serve would take longer than a test may."""
    floor = lowest_testable_qps(settings)
    if capacity >= floor:
        return None
    return (f"not searched: the Offline throughput, {capacity:.3g} QPS, is below the lowest testable rate, "
            f"{floor:.3g} QPS: {_test_cap(settings)}")


def _token_rows(model, variant, settings, log_root, library, new_tokens) -> list[dict]:
    from infopt.serve.tokens import generation_batch_runner, time_one_generation

    service_s = time_one_generation(model, library, new_tokens)
    batcher = DynamicBatcher(generation_batch_runner(model, library, new_tokens), 1, 0.0)
    runner = ScenarioRunner(batcher, library.count, settings, log_root, f"{variant}-tokens", token_latencies=True)
    row = runner.server(0.5 / service_s, judged=False)
    row.update({"role": "tokens", "new_tokens": new_tokens, "generate_s": service_s})
    return [row]


def best_settings(frame: pd.DataFrame) -> pd.DataFrame:
    """Per variant, the batcher setting with the highest peak QPS under the bound (rows with role "peak")."""
    if "role" not in frame:
        return frame.iloc[0:0]
    peaks = frame[(frame["role"] == "peak") & frame["peak_qps"].notna()]
    if peaks.empty:
        return peaks
    return peaks.loc[peaks.groupby("variant")["peak_qps"].idxmax()].reset_index(drop=True)


__all__ = ["LOW_RATE_UTILISATION", "batcher_grid", "best_settings", "bound_out_of_reach", "serve_model"]
