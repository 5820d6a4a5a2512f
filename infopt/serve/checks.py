"""The consistency checks printed with the serving results: each a row with the figures compared, the
tolerance, whether it held, and why it may not have.

* the Server peak under the bound never exceeds the Offline throughput of the same batcher setting;
* at a low arrival rate the Server p50 equals the benchmark notebook's batch-1 median within 15%;
* Little's law: requests in the system (from each request's arrival and completion) = LoadGen's arrival rate
  x LoadGen's mean latency, within 10%;
* the batcher never exceeds its maximum batch and never holds a request longer than its maximum wait plus one
  batch time.
"""

from __future__ import annotations

import pandas as pd

from infopt.optimize.registry import BASELINE

LOW_RATE_TOLERANCE = 0.15
LITTLES_LAW_TOLERANCE = 0.10
#: Server runs with fewer completed requests are left out of the Little's-law check.
LITTLES_LAW_MIN_QUERIES = 30


def _rows(frame: pd.DataFrame, role: str) -> pd.DataFrame:
    return frame[frame["role"] == role] if "role" in frame else frame.iloc[0:0]


def consistency_checks(frame: pd.DataFrame, batch1_ms: dict | float | None = None) -> pd.DataFrame:
    """One row per check and variant: ``check``, ``variant``, ``observed``, ``expected``, ``ok``, ``note``.

    ``batch1_ms``: per variant, ``(batch-1 median ms, the notebook that timed it)``
    (:func:`infopt.serve.sources.batch1_medians_ms`); a number is eager fp32's, from the benchmark notebook."""
    if batch1_ms is not None and not isinstance(batch1_ms, dict):
        batch1_ms = {BASELINE: (float(batch1_ms), "benchmark")}
    batch1_ms = batch1_ms or {}
    out = []
    for _, peak in _rows(frame, "peak").iterrows():
        if pd.isna(peak.get("peak_qps")):
            continue
        out.append({"check": "server peak <= offline throughput", "variant": peak["variant"],
                    "setting": f"b{peak['max_batch']} w{peak['max_wait_ms']:g}ms", "observed": peak["peak_qps"],
                    "expected": peak["offline_qps"], "ok": bool(peak["peak_qps"] <= peak["offline_qps"] * 1.0001),
                    "note": "the bisection's upper end is the offline throughput, so a peak above it is a bug"})
    for _, low in _rows(frame, "low-rate").iterrows():
        observed = low.get("latency_p50_ms")
        variant = low.get("variant", BASELINE)
        expected, notebook = batch1_ms.get(variant, (None, None))
        if expected and observed:
            gap = abs(observed - expected) / expected
            ok = gap <= LOW_RATE_TOLERANCE
            note = (f"within {LOW_RATE_TOLERANCE:.0%} of the {notebook} notebook's" if ok else
                    f"{gap:.0%} apart from the {notebook} notebook's over {low.get('queries', 0):.0f} queries: the "
                    "server path adds the batcher's queue hand-off, LoadGen's callbacks and thread wake-ups to each "
                    "forward, and LoadGen's own threads share the cores with the model's; a busy machine or a "
                    "different thread count moves either figure")
        else:
            ok, note = None, f"no batch-1 median of {variant} in this run folder (benchmark or optimize notebook)"
        out.append({"check": "low-rate server p50 = batch-1 median (15%)", "variant": variant,
                    "setting": f"{low.get('target_qps', 0):.3g} qps", "observed": observed,
                    "expected": expected, "ok": ok, "note": note})
    # steady state only: a run over capacity never drains, so its mean latency and occupancy keep growing
    # and enough requests that the window's two edges (filling, draining) do not dominate the average
    servers = (frame[frame["littles_relative_gap"].notna() & (frame["meets_bound"] == True)  # noqa: E712
                     & (frame["queries"] >= LITTLES_LAW_MIN_QUERIES)]
               if "littles_relative_gap" in frame else frame.iloc[0:0])
    for variant, group in servers.groupby("variant"):
        worst = group.loc[group["littles_relative_gap"].idxmax()]
        out.append({"check": "Little's law (10%)", "variant": variant,
                    "setting": f"worst of {len(group)} Server runs", "observed": worst["littles_in_system_measured"],
                    "expected": worst["littles_in_system_predicted"],
                    "ok": bool(worst["littles_relative_gap"] <= LITTLES_LAW_TOLERANCE),
                    "note": f"relative gap {worst['littles_relative_gap']:.1%} at {worst.get('target_qps', 0):.3g} qps "
                            "(measured: requests' time in the system / window; predicted: LoadGen's scheduled rate "
                            "x its mean latency)"})
    limits = frame[frame["batcher_ok"].notna()] if "batcher_ok" in frame else frame.iloc[0:0]
    for _, row in limits.iterrows():
        out.append({"check": "batcher limits", "variant": row["variant"],
                    "setting": f"b{row['max_batch']} w{row['max_wait_ms']:g}ms", "observed": row["batcher_largest_batch"],
                    "expected": row["max_batch"], "ok": bool(row["batcher_ok"]),
                    "note": f"{int(row['batcher_late_requests'])} requests held past max wait + one batch; "
                            f"{int(row['batcher_backlogged_requests'])} queued behind a full batch (load above "
                            "capacity, not a batcher fault)"})
    return pd.DataFrame(out, columns=["check", "variant", "setting", "observed", "expected", "ok", "note"])


__all__ = ["LITTLES_LAW_TOLERANCE", "LOW_RATE_TOLERANCE", "consistency_checks"]
