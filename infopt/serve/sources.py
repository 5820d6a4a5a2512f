"""What the serve notebook reads from the notebooks before it in the same model folder: the optimize notebook's
recommended variant, and each served variant's batch-1 median (the low-rate check compares with it)."""

from __future__ import annotations

import math
from pathlib import Path

from infopt.optimize.registry import BASELINE
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


def batch1_medians_ms(out: str | Path, model: str, label: str) -> dict[str, tuple[float, str]]:
    """Per variant, its batch-1 median latency (ms) and the notebook that timed it: eager fp32 from the benchmark
    notebook, every variant confirmed at batch 1 from the optimize notebook (its unpaired timing; the benchmark's
    figure wins for eager fp32). Empty when neither notebook ran here."""
    medians: dict[str, tuple[float, str]] = {}
    for kind, notebook in (("variants", "optimize"), ("results", "benchmark")):
        frame = _load(out, model, label, kind)
        if frame is None or "batch_size" not in frame or "latency_p50_ms" not in frame:
            continue
        rows = frame[(frame["batch_size"] == 1) & frame["latency_p50_ms"].notna()]
        if "status" in rows:
            rows = rows[rows["status"] == "ok"]
        for _, row in rows.iterrows():
            variant = row.get("variant") if isinstance(row.get("variant"), str) else BASELINE
            value = float(row["latency_p50_ms"])
            if not math.isnan(value):
                medians[variant] = (value, notebook)
    return medians


__all__ = ["batch1_medians_ms", "recommended_variant"]
