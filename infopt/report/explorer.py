"""Interactive exploration in JupyterLab: ipywidgets controls over saved results (``interactive=True`` in a
notebook; headless runs never call it)."""

from __future__ import annotations

import pandas as pd

from infopt.errors import InvalidInputError
from infopt.report.plots import compare, mime_bundle, successful_rows

EXPLORE_METRICS = ("latency_p50_ms", "latency_p99_ms", "throughput_items_per_s", "tokens_per_s", "peak_memory_mb")


def explore(df: pd.DataFrame, metrics=EXPLORE_METRICS):
    """ipywidgets controls (model, device, variant, batch size, metric) over saved results.

    Returns the widget box; only meant for interactive sessions (``interactive=True``),
    never called by headless runs.
    """
    import ipywidgets as widgets
    from IPython.display import display

    data = successful_rows(df)
    if data.empty:
        raise InvalidInputError("There are no successful result rows to explore.")
    metrics = [m for m in metrics if m in data and data[m].notna().any()]

    def options(column):
        return ["(all)"] + sorted(data[column].dropna().astype(str).unique().tolist()) if column in data else ["(all)"]

    model = widgets.Dropdown(options=options("model"), description="model")
    device = widgets.Dropdown(options=options("device"), description="device")
    variant = widgets.Dropdown(options=options("variant"), description="variant")
    batch = widgets.SelectMultiple(options=sorted(data["batch_size"].unique().tolist()),
                                   description="batch sizes")
    metric = widgets.Dropdown(options=metrics, description="metric")
    out = widgets.Output()

    def redraw(*_):
        sel = data
        for control, column in ((model, "model"), (device, "device"), (variant, "variant")):
            if control.value != "(all)" and column in sel:
                sel = sel[sel[column].astype(str) == control.value]
        if batch.value:
            sel = sel[sel["batch_size"].isin(batch.value)]
        fig = compare(sel, "batch_size", metric.value, title=str(metric.value), x_label="batch size",
                      y_label=str(metric.value))
        # The chart goes into the Output widget's own state, not through a display captured inside
        # ``with out:``: JupyterLab shows it in place from a widget callback too, and headless execution
        # (nbclient) has no capture to follow. A captured display left nbclient waiting out its whole cell
        # timeout (300 s) on a loaded machine, and clear_output(wait=True) could hang it for good.
        out.outputs = ({"output_type": "display_data", "data": mime_bundle(fig), "metadata": {}},)

    for control in (model, device, variant, batch, metric):
        control.observe(redraw, names="value")
    box = widgets.VBox([widgets.HBox([model, device, variant]), widgets.HBox([batch, metric]), out])
    display(box)
    redraw()
    return box


__all__ = ["EXPLORE_METRICS", "explore"]
