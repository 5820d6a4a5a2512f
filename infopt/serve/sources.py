"""What the serve notebook reads from the notebooks before it in the same model folder: the optimize notebook's
recommended variant, and the benchmark notebook's batch-1 median (the low-rate check compares with it)."""

from __future__ import annotations

import math
from pathlib import Path

from infopt.results import results_paths


def _load(out: str | Path, model: str, label: str, kind: str):
    from infopt.results import load_results

    path = results_paths(out, model, label, kind)["json"]
    return load_results(path) if path.is_file() else None


def recommended_variant(out: str | Path, model: str, label: str) -> str | None:
    """The optimize notebook's recommended variant (the smallest batch size's, serving being low-batch), or
    ``None`` when there is no optimize result or it kept eager fp32."""
    from infopt.optimize.recommend import recommend

    sweep = _load(out, model, label, "variants")
    if sweep is None or sweep.empty:
        return None
    picks = recommend(sweep).sort_values("batch_size")
    for variant in picks["variant"]:
        if isinstance(variant, str) and variant != "eager-fp32":
            return variant
    return None


def benchmark_batch1_median_ms(out: str | Path, model: str, label: str) -> float | None:
    """The benchmark notebook's batch-1 median latency (ms), or ``None`` when it was not measured here."""
    frame = _load(out, model, label, "results")
    if frame is None or "batch_size" not in frame or "latency_p50_ms" not in frame:
        return None
    rows = frame[(frame["batch_size"] == 1) & frame["latency_p50_ms"].notna()]
    value = float(rows["latency_p50_ms"].iloc[0]) if not rows.empty else math.nan
    return None if math.isnan(value) else value


__all__ = ["benchmark_batch1_median_ms", "recommended_variant"]
