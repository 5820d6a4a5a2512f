"""The serving figure of the summary table: per model and target, the highest peak QPS under the bound over the
served variants and batcher settings, with the variant, the settings and the bound it was judged by."""

from __future__ import annotations

import math

import pandas as pd

NOT_RUN = "serve not run"


def serving_headline(rows: pd.DataFrame) -> dict:
    """``serving_peak_qps``, ``serving_variant``, ``serving_text`` from one model's serving rows."""
    out = {"serving_peak_qps": math.nan, "serving_variant": None, "serving_text": NOT_RUN}
    if rows is None or rows.empty or "role" not in rows:
        return out
    peaks = rows[(rows["role"] == "peak") & rows["peak_qps"].notna()] if "peak_qps" in rows else rows.iloc[0:0]
    if peaks.empty:
        measured = rows[rows["role"] == "peak"]
        explained = measured[measured["error"].notna()] if "error" in measured else measured.iloc[0:0]
        # the last served variant's reason: the optimized one (served after eager fp32) is the answer sought
        reason = f" ({explained['variant'].iloc[-1]}: {explained['error'].iloc[-1]})" if len(explained) else ""
        out["serving_text"] = "no Server peak measured" if not len(measured) else f"no rate met the bound{reason}"
        return out
    best = peaks.loc[peaks["peak_qps"].astype(float).idxmax()]
    strict = "VALID" in str(best.get("verdict_basis") or "")
    out.update(serving_peak_qps=float(best["peak_qps"]), serving_variant=best["variant"],
               serving_text=(f"{best['peak_qps']:.3g} QPS @ p{best['percentile']:g} <= {best['bound_ms']:g} ms, "
                             f"{best['variant']} b{int(best['max_batch'])} w{best['max_wait_ms']:g}ms"
                             + ("" if strict else " (latency constraint only, not LoadGen VALID)")))
    return out


__all__ = ["NOT_RUN", "serving_headline"]
