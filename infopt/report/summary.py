"""The executive summary: one headline row per model and device, for the report's top and the runner's terminal.

``device`` is the device target's label where a run has several targets or a Ray selector (``cuda-H100``,
``cpu-zone-a``: :func:`infopt.report.gathering.with_targets`), so targets compare side by side, one row each.

Every number is read from the result files the notebooks saved; nothing is
measured here. A row says: median latency at batch 1 with its 95% CI, the best
throughput and the batch size that gave it, the model's own memory (weights + activations and workspace;
the figure its method sees, e.g. the whole process's RSS on CPU, beside it, the method named when devices
share the table), how close the
whole model got to its roofline and what bounds it, and the recommended
variant with its speedup and CI, or the reason there is none. A missing
measurement stays missing (shown as "not measured"), never a guess.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from infopt.serve.headline import serving_headline

KEYS = ("model", "device")
MISSING = "not measured"
#: What ``peak_memory_mb`` is, per ``memory_method``: shown beside the model's own footprint.
PROCESS_FIGURE = {"cpu-rss-sampled": "process RSS", "cuda-max-allocated": "all CUDA tensors",
                  "mps-allocated-sampled": "all MPS tensors"}
#: Column names of the text table (report and terminal), in order.
TABLE_COLUMNS = {"model": "model", "device": "device", "latency_text": "latency p50 (95% CI)",
                 "throughput_text": "best throughput", "memory_text": "model memory (process)",
                 "roofline_text": "roofline", "recommendation_text": "recommended variant",
                 "serving_text": "max QPS @ p99 <= bound"}


def _ok(frame: pd.DataFrame | None) -> pd.DataFrame:
    if frame is None or frame.empty:
        return pd.DataFrame()
    return frame[frame["status"] == "ok"] if "status" in frame else frame


def _num(value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value


def _fmt(value: float, unit: str = "") -> str:
    return MISSING if math.isnan(value) else f"{value:.3g}{unit}"


def _baseline(rows: pd.DataFrame) -> pd.DataFrame:
    """The benchmark's eager rows (the sweep may hold other variants)."""
    if "variant" in rows and rows["variant"].notna().any():
        from infopt.optimize.registry import BASELINE

        eager = rows[rows["variant"] == BASELINE]
        return eager if len(eager) else rows
    return rows


def _benchmark_part(rows: pd.DataFrame) -> dict:
    rows = _baseline(rows)
    out = {"latency_batch": math.nan, "latency_p50_ms": math.nan, "latency_ci_low_ms": math.nan,
           "latency_ci_high_ms": math.nan, "best_throughput": math.nan, "best_throughput_batch": math.nan,
           "model_memory_mb": math.nan, "weight_memory_mb": math.nan, "activation_memory_mb": math.nan,
           "peak_memory_mb": math.nan, "peak_memory_batch": math.nan, "memory_method": None, "interference": False}
    if rows.empty:
        return out
    smallest = rows.sort_values("batch_size").iloc[0]  # batch 1 when it was measured (the sweep's default)
    out.update(latency_batch=int(smallest["batch_size"]), latency_p50_ms=_num(smallest.get("latency_p50_ms")),
               latency_ci_low_ms=_num(smallest.get("latency_ci_low_ms")),
               latency_ci_high_ms=_num(smallest.get("latency_ci_high_ms")),
               interference=smallest.get("interference") is True or smallest.get("interference") == 1)
    if "throughput_items_per_s" in rows and rows["throughput_items_per_s"].notna().any():
        best = rows.loc[rows["throughput_items_per_s"].idxmax()]
        out.update(best_throughput=_num(best["throughput_items_per_s"]), best_throughput_batch=int(best["batch_size"]))
    # the model's own footprint (weights + activations) at its largest; rows saved before it existed: the process
    by = next((c for c in ("model_memory_mb", "peak_memory_mb") if c in rows and rows[c].notna().any()), None)
    if by is not None:
        peak = rows.loc[rows[by].idxmax()]
        out.update({column: _num(peak.get(column)) for column in
                    ("model_memory_mb", "weight_memory_mb", "activation_memory_mb", "peak_memory_mb")},
                   peak_memory_batch=int(peak["batch_size"]), memory_method=peak.get("memory_method"))
    return out


def _roofline_part(rows: pd.DataFrame) -> dict:
    out = {"roof_fraction": math.nan, "bound": None, "roofline_batch": math.nan}
    if rows.empty or "roof_fraction" not in rows:
        return out
    row = rows.iloc[-1]
    out.update(roof_fraction=_num(row["roof_fraction"]), bound=row.get("bound"),
               roofline_batch=_num(row.get("batch_size")))
    return out


def _recommendation_part(rows: pd.DataFrame) -> dict:
    """The recommended variant per batch size (``infopt.optimize.recommend.recommend``), and the best of them."""
    out = {"recommended_variant": None, "speedup": math.nan, "speedup_ci_low": math.nan, "speedup_ci_high": math.nan,
           "recommendation_batch": math.nan, "recommendation_text": "optimize not run"}
    if rows.empty:
        return out
    from infopt.optimize.recommend import recommend
    from infopt.optimize.registry import BASELINE

    rec = recommend(rows)
    if rec.empty:
        out["recommendation_text"] = "no variant rows"
        return out
    texts = []
    for _, row in rec.sort_values("batch_size").iterrows():
        variant, speed = row.get("variant"), _num(row.get("speedup"))
        low, high = _num(row.get("speedup_ci_low")), _num(row.get("speedup_ci_high"))
        if not variant or (isinstance(variant, float) and math.isnan(variant)):
            reason = str(row.get("reason") or row.get("recommendation") or "no variant passed the accuracy guard")
            texts.append(f"b{row['batch_size']}: none ({reason.split(': ', 1)[-1].rstrip('.')})")
            continue
        if variant == BASELINE:
            reason = row.get("reason") if isinstance(row.get("reason"), str) else "no safe variant faster"
            texts.append(f"b{row['batch_size']}: keep {BASELINE} ({reason})")
            continue
        # recommend() recommends only a CI above 1, so every recommended figure has its interval
        texts.append(f"b{row['batch_size']}: {variant} {speed:.2f}x [{low:.2f}, {high:.2f}], "
                     f"{row.get('speedup_measure') or 'speedup'}")
        if math.isnan(out["speedup"]) or speed > out["speedup"]:
            out.update(recommended_variant=variant, speedup=speed, speedup_ci_low=low, speedup_ci_high=high,
                       recommendation_batch=int(row["batch_size"]))
    if out["recommended_variant"] is None:  # nothing beat the baseline: keep it, with no speedup (none measured)
        base = rec[rec["variant"] == BASELINE]
        if len(base):
            out.update(recommended_variant=BASELINE,
                       recommendation_batch=int(base.sort_values("batch_size").iloc[0]["batch_size"]))
    out["recommendation_text"] = "; ".join(texts)
    return out


def headline(results: pd.DataFrame | None, roofline: pd.DataFrame | None = None,
             variants: pd.DataFrame | None = None, serving: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (run,) model and device from the benchmark, whole-model roofline and variant frames.

    Frames gathered across runs (a ``run`` column) give one row per run too;
    rows of different runs are never combined.
    """
    frames = {"results": _ok(results), "roofline": _ok(roofline), "variants": variants}
    frames["variants"] = variants if variants is not None and not variants.empty else pd.DataFrame()
    frames["serving"] = serving if serving is not None and not serving.empty else pd.DataFrame()
    with_run = any("run" in f for f in frames.values() if not f.empty)
    keys = (["run"] if with_run else []) + list(KEYS)
    keyed = [f[keys] for f in frames.values() if not f.empty and set(keys) <= set(f.columns)]
    if not keyed:  # e.g. a run of the memory notebook alone: nothing to summarise
        return pd.DataFrame(columns=list(TABLE_COLUMNS))
    seen = pd.concat(keyed, ignore_index=True)
    if seen.empty:
        return pd.DataFrame(columns=list(TABLE_COLUMNS))
    rows = []
    for key in seen.drop_duplicates().sort_values(keys).itertuples(index=False):
        key = dict(zip(keys, key))

        def part(name):
            frame = frames[name]
            if frame.empty or not set(keys) <= set(frame.columns):
                return pd.DataFrame()
            mask = pd.Series(True, index=frame.index)
            for column, value in key.items():
                mask &= frame[column] == value
            return frame[mask]

        row = dict(key)
        row.update(_benchmark_part(part("results")))
        row.update(_roofline_part(part("roofline")))
        row.update(_recommendation_part(part("variants")))
        row.update(serving_headline(part("serving")))  # the serve notebook's peak QPS under its bound
        rows.append(row)
    return _with_text(pd.DataFrame(rows))


def _with_text(frame: pd.DataFrame) -> pd.DataFrame:
    def latency(r):
        if math.isnan(r["latency_p50_ms"]):
            return MISSING
        ci = " (no CI: too few samples)" if math.isnan(r["latency_ci_low_ms"]) else \
            f" [{r['latency_ci_low_ms']:.3g}, {r['latency_ci_high_ms']:.3g}]"
        busy = ", machine busy" if r.get("interference") else ""  # A's interference flag on that row
        return f"{r['latency_p50_ms']:.3g} ms{ci} @ b{r['latency_batch']:.0f}{busy}"

    def throughput(r):
        return MISSING if math.isnan(r["best_throughput"]) else \
            f"{r['best_throughput']:.3g}/s @ b{r['best_throughput_batch']:.0f}"

    methods_differ = frame["device"].nunique() > 1 or frame["memory_method"].nunique() > 1

    def memory(r):
        if math.isnan(r["peak_memory_mb"]):
            return MISSING
        method = f", {r['memory_method']}" if methods_differ and isinstance(r["memory_method"], str) else ""
        process = f"{PROCESS_FIGURE.get(r['memory_method'], 'peak')} {r['peak_memory_mb']:.4g} MB{method}"
        if math.isnan(r["model_memory_mb"]):
            return f"{MISSING} ({process}) @ b{r['peak_memory_batch']:.0f}"
        return (f"{r['model_memory_mb']:.4g} MB (weights {r['weight_memory_mb']:.3g} + activations "
                f"{r['activation_memory_mb']:.3g}; {process}) @ b{r['peak_memory_batch']:.0f}")

    def roof(r):
        if math.isnan(r["roof_fraction"]):
            return MISSING
        batch = "" if math.isnan(r["roofline_batch"]) else f" @ b{r['roofline_batch']:.0f}"
        return f"{r['roof_fraction']:.0%} of roof, {r['bound'] or '?'}{batch}"

    return frame.assign(latency_text=frame.apply(latency, axis=1), throughput_text=frame.apply(throughput, axis=1),
                        memory_text=frame.apply(memory, axis=1), roofline_text=frame.apply(roof, axis=1))


def load_headline(run_dir: str | Path) -> pd.DataFrame:
    """:func:`headline` of the results saved under one run folder (that run only)."""
    from infopt.results import load_results

    run_dir = Path(run_dir)

    def load(kind):
        try:
            return load_results(run_dir, kind=kind)
        except Exception:  # noqa: BLE001 - a kind that was not measured is simply absent
            return pd.DataFrame()

    from infopt.layout import RunLayout
    from infopt.report.gathering import with_targets  # targets kept apart as in the report (cpu, cpu-zone-a)

    target_of = RunLayout(run_dir).target_of  # the paths load_results gives, under run_dir as given
    return headline(*(with_targets(load(kind), target_of) for kind in ("results", "roofline_model", "variants",
                                                                            "serving")))


def table(frame: pd.DataFrame) -> pd.DataFrame:
    """The headline as the text table shown on top of the report."""
    columns = [c for c in TABLE_COLUMNS if c in frame] if "run" not in frame else \
        ["run", *[c for c in TABLE_COLUMNS if c in frame]]
    return frame[columns].rename(columns=TABLE_COLUMNS).reset_index(drop=True)


def styled_table(frame: pd.DataFrame):
    """:func:`table` for a notebook: left-aligned text, no index."""
    return table(frame).style.hide(axis="index").set_properties(**{"text-align": "left"}).set_table_styles(
        [{"selector": "th", "props": [("text-align", "left")]}])


def format_text(frame: pd.DataFrame, width: int = 60) -> str:
    """The headline as a plain-text table for a terminal (cells longer than ``width`` wrap onto more lines)."""
    import textwrap

    shown = table(frame).astype(str)
    if shown.empty:
        return "No measurements to summarise."
    cells = [[textwrap.wrap(v, width) or [""] for v in row] for row in shown.itertuples(index=False)]
    widths = [max([len(h)] + [len(line) for row in cells for line in row[i]]) for i, h in enumerate(shown.columns)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(shown.columns, widths)).rstrip()]
    for row in cells:
        for depth in range(max(len(c) for c in row)):
            lines.append("  ".join((c[depth] if depth < len(c) else "").ljust(w)
                                   for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def print_headline(run_dir: str | Path) -> None:
    """Print the run's headline table (called by the runner after its status table); never raises."""
    try:
        frame = load_headline(run_dir)
        text = format_text(frame)
    except Exception as error:  # noqa: BLE001 - the run's status is already printed; the summary is a bonus
        text = f"(no summary: {type(error).__name__}: {error})"
    print("\nSummary (details in report.html):")
    print("\n".join("  " + line for line in text.splitlines()))


def chart(frame: pd.DataFrame, title: str = "Summary: latency at batch 1 and best safe speedup"):
    """One summary chart: p50 latency at the smallest batch (CI bars) and the recommended speedup (CI bars)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from infopt.report.plots import TEMPLATE, empty_figure

    if frame is None or frame.empty:
        return empty_figure(title, "no measurements to summarise")
    labels = frame[[c for c in ("run", "model", "device") if c in frame]].astype(str).agg(" / ".join, axis=1)
    fig = make_subplots(rows=1, cols=2, subplot_titles=["latency p50 at the smallest batch (ms)",
                                                        "recommended variant's speedup (x)"])
    fig.add_trace(go.Bar(x=labels, y=frame["latency_p50_ms"], name="latency p50",
                         error_y={"type": "data", "symmetric": False,
                                  "array": frame["latency_ci_high_ms"] - frame["latency_p50_ms"],
                                  "arrayminus": frame["latency_p50_ms"] - frame["latency_ci_low_ms"]}), row=1, col=1)
    fig.add_trace(go.Bar(x=labels, y=frame["speedup"], name="speedup", text=frame["recommended_variant"],
                         hovertemplate="%{x}: %{text} %{y:.2f}x<extra></extra>",
                         error_y={"type": "data", "symmetric": False,
                                  "array": frame["speedup_ci_high"] - frame["speedup"],
                                  "arrayminus": frame["speedup"] - frame["speedup_ci_low"]}), row=1, col=2)
    fig.add_hline(y=1.0, line_dash="dot", row=1, col=2)
    fig.update_yaxes(type="log", dtick=1, row=1, col=1)  # models differ by orders of magnitude; decade ticks only
    fig.update_layout(title=title, template=TEMPLATE, showlegend=False)
    return fig


__all__ = ["TABLE_COLUMNS", "chart", "format_text", "headline", "load_headline", "print_headline", "styled_table",
           "table"]
