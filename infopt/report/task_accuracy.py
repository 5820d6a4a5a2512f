"""Accuracy per variant on the user's data in the report: the table with intervals, and latency vs accuracy.

Rows come from the optimize notebook's ``variants`` results (``task_*`` columns, :mod:`infopt.optimize.task_accuracy`).
Runs without data have no such columns: the table then says the guard compared outputs on random inputs, which
is agreement, not accuracy. The chart puts each variant at its task metric (x, with the interval implied by its
paired loss) and its median latency (y) at the largest batch size measured; the Pareto front joins the safe
variants that no other safe variant beats on both, and unsafe or undecided variants are drawn as crosses.
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

from infopt.optimize.task_accuracy import RANDOM_INPUT_BASIS
from infopt.report.plots import TEMPLATE, empty_figure

KEYS = ("run", "model", "device")


def _largest_batch(df: pd.DataFrame) -> pd.DataFrame:
    keys = [k for k in KEYS if k in df]
    if "batch_size" not in df or df.empty:
        return df
    largest = df.groupby(keys)["batch_size"].transform("max") if keys else df["batch_size"].max()
    return df[df["batch_size"] == largest]


def has_task_accuracy(variants: pd.DataFrame) -> bool:
    return "task_verdict" in variants and variants["task_verdict"].notna().any()


def _interval(row) -> str:
    loss = row.get("task_loss")
    if loss is None or (isinstance(loss, float) and math.isnan(loss)):
        return ""
    unit = "pt" if row.get("task_loss_unit") == "points" else "%"
    return f"{loss:.2f} {unit} [{row.get('task_loss_low', math.nan):.2f}, {row.get('task_loss_high', math.nan):.2f}]"


def accuracy_table(variants: pd.DataFrame) -> pd.DataFrame:
    """One row per run, model, device and variant (largest batch): metric, reference, value, loss with its 95%
    interval, verdict and the samples that would settle an undecided one."""
    if not has_task_accuracy(variants):
        return pd.DataFrame({"accuracy_basis": [RANDOM_INPUT_BASIS]})
    rows = _largest_batch(variants[variants["task_verdict"].notna()])
    keys = [k for k in KEYS if k in rows]
    table = rows.drop_duplicates([*keys, "variant"]).copy()
    table["loss (95% CI)"] = [_interval(r) for r in table.to_dict("records")]
    columns = [*keys, "variant", *(["weights"] if "weights" in table else []), "task_metric", "task_reference", "task_value", "loss (95% CI)", "task_budget",
               "task_verdict", "task_samples", "task_samples_to_settle", "task_data"]
    return table.reindex(columns=columns).reset_index(drop=True)


def warnings_of(variants: pd.DataFrame, small: int = 100) -> list[str]:
    """A line for each model whose evaluation split is small (wide intervals)."""
    if not has_task_accuracy(variants):
        return []
    rows = variants[variants["task_samples"].notna()]
    return [f"{model}: only {int(n)} evaluation samples (< {small}): accuracy intervals are wide."
            for model, n in rows.groupby("model")["task_samples"].min().items() if n < small]


def pareto_front(points: pd.DataFrame) -> pd.DataFrame:
    """Safe points not dominated by another safe one (lower or equal latency and higher or equal metric)."""
    safe = points[points["task_verdict"].isin(["safe", "reference"])].sort_values(["latency_p50_ms", "task_value"],
                                                                                   ascending=[True, False])
    front, best = [], -math.inf
    for _, row in safe.iterrows():
        if row["task_value"] > best:
            front.append(row)
            best = row["task_value"]
    return pd.DataFrame(front)


def latency_vs_accuracy(variants: pd.DataFrame, title: str = "Latency vs accuracy on your data") -> go.Figure:
    """Median latency against the task metric per variant (largest batch), Pareto front of the safe ones."""
    if not has_task_accuracy(variants) or "latency_p50_ms" not in variants:
        return empty_figure(title, f"no task accuracy: the guard used {RANDOM_INPUT_BASIS}")
    data = _largest_batch(variants[variants["task_verdict"].notna() & variants["latency_p50_ms"].notna()])
    if data.empty:
        return empty_figure(title, "no variant with both a latency and a task metric")
    fig = go.Figure()
    higher_better = ~data["task_loss_unit"].eq("relative %")
    for keys, part in data.groupby([k for k in ("model", "device") if k in data]):
        label = " on ".join(map(str, keys if isinstance(keys, tuple) else (keys,)))
        safe = part["task_verdict"].isin(["safe", "reference"])
        points = part["task_value"]
        scale = 100.0 if (part["task_loss_unit"] == "points").all() and points.max() <= 1 else 1.0
        for is_safe, sub in ((True, part[safe]), (False, part[~safe])):
            if sub.empty:
                continue
            low = sub["task_reference"] * scale - sub.get("task_loss_high", 0) * (1 if scale == 100 else 0)
            high = sub["task_reference"] * scale - sub.get("task_loss_low", 0) * (1 if scale == 100 else 0)
            fig.add_trace(go.Scatter(
                x=sub["task_value"] * scale, y=sub["latency_p50_ms"], mode="markers",
                name=f"{label}: {'safe' if is_safe else 'unsafe / cannot tell'}",
                marker={"symbol": "circle" if is_safe else "x", "size": 11},
                text=sub["variant"] + " (" + sub["task_verdict"] + ")",
                hovertemplate="<b>%{text}</b><br>metric %{x:.4g}<br>p50 %{y:.3g} ms<extra></extra>",
                error_x={"type": "data", "symmetric": False, "array": (high - sub["task_value"] * scale).clip(lower=0),
                         "arrayminus": (sub["task_value"] * scale - low).clip(lower=0)} if scale == 100 else None))
        front = pareto_front(part)
        if len(front) > 1 and bool(higher_better.loc[part.index].all()):
            fig.add_trace(go.Scatter(x=front["task_value"] * scale, y=front["latency_p50_ms"], mode="lines",
                                     line={"dash": "dot"}, name=f"{label}: Pareto front (safe)"))
    metric = str(data["task_metric"].iloc[0])
    fig.update_layout(title=title, template=TEMPLATE, hovermode="closest",
                      xaxis_title=f"{metric}{' (%)' if (data['task_loss_unit'] == 'points').all() else ''} "
                                  "on the evaluation split (95% CI of the paired loss)",
                      yaxis_title="median latency (ms, largest batch)")
    return fig


__all__ = ["accuracy_table", "has_task_accuracy", "latency_vs_accuracy", "pareto_front", "warnings_of"]
