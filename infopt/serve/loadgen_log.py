"""Reading LoadGen's own log: the summary file's lines as numbers and verdicts, and Little's law checked on
the run's requests.

LoadGen writes ``mlperf_log_summary.txt`` (its verdict and latency percentiles) and ``mlperf_log_detail.txt``;
both stay in the run's log folder, next to the results that quote them.
"""

from __future__ import annotations

import re
from pathlib import Path

SUMMARY_FILE = "mlperf_log_summary.txt"
_PERCENTILE = re.compile(r"^(\d+(?:\.\d+)?) percentile latency \(ns\)$")
_MORE_QUERIES = re.compile(r"would need to run at least (\d+) more queries", re.IGNORECASE)


def _yes(text: str) -> bool:
    return text.strip().lower().startswith("yes")


def parse_summary(text: str) -> dict:
    """LoadGen's summary as a flat dict: ``result`` ("VALID"/"INVALID"), the constraint verdicts, rates, latency
    percentiles in ms (``latency_p50_ms``...), token latencies (``ttft_p99_ms``, ``tpot_p99_ms``) when reported,
    and ``summary_lines``: the verdict block as LoadGen wrote it."""
    out: dict = {"summary_lines": []}
    in_verdict = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("Result is"):
            out["result"] = line.split(":", 1)[1].strip()
            in_verdict = True
        if in_verdict:
            if line.startswith("=====") or line.startswith("Additional Stats"):
                in_verdict = False
            elif line:
                out["summary_lines"].append(line)
        more = _MORE_QUERIES.search(line)
        if more:
            out["early_stopping_more_queries"] = int(more.group(1))
        if ":" not in line:
            continue
        key, value = (part.strip() for part in line.split(":", 1))
        lowered = key.lower()
        if lowered == "performance constraints satisfied":
            out["latency_constraint_met"] = _yes(value)
        elif lowered == "min duration satisfied":
            out["min_duration_met"] = _yes(value)
        elif lowered == "min queries satisfied":
            out["min_queries_met"] = _yes(value)
        elif lowered == "early stopping satisfied":
            out["early_stopping_met"] = _yes(value)
        elif lowered in ("completed samples per second", "samples per second"):
            out["achieved_qps"] = float(value)
        elif lowered == "scheduled samples per second":
            out["scheduled_qps"] = float(value)
        elif lowered.endswith("(ns)") and ("latency" in lowered or "output token" in lowered):
            prefix = "ttft" if "first token" in lowered else "tpot" if "output token" in lowered else "latency"
            match = _PERCENTILE.match(lowered.split(" percentile")[0] + " percentile latency (ns)")
            if " percentile " in lowered and match:
                pct = match.group(1).rstrip("0").rstrip(".")
                out[f"{prefix}_p{pct.replace('.', '_')}_ms"] = float(value) / 1e6
            elif lowered.split()[0] in ("min", "max", "mean"):
                out[f"{prefix}_{lowered.split()[0]}_ms"] = float(value) / 1e6
        elif lowered in ("tokens per second", "completed tokens per second"):
            out["tokens_per_s"] = float(value)
    return out


def read_summary(log_dir: str | Path) -> dict:
    path = Path(log_dir) / SUMMARY_FILE
    return parse_summary(path.read_text()) if path.is_file() else {"summary_lines": []}


def littles_law(arrivals: list[float], completions: list[float], arrival_rate: float, mean_latency_s: float) -> dict:
    """Little's law on one run: the time-averaged number of requests in the system (from each request's
    arrival and completion, over the window from the first arrival to the last completion) against LoadGen's
    arrival rate x LoadGen's mean latency. ``relative_gap`` = |measured - predicted| / predicted."""
    if not arrivals or arrival_rate <= 0 or mean_latency_s <= 0:
        return {"in_system_measured": None, "in_system_predicted": None, "relative_gap": None}
    window = max(completions) - min(arrivals)
    busy = sum(end - start for start, end in zip(arrivals, completions))
    measured = busy / window if window > 0 else 0.0
    predicted = arrival_rate * mean_latency_s
    return {"in_system_measured": measured, "in_system_predicted": predicted,
            "relative_gap": abs(measured - predicted) / predicted}


__all__ = ["SUMMARY_FILE", "littles_law", "parse_summary", "read_summary"]
