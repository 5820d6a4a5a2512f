"""Verdicts and the recommendation: the fastest variant that is safe to recommend, or the baseline and why."""

from __future__ import annotations

import math

import pandas as pd

from infopt.errors import InvalidInputError
from infopt.measure.interference import flag_is_set
from infopt.optimize.registry import BASELINE

def headline_columns(df: pd.DataFrame, by: str = "auto") -> tuple[tuple[str, str, str], str]:
    """``((speedup, ci_low, ci_high), measure name)`` of the headline speedup: paired where measured."""
    if by not in ("auto", "paired", "medians"):
        raise InvalidInputError(f"by must be 'auto', 'paired' or 'medians', got {by!r}.")
    paired = by == "paired" or (by == "auto" and "paired_speedup" in df and df["paired_speedup"].notna().any())
    if paired:
        return ("paired_speedup", "paired_speedup_ci_low", "paired_speedup_ci_high"), "paired rounds"
    return ("speedup_vs_baseline", "speedup_ci_low", "speedup_ci_high"), "ratio of medians"


def speedup_verdict(speedup: float, low: float, high: float) -> str | None:
    """``"faster"``, ``"slower"``, ``"no significant difference"`` (95% CI contains 1) or ``"too few samples"``."""
    if pd.isna(speedup):
        return None
    if pd.isna(low) or pd.isna(high):
        return "too few samples"
    if low <= 1 <= high:
        return "no significant difference"
    return "faster" if low > 1 else "slower"


def add_verdicts(df: pd.DataFrame, by: str = "auto") -> pd.DataFrame:
    """Fill ``speedup_verdict`` from the headline speedup of each variant row (baseline rows stay empty)."""
    df = df.copy()
    (speed, low, high), _ = headline_columns(df, by)
    values = [None if variant == BASELINE else speedup_verdict(*(pd.to_numeric(pd.Series([a, b, c])).tolist()))
              for variant, a, b, c in zip(df["variant"], df[speed], df[low], df[high])]
    df["speedup_verdict"] = pd.Series(values, index=df.index, dtype=object)
    return df


# -- recommendation -------------------------------------------------------------
def format_speedup(speedup: float, low: float, high: float, median_ms: float, measure: str) -> str:
    interval = "no 95% CI: too few samples" if pd.isna(low) or pd.isna(high) else f"95% CI {low:.2f}-{high:.2f}x"
    return f"{speedup:.2f}x ({measure}; {interval}; median {median_ms:.4g} ms)"


#: Why :func:`recommend` keeps the baseline, in the order they are checked.
REFUSALS = {"busy": "machine busy during measurement", "samples": "not enough samples",
            "none": "no variant beats the baseline"}


def flagged(frame: pd.DataFrame) -> pd.Series:
    if "interference" not in frame:
        return pd.Series(False, index=frame.index)
    return frame["interference"].map(flag_is_set)


def qualify(candidates: pd.DataFrame, speed: str, low: str, high: str,
            flagged: pd.Series) -> tuple[pd.DataFrame, str | None]:
    """The refusal rules, shared by :func:`recommend` and the generation recommendation.

    ``candidates``: accurate variant rows with a measured ``speed``;
    ``flagged``: per row, whether interference touched it. Returns the rows
    that may be recommended (not flagged, 95% CI present and above 1), fastest
    first, and ``None``; or no rows and the :data:`REFUSALS` text saying why.
    """
    speeds, lows, flagged = pd.to_numeric(candidates[speed]), pd.to_numeric(candidates[low]), flagged.astype(bool)
    has_ci = lows.notna() & pd.to_numeric(candidates[high]).notna()
    qualified = candidates.assign(_speed=speeds)[~flagged & has_ci & (lows > 1)]
    qualified = qualified.sort_values("_speed", ascending=False).drop(columns="_speed")
    if not qualified.empty:
        return qualified, None
    looks_faster = speeds[speeds > 1].index
    if len(looks_faster) == 0:
        return qualified, REFUSALS["none"]
    if flagged[looks_faster].any():
        return qualified, REFUSALS["busy"]
    if (~has_ci[looks_faster]).any():
        return qualified, REFUSALS["samples"]
    return qualified, REFUSALS["none"]


def recommend(df: pd.DataFrame, by: str = "auto") -> pd.DataFrame:
    """Per model, device and batch size: the fastest variant that is safe to recommend, or the baseline and why.

    A variant qualifies only if it ran (``status="ok"``), passed the accuracy
    guard, was not flagged for interference (nor, for the ratio of medians,
    was its baseline), and its headline speedup's 95% CI lies above 1 (a NaN
    CI or one containing 1 never qualifies). "Headline" is ``paired_speedup``
    where the sweep measured it (``by="auto"`` or ``"paired"``), else
    ``speedup_vs_baseline`` (``by="medians"``); ``speedup_measure`` names it.
    When nothing qualifies the baseline is kept and ``reason`` says why, from
    :data:`REFUSALS`: a faster-looking variant was flagged ("machine busy
    during measurement"), had no CI ("not enough samples"), or none beat the
    baseline. ``runner_up`` names the next qualifying variant.

    One name per quantity: the recommended variant's headline speedup is ``speedup`` (with ``speedup_ci_low`` /
    ``speedup_ci_high``), and ``speedup_measure`` says which it is; ``speedup_vs_baseline`` stays the sweep's
    ratio of medians and is never reused for the paired figure. A kept baseline has no speedup (NaN: nothing
    was measured against itself), not a literal 1.0.
    """
    (speed, low, high), measure = headline_columns(df, by)
    df = df.copy()
    df["_flagged"] = flagged(df)
    rows = []
    for (model, device, size), group in df.groupby(["model", "device", "batch_size"], sort=True):
        ran = group["status"] == "ok"
        rejected = int((ran & (group["accuracy_ok"] == False)).sum())  # noqa: E712
        base = {"model": model, "device": device, "batch_size": int(size), "speedup_measure": measure}
        baseline = group[ran & (group["variant"] == BASELINE)]
        baseline_flagged = bool(baseline["_flagged"].any()) and measure == "ratio of medians"
        accurate = group[ran & (group["variant"] != BASELINE) & (group["accuracy_ok"] == True)  # noqa: E712
                         & group[speed].notna()]
        qualified, reason = qualify(accurate, speed, low, high, accurate["_flagged"] | baseline_flagged)
        if qualified.empty:
            kept = BASELINE if not baseline.empty else None
            text = (f"{model} on {device}, batch {size}: keep {BASELINE}; {reason}." if kept else
                    f"{model} on {device}, batch {size}: no variant (not even the baseline) ran and passed the "
                    "accuracy guard.")
            rows.append({**base, "variant": kept, "speedup": math.nan,
                         "speedup_ci_low": math.nan, "speedup_ci_high": math.nan,
                         "latency_p50_ms": baseline["latency_p50_ms"].iloc[0] if kept else math.nan,
                         "rel_error": math.nan, "cosine_similarity": math.nan, "runner_up": None,
                         "rejected_for_accuracy": rejected, "reason": reason if kept else "nothing ran",
                         "recommendation": text})
            continue
        best = qualified.iloc[0]
        text = (f"{model} on {device}, batch {size}: use {best['variant']}, "
                f"{format_speedup(best[speed], best[low], best[high], best['latency_p50_ms'], measure)} vs "
                f"{BASELINE}; {_accuracy_clause(best)} ({str(best['tolerance']).split(';')[0]}).")
        rows.append({**base, "variant": best["variant"], "speedup": best[speed],
                     "speedup_ci_low": best[low], "speedup_ci_high": best[high],
                     "latency_p50_ms": best["latency_p50_ms"], "rel_error": best["rel_error"],
                     "cosine_similarity": best["cosine_similarity"],
                     "runner_up": qualified.iloc[1]["variant"] if len(qualified) > 1 else None,
                     "rejected_for_accuracy": rejected, "reason": None, "recommendation": text})
    return pd.DataFrame(rows)


def _accuracy_clause(row) -> str:
    """The recommended variant's error in the recommendation line: relative error and worst-row cosine, or for a
    detector (no cosine) its box error and the decided detections that agree."""
    cosine = row.get("cosine_similarity")
    if cosine is not None and not (isinstance(cosine, float) and math.isnan(cosine)):
        return f"rel. error {row['rel_error']:.2g}, worst-row cosine {cosine:.5f}"
    return (f"box error (1 - mean IoU) {row['rel_error']:.2g}, {int(row.get('top1_confident_rows') or 0)} decided "
            "detections agree")


__all__ = ["REFUSALS", "add_verdicts", "flagged", "format_speedup", "headline_columns", "qualify", "recommend",
           "speedup_verdict"]
