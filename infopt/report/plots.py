"""Plotly chart builders for the lab's results, and how they are displayed and saved.

Every builder takes the tidy DataFrame another module produced (benchmark,
profiling, roofline, memory, variants) and returns a ``plotly`` Figure; nothing
here measures anything. Delivery, with plotly.js stored once per run instead of
once per notebook (4.8 MB each):

* :func:`show` displays only the Plotly JSON MIME bundle (:func:`mime_bundle`, as plotly's ``plotly_mimetype``
  renderer, built without plotly's renderer registry: its imports cost 3 s per kernel): JupyterLab draws it, and
  :mod:`infopt.report.htmlexport` turns it into a chart div with one ``<script src>`` to the run's shared
  ``plotly.min.js``. :func:`use_notebook_renderer` makes a user's own ``fig.show()`` send the same bundle.
* :func:`save_chart` writes a standalone HTML file per chart into a ``charts/``
  folder, referencing the same shared ``plotly.min.js`` by a relative path.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from infopt.errors import InvalidInputError

#: The renderer the notebooks use: Plotly JSON only (no plotly.js copy in the .ipynb).
NOTEBOOK_RENDERER = "plotly_mimetype"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
PLOTLY_JS = "plotly.min.js"
TEMPLATE = "plotly_white"
#: Folders holding one of these are a run root: the shared plotly.min.js is written there.
_RUN_MARKERS = ("run.json", PLOTLY_JS)


def use_notebook_renderer() -> str:
    """Show figures as Plotly JSON only (JupyterLab draws it; the HTML export adds the chart div)."""
    if pio.renderers.default != NOTEBOOK_RENDERER:
        pio.renderers.default = NOTEBOOK_RENDERER
    return NOTEBOOK_RENDERER


def mime_bundle(fig: go.Figure) -> dict:
    """The figure as ``plotly_mimetype`` renders it (tests check they agree), for :func:`show` and widgets."""
    import json

    return {PLOTLY_MIME: json.loads(pio.to_json(fig.to_dict(), validate=False, remove_uids=False))}


def shared_plotly_js(start: str | Path, levels: int = 4) -> Path:
    """Where the plotly.js shared by everything written under ``start`` lives.

    The nearest of ``start`` and its ``levels`` parents that holds ``run.json``
    (or already a ``plotly.min.js``) is the run root; else, below the results
    folder, the run folder (e.g. ``results/interactive`` of hand runs); else ``start`` itself.
    """
    from infopt.layout import default_results_dir

    folder = Path(start).resolve()
    for candidate in [folder, *folder.parents][:levels + 1]:
        if any((candidate / marker).is_file() for marker in _RUN_MARKERS):
            return candidate / PLOTLY_JS
    results = default_results_dir()
    if results in folder.parents:
        return results / folder.relative_to(results).parts[0] / PLOTLY_JS
    return folder / PLOTLY_JS


def write_plotly_js(path: str | Path) -> Path:
    """Write plotly.js (this plotly's version) to ``path`` unless the same file is already there."""
    from plotly.offline import get_plotlyjs

    from infopt.results import atomic_path

    path = Path(path)
    text = get_plotlyjs()
    if not path.is_file() or path.stat().st_size != len(text.encode("utf-8")):
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary:
            temporary.write_text(text, encoding="utf-8")
    return path


def relative_src(script: Path, page_folder: Path) -> str:
    """The ``src`` of ``script`` seen from a page in ``page_folder`` (forward slashes, works from file://)."""
    return Path(os.path.relpath(Path(script).resolve(), Path(page_folder).resolve())).as_posix()


def figure_div(fig, height: int = 480) -> str:
    """A chart as an HTML ``<div>`` + ``Plotly.newPlot`` call, without plotly.js or MathJax (page loads it once)."""
    return pio.to_html(fig, include_plotlyjs=False, include_mathjax=False, full_html=False,
                       default_width="100%", default_height=height, validate=False)


def _slug(name: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name)).strip("._")
    if not safe:
        raise InvalidInputError(f"Chart name {name!r} has no usable characters.")
    return safe


def save_chart(fig: go.Figure, charts_dir: str | Path, name: str, plotly_js: str | Path | None = None) -> Path:
    """Write ``charts_dir/<name>.html`` that loads the run's one shared plotly.js by a relative path.

    ``plotly_js`` defaults to :func:`shared_plotly_js` of the chart folder; the
    file is written there once. The page opens with no network.
    """
    folder = Path(charts_dir)
    folder.mkdir(parents=True, exist_ok=True)
    script = write_plotly_js(plotly_js or shared_plotly_js(folder))
    path = folder / f"{_slug(name)}.html"
    fig.write_html(str(path), include_plotlyjs=relative_src(script, folder), include_mathjax=False, full_html=True)
    return path


def show(fig: go.Figure, charts_dir: str | Path | None = None, name: str | None = None) -> None:
    """Save the chart (when a folder is given) and display it.

    Returns nothing on purpose: a returned figure at the end of a cell would be displayed a second time.
    """
    from IPython.display import display

    if charts_dir is not None:
        save_chart(fig, charts_dir, name or fig.layout.title.text or "chart")
    display(mime_bundle(fig), raw=True)


# -- helpers ------------------------------------------------------------------

def successful_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that measured something (status "ok"), so failed points never plot as zeros."""
    if df is None or len(df) == 0:
        return pd.DataFrame() if df is None else df
    if "status" in df.columns:
        df = df[df["status"] == "ok"]
    return df.reset_index(drop=True)


def _series_label(df: pd.DataFrame, keys=("model", "device", "variant")) -> pd.Series:
    """One legend label per distinct series, using only the keys that vary."""
    present = [k for k in keys if k in df.columns]
    varying = [k for k in present if df[k].nunique(dropna=False) > 1] or present[:1]
    if not varying:
        return pd.Series(["all"] * len(df), index=df.index)
    return df[varying].astype(str).agg(" / ".join, axis=1)


def empty_figure(title: str, message: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, template=TEMPLATE, xaxis={"visible": False}, yaxis={"visible": False},
                      annotations=[{"text": message, "showarrow": False, "font": {"size": 14}}])
    return fig


def _layout(fig: go.Figure, title: str, x: str, y: str, *, log_x=False, log_y=False) -> go.Figure:
    fig.update_layout(title=title, template=TEMPLATE, xaxis_title=x, yaxis_title=y, legend_title_text="",
                      hovermode="closest")
    if log_x:
        fig.update_xaxes(type="log")
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def measured_ticks(fig: go.Figure, values, *, axis: str = "x") -> go.Figure:
    """Ticks at exactly the measured values (batch sizes, prompt lengths): none in between, no minor labels."""
    ticks = sorted({v.item() if hasattr(v, "item") else v for v in pd.Series(list(values)).dropna()})
    if ticks:
        fig.update_layout({f"{axis}axis": {"tickmode": "array", "tickvals": ticks,
                                           "ticktext": [f"{v:g}" if isinstance(v, float) else str(v) for v in ticks],
                                           "minor": {"showgrid": False, "ticks": ""}}})
    return fig


# -- benchmark ----------------------------------------------------------------

def _batch_series(df: pd.DataFrame) -> pd.DataFrame:
    """The successful rows of a batch sweep, by batch size, each labelled with its series (model, device, variant)."""
    data = successful_rows(df)
    return data if data.empty else data.sort_values("batch_size").assign(series=_series_label(data))


def latency_percentiles(df: pd.DataFrame, title: str = "Latency percentiles vs batch size") -> go.Figure:
    """p50 (with the 95% CI of the median as error bars), p90 and p99 per call, by batch size."""
    data = _batch_series(df)
    if data.empty:
        return empty_figure(title, "no successful benchmark rows")
    fig = go.Figure()
    for label, part in data.groupby("series", sort=False):
        fig.add_trace(go.Scatter(
            x=part["batch_size"], y=part["latency_p50_ms"], mode="lines+markers", name=f"{label} p50",
            error_y={"type": "data", "symmetric": False,
                     "array": part["latency_ci_high_ms"] - part["latency_p50_ms"],
                     "arrayminus": part["latency_p50_ms"] - part["latency_ci_low_ms"]},
        ))
        for pct, dash in (("p90", "dash"), ("p99", "dot")):
            column = f"latency_{pct}_ms"
            if column in part:
                fig.add_trace(go.Scatter(x=part["batch_size"], y=part[column], mode="lines+markers",
                                         name=f"{label} {pct}", line={"dash": dash}))
    return measured_ticks(_layout(fig, title, "batch size", "latency per call (ms)", log_x=True), data["batch_size"])


def throughput(df: pd.DataFrame, title: str = "Throughput vs batch size") -> go.Figure:
    """Items per second (batch size / mean latency); tokens/s on a second axis is left to the table."""
    data = _batch_series(df)
    if data.empty:
        return empty_figure(title, "no successful benchmark rows")
    fig = go.Figure()
    for label, part in data.groupby("series", sort=False):
        fig.add_trace(go.Scatter(x=part["batch_size"], y=part["throughput_items_per_s"], mode="lines+markers",
                                 name=label))
    return measured_ticks(_layout(fig, title, "batch size", "throughput (samples/s)", log_x=True), data["batch_size"])


def latency_distribution(df: pd.DataFrame, title: str = "Latency distribution per batch size") -> go.Figure:
    """Box plot of every raw timed call per batch size (needs the ``samples_ms`` column)."""
    data = successful_rows(df)
    if data.empty or "samples_ms" not in data:
        return empty_figure(title, "no raw latency samples")
    data = data.assign(series=_series_label(data))
    fig = go.Figure()
    for _, row in data.sort_values("batch_size").iterrows():
        samples = list(row["samples_ms"] or [])
        fig.add_trace(go.Box(y=samples, name=f"{row['series']} b={row['batch_size']}", boxpoints="outliers"))
    fig.update_layout(showlegend=False)
    return _layout(fig, title, "batch size", "latency per call (ms)")


def generation_latency(df: pd.DataFrame, title: str = "Time to first token and per-token decode latency") -> go.Figure:
    """TTFT (prefill) and TPOT p50 with its p90 bar, against prompt length; one line per cache setting."""
    data = successful_rows(df)
    if data.empty:
        return empty_figure(title, "no successful generation rows")
    data = data.sort_values("prompt_len")
    keys = ["batch_size", "use_cache"]
    fig = go.Figure()
    for key, part in data.groupby([k for k in keys if k in data.columns], sort=False):
        key = key if isinstance(key, tuple) else (key,)
        suffix = ", ".join(f"{k}={v}" for k, v in zip(keys, key))
        fig.add_trace(go.Scatter(x=part["prompt_len"], y=part["ttft_ms"], mode="lines+markers",
                                 name=f"TTFT ({suffix})"))
        fig.add_trace(go.Scatter(
            x=part["prompt_len"], y=part["tpot_p50_ms"], mode="lines+markers", name=f"TPOT p50 ({suffix})",
            line={"dash": "dash"},
            error_y={"type": "data", "symmetric": False, "array": part["tpot_p90_ms"] - part["tpot_p50_ms"],
                     "arrayminus": [0] * len(part)},
        ))
    return measured_ticks(_layout(fig, title, "prompt length (tokens)", "latency (ms)", log_x=True, log_y=True),
                          data["prompt_len"])


def generation_variants(df: pd.DataFrame, title: str = "TTFT and TPOT per generation variant") -> go.Figure:
    """Bars per variant (:func:`infopt.optimize.generation.run_generation_variant_sweep` rows): TTFT and TPOT
    p50 with a bar to p99; variants outside the generation accuracy guard are hatched."""
    data = successful_rows(df)
    if data.empty:
        return empty_figure(title, "no successful generation variant rows")
    failed = ["x" if pd.notna(ok) and not bool(ok) else ""
              for ok in data.get("generation_accuracy_ok", pd.Series([None] * len(data)))]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=data["variant"], y=data["ttft_ms"], name="TTFT (median)",
                         marker={"pattern": {"shape": failed}}))
    fig.add_trace(go.Bar(x=data["variant"], y=data["tpot_p50_ms"], name="TPOT p50 (bar to p99)",
                         marker={"pattern": {"shape": failed}},
                         error_y={"type": "data", "symmetric": False,
                                  "array": data["tpot_p99_ms"] - data["tpot_p50_ms"], "arrayminus": [0] * len(data)}))
    fig.update_layout(barmode="group")
    return _layout(fig, title, "variant", "latency (ms)", log_y=True)


def tpot_against_floor(df: pd.DataFrame, title: str = "Measured TPOT against the decode floor") -> go.Figure:
    """Per variant: TPOT p50 (95% CI bars) beside ``tpot_floor_ms`` (:mod:`infopt.analyze.decode_floor`)."""
    data = successful_rows(df)
    if data.empty or "tpot_floor_ms" not in data or not data["tpot_floor_ms"].notna().any():
        return empty_figure(title, "no generation rows with a decode floor")
    labels = _series_label(data, ("run", "device", "model", "variant", "batch_size", "prompt_len"))
    fig = go.Figure([go.Bar(x=labels, y=data["tpot_p50_ms"], name="measured TPOT p50 (95% CI)",
                            error_y={"type": "data", "symmetric": False, "array": data["tpot_ci_high_ms"] -
                                     data["tpot_p50_ms"], "arrayminus": data["tpot_p50_ms"] - data["tpot_ci_low_ms"]}),
                     go.Bar(x=labels, y=data["tpot_floor_ms"], name="floor: bytes read / measured bandwidth")])
    fig.update_layout(barmode="group")
    return _layout(fig, title, "variant", "time per output token (ms)", log_y=True)


# -- profile ------------------------------------------------------------------

def time_breakdown(df: pd.DataFrame, *, name_col: str, time_col: str, title: str, top: int = 15,
                   time_label: str = "time (ms)") -> go.Figure:
    """Horizontal bars of the ``top`` entries by ``time_col``, the rest summed as "other"."""
    if df is None or df.empty or time_col not in df:
        return empty_figure(title, "no profile rows")
    data = df[[name_col, time_col]].copy().sort_values(time_col, ascending=False)
    head, rest = data.head(top), data.iloc[top:]
    if len(rest):
        head = pd.concat([head, pd.DataFrame({name_col: [f"other ({len(rest)})"], time_col: [rest[time_col].sum()]})])
    head = head.iloc[::-1]
    fig = go.Figure(go.Bar(x=head[time_col], y=head[name_col].astype(str), orientation="h"))
    fig.update_layout(height=max(320, 26 * len(head) + 120))
    return _layout(fig, title, time_label, "")


# -- roofline -----------------------------------------------------------------

def roofline(points: pd.DataFrame, peaks: dict, *, whole_model: dict | None = None, title: str = "Roofline",
             name_col: str = "module", intensity_col: str = "operational_intensity",
             achieved_col: str = "achieved_flops_per_s", time_col: str = "time_ms") -> go.Figure:
    """Log-log roofline: measured and theoretical roofs, one point per row of ``points`` sized by its time.

    ``peaks`` is an :func:`infopt.analyze.peaks.device_peaks` dict. A roof is
    min(peak FLOP/s, bandwidth x intensity); the theoretical compute peak is
    drawn flat where no theoretical bandwidth is known. Axes in GFLOP/s.
    """
    fig = go.Figure()
    data = points if points is not None else pd.DataFrame()
    if not data.empty and {intensity_col, achieved_col} <= set(data.columns):
        data = data[(data[intensity_col] > 0) & (data[achieved_col] > 0)]
    else:
        data = pd.DataFrame()
    lo, hi = 1e-2, 1e3
    if not data.empty:
        lo = min(lo, float(data[intensity_col].min()) / 2)
        hi = max(hi, float(data[intensity_col].max()) * 2)
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    for label, flops, bandwidth in roof_lines(peaks):
        dash = "solid" if label.startswith("measured") else "dash"
        if bandwidth:
            name = f"{label} roof (ridge {flops / bandwidth:.1f} FLOP/B)"
            ys = [min(flops, bandwidth * x) / 1e9 for x in grid]
        else:
            name, ys = f"{label} compute peak (no bandwidth figure)", [flops / 1e9] * len(grid)
        fig.add_trace(go.Scatter(x=grid, y=ys, mode="lines", name=name, line={"dash": dash}))
    if not data.empty:
        times = data[time_col].fillna(0) if time_col in data else pd.Series([1.0] * len(data), index=data.index)
        biggest = float(times.max()) or 1.0
        text = data[name_col].astype(str) if name_col in data else pd.Series([""] * len(data), index=data.index)
        noted = data["roof_note"].fillna("").astype(bool) if "roof_note" in data else text.map(lambda _: False)
        if noted.any():  # above the roof, with the reason (issue #18): labelled, drawn as a diamond
            text = text + data["roof_note"].fillna("").map(lambda note: f"<br>{note}" if note else "")
        fig.add_trace(go.Scatter(
            x=data[intensity_col], y=data[achieved_col] / 1e9, mode="markers", name="modules (area ~ time)",
            text=text,
            marker={"size": [6 + 34 * (float(t) / biggest) ** 0.5 for t in times], "opacity": 0.6,
                    "symbol": ["diamond" if flag else "circle" for flag in noted]},
            hovertemplate="%{text}<br>%{x:.3g} FLOP/B<br>%{y:.3g} GFLOP/s<extra></extra>",
        ))
    if whole_model and whole_model.get(intensity_col) and whole_model.get(achieved_col):
        fig.add_trace(go.Scatter(x=[whole_model[intensity_col]], y=[whole_model[achieved_col] / 1e9],
                                 mode="markers", name="whole model",
                                 marker={"symbol": "star", "size": 18, "color": "black"}))
    return _layout(fig, title, "operational intensity (FLOP per byte of unfused eager traffic)", "GFLOP/s",
                   log_x=True, log_y=True)


def roofline_result(result, title: str = "Roofline") -> go.Figure:
    """:func:`roofline` of an :class:`infopt.analyze.roofline.RooflineResult`: submodules as points, the model as a star."""
    modules = result.modules
    if "depth" in modules:
        modules = modules[modules["depth"] > 0]  # depth 0 is the whole model, drawn as the star
    return roofline(modules, result.peaks, whole_model=result.whole_model, title=title)


def roof_lines(peaks: dict) -> list[tuple[str, float, float | None]]:
    """``(label, peak FLOP/s, peak bytes/s or None)`` for each dtype and source the peaks dict holds."""
    from infopt.analyze.peaks import peak_bandwidth, peak_flops  # noqa: PLC0415 - keeps torch out of plots' import

    roofs = []
    for source in ("measured", "theoretical"):
        bandwidth = peak_bandwidth(peaks, source)
        for dtype in (peaks.get("matmul") or {}):
            flops = peak_flops(peaks, dtype, source)
            if flops:
                roofs.append((f"{source} {dtype}", float(flops), float(bandwidth) if bandwidth else None))
    return roofs


# -- memory -------------------------------------------------------------------

MEMORY_COMPONENTS = {"weights_mb": "weights", "kv_cache_mb": "KV cache",
                     "activation_workspace_mb": "activations + workspace"}


def memory_vs_batch(df: pd.DataFrame, components: dict[str, str] | None = None,
                    title: str = "Memory components vs batch size") -> go.Figure:
    """Stacked bars of the memory components per batch size (hover shows the absolute measured peak)."""
    data = successful_rows(df)
    if data.empty:
        return empty_figure(title, "no successful memory rows")
    components = components or MEMORY_COMPONENTS
    data = data.sort_values("batch_size")
    peak = data["peak_memory_mb"] if "peak_memory_mb" in data else pd.Series([None] * len(data))
    fig = go.Figure()
    for column, label in components.items():
        if column in data and data[column].notna().any():
            fig.add_trace(go.Bar(x=data["batch_size"].astype(str), y=data[column], name=label, customdata=peak,
                                 hovertemplate=f"{label}: %{{y:.3g}} MB<br>absolute peak: %{{customdata:.4g}} MB"
                                               "<extra></extra>"))
    fig.update_layout(barmode="stack")
    return _layout(fig, title, "batch size", "memory (MB)")


def memory_timeline(df: pd.DataFrame, *, title: str = "Memory during one forward", value_col: str = "increase_mb",
                    module_events: list[dict] | None = None) -> go.Figure:
    """Memory over one forward (long form: ``t_ms``, ``metric``, value) with module start markers."""
    if df is None or df.empty:
        return empty_figure(title, "no timeline samples")
    module_events = module_events if module_events is not None else df.attrs.get("module_events")
    fig = go.Figure()
    metrics = df["metric"].unique() if "metric" in df else [None]
    for metric in metrics:
        part = df if metric is None else df[df["metric"] == metric]
        fig.add_trace(go.Scatter(x=part["t_ms"], y=part[value_col], mode="lines", name=str(metric or value_col)))
    starts = [e for e in (module_events or []) if e.get("event") == "enter"]
    if starts:
        fig.add_trace(go.Scatter(x=[e["t_ms"] for e in starts], y=[0.0] * len(starts), mode="markers",
                                 name="module starts", text=[e["module"] for e in starts],
                                 marker={"symbol": "line-ns-open", "size": 12, "color": "gray"},
                                 hovertemplate="%{text} starts at %{x:.2f} ms<extra></extra>"))
    label = "memory above the start of the pass (MB)" if value_col == "increase_mb" else "memory (MB)"
    return _layout(fig, title, "time since the pass started (ms)", label)


def kv_cache(df: pd.DataFrame, title: str = "KV cache size: measured vs analytic") -> go.Figure:
    """Measured cache bytes after each decode step against 2 x layers x batch x seq x hidden x bytes."""
    if df is None or df.empty:
        return empty_figure(title, "no KV-cache rows")
    loop = df[df["source"] != "generate()"] if "source" in df else df
    fig = lines(loop, "cache_seq_len", {"measured_mb": "measured (cache tensors)", "analytic_mb": "analytic"},
                title=title, x_label="cached sequence length (tokens)", y_label="KV cache (MB)")
    if fig.data:  # an empty chart (no rows) has no analytic trace to dash
        fig.data[-1].line.dash = "dash"
    if "source" in df and (df["source"] == "generate()").any():
        final = df[df["source"] == "generate()"]
        fig.add_trace(go.Scatter(x=final["cache_seq_len"], y=final["measured_mb"], mode="markers",
                                 name="returned by generate()", marker={"symbol": "diamond", "size": 12}))
    return fig


def lines(df: pd.DataFrame, x: str, ys: dict[str, str], *, title: str, x_label: str, y_label: str,
          log_x: bool = False, log_y: bool = False) -> go.Figure:
    """Generic line chart: one trace per ``{column: legend label}`` (used for the KV-cache chart)."""
    data = successful_rows(df)
    if data.empty:
        return empty_figure(title, "no rows")
    data = data.sort_values(x)
    fig = go.Figure()
    for column, label in ys.items():
        if column in data:
            fig.add_trace(go.Scatter(x=data[x], y=data[column], mode="lines+markers", name=label))
    return _layout(fig, title, x_label, y_label, log_x=log_x, log_y=log_y)


# -- variants -----------------------------------------------------------------

def speedup_vs_accuracy(df: pd.DataFrame, *, error_col: str = "rel_error",
                        title: str = "Speedup vs accuracy error per variant") -> go.Figure:
    """Speedup over eager fp32 (with CI) against the output error: one panel per batch size, one colour per variant.

    Variant names are in the legend and the hover text, never as point labels
    (20+ variants stay readable). Circles passed the accuracy guard, crosses
    failed it, diamonds were not checked (no ``accuracy_ok`` column or value).
    """
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    data = successful_rows(df)
    if data.empty or "speedup_vs_baseline" not in data:
        return empty_figure(title, "no successful variant rows")
    data = data.assign(plot_error=data[error_col].clip(lower=1e-12) if error_col in data else 1e-12)
    if "accuracy_ok" in data:
        verdict = data["accuracy_ok"].map(lambda v: "not checked" if pd.isna(v) else ("ok" if bool(v) else "FAILED"))
    else:
        verdict = pd.Series("not checked", index=data.index)
    data = data.assign(verdict=verdict, series=_series_label(data, ("run", "model", "device", "variant")))
    batches = sorted(data["batch_size"].unique().tolist()) if "batch_size" in data else [None]
    fig = make_subplots(rows=1, cols=len(batches), shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[f"batch {b}" for b in batches] if batches != [None] else None)
    palette = qualitative.Dark24 + qualitative.Light24
    symbols = {"ok": "circle", "FAILED": "x", "not checked": "diamond"}
    has_ci = {"speedup_ci_low", "speedup_ci_high"} <= set(data.columns)
    for index, (label, part) in enumerate(data.groupby("series", sort=True)):
        for col, batch in enumerate(batches, start=1):
            sub = part if batch is None else part[part["batch_size"] == batch]
            if sub.empty:
                continue
            fig.add_trace(go.Scatter(
                x=sub["plot_error"], y=sub["speedup_vs_baseline"], mode="markers", name=label,
                legendgroup=label, showlegend=not any(t.legendgroup == label for t in fig.data),
                marker={"symbol": [symbols[v] for v in sub["verdict"]], "size": 11,
                        "color": palette[index % len(palette)]},
                customdata=sub[["verdict"]].assign(batch=batch).values,
                hovertemplate=f"<b>{label}</b><br>batch %{{customdata[1]}}<br>speedup %{{y:.3g}}x<br>"
                              f"{error_col} %{{x:.2g}}<br>accuracy %{{customdata[0]}}<extra></extra>",
                error_y={"type": "data", "symmetric": False,
                         "array": sub["speedup_ci_high"] - sub["speedup_vs_baseline"],
                         "arrayminus": sub["speedup_vs_baseline"] - sub["speedup_ci_low"]} if has_ci else None,
            ), row=1, col=col)
    fig.add_hline(y=1.0, line_dash="dot", annotation_text="baseline (eager fp32)")
    fig.update_xaxes(type="log")
    fig.update_layout(title=title, template=TEMPLATE, hovermode="closest", legend_title_text="variant",
                      height=480 + 12 * max(0, data["series"].nunique() - 20))
    fig.update_xaxes(title_text=f"{error_col.replace('_', ' ')} vs fp32 eager (log; 1e-12 = exact)", row=1, col=1)
    fig.update_yaxes(title_text="speedup vs baseline (x)", row=1, col=1)
    return fig


# -- report (comparisons) -----------------------------------------------------

def compare(df: pd.DataFrame, x: str, y: str, *, title: str, x_label: str, y_label: str,
            keys=("run", "host", "device", "model", "variant"), log_x: bool = True, log_y: bool = False) -> go.Figure:
    """One line per (run, host, device, model, variant) that varies, for side-by-side comparisons."""
    data = successful_rows(df)
    if data.empty or y not in data:
        return empty_figure(title, "no rows to compare")
    data = data.sort_values(x).assign(series=_series_label(data, keys))
    fig = go.Figure()
    for label, part in data.groupby("series", sort=True):
        fig.add_trace(go.Scatter(x=part[x], y=part[y], mode="lines+markers", name=label))
    fig = _layout(fig, title, x_label, y_label, log_x=log_x, log_y=log_y)
    return measured_ticks(fig, data[x]) if pd.api.types.is_numeric_dtype(data[x]) else fig
