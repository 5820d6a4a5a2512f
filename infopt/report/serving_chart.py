"""The serving chart: LoadGen's p50 and bound-percentile latency against the offered load (target QPS) of every
Server test, one line pair per variant and batcher setting, with the latency bound drawn. (Its own module:
``plots.py`` is at the size limit.)"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from infopt.report.plots import TEMPLATE, empty_figure


def latency_vs_offered_load(frame: pd.DataFrame, title: str = "Latency vs offered load") -> go.Figure:
    """p50 (dotted) and the bound's percentile (solid) per Server test, against its target QPS."""
    needed = {"scenario", "target_qps", "latency_p50_ms", "latency_at_percentile_ms"}
    if frame.empty or not needed <= set(frame.columns):
        return empty_figure(title, "no Server tests in these results")
    data = frame[(frame["scenario"] == "server") & frame["target_qps"].notna()
                 & frame["latency_at_percentile_ms"].notna()].copy()
    if data.empty:
        return empty_figure(title, "no Server tests in these results")
    keys = [k for k in ("model", "device", "variant") if k in data]
    data["series"] = data[keys].astype(str).agg(" ".join, axis=1) + " b" + data["max_batch"].astype(int).astype(str) + \
        " w" + data["max_wait_ms"].map("{:g}".format) + "ms"
    percentile = float(data["percentile"].dropna().iloc[0]) if "percentile" in data else 99.0
    fig = go.Figure()
    for series, part in data.sort_values("target_qps").groupby("series", sort=True):
        marker = {"symbol": ["circle" if ok else "x" for ok in part.get("meets_bound", pd.Series(True, part.index))]}
        fig.add_trace(go.Scatter(x=part["target_qps"], y=part["latency_at_percentile_ms"], mode="lines+markers",
                                 name=f"{series} p{percentile:g}", legendgroup=series, marker=marker))
        fig.add_trace(go.Scatter(x=part["target_qps"], y=part["latency_p50_ms"], mode="lines+markers",
                                 name=f"{series} p50", legendgroup=series, line={"dash": "dot"}))
    bound = data["bound_ms"].dropna()
    if not bound.empty:  # a trace, not add_hline: a shape's y on a log axis is read as log10(y) (10^100 for 100 ms)
        limit, rates = float(bound.iloc[0]), data["target_qps"]
        fig.add_trace(go.Scatter(x=[rates.min(), rates.max()], y=[limit, limit], mode="lines",
                                 name=f"bound: p{percentile:g} <= {limit:g} ms",
                                 line={"dash": "dash", "color": "red"}, hoverinfo="name"))
    fig.update_layout(title=title, template=TEMPLATE, hovermode="closest",
                      xaxis_title="offered load (LoadGen target QPS, Poisson arrivals)",
                      yaxis_title="latency (ms, LoadGen; crosses: bound not met)", yaxis_type="log")
    return fig


__all__ = ["latency_vs_offered_load"]
