"""Chart builders and the two delivery paths (notebook renderer, standalone chart files)."""

from __future__ import annotations

import json
import re

import pandas as pd
import plotly.io as pio
import pytest

import infopt
from infopt import plots
from infopt.benchmark import run_batch_sweep
from infopt.timing import TimingConfig


@pytest.fixture(scope="module")
def sweep():
    """A real (tiny) batch sweep, plus one failed point, as the benchmark notebook would chart it."""
    model = infopt.load_model("distilbert", size="tiny")
    df = run_batch_sweep(model, [1, 2], seq_len=16, timing=TimingConfig.quick(), measure_memory=False)
    failed = df.iloc[[0]].assign(batch_size=64, status="oom", error="simulated", latency_p50_ms=float("nan"))
    return pd.concat([df, failed], ignore_index=True)


def test_save_chart_ships_plotly_js_once_per_folder_and_no_network(tmp_path, sweep):
    first = plots.save_chart(plots.latency_percentiles(sweep), tmp_path / "charts", "latency")
    second = plots.save_chart(plots.throughput(sweep), tmp_path / "charts", "throughput")
    assert sorted(p.name for p in (tmp_path / "charts").iterdir()) == ["latency.html", "plotly.min.js",
                                                                        "throughput.html"]
    assert (tmp_path / "charts" / "plotly.min.js").stat().st_size > 1_000_000
    for path in (first, second):
        html = path.read_text()
        assert re.search(r"<script[^>]* src=\"plotly.min.js\"", html) and "Plotly.newPlot" in html
        assert re.findall(r'src="([^"]*)"', html) == ["plotly.min.js"]  # no CDN script: opens offline


def test_notebook_renderer_emits_json_bundle_and_offline_html(sweep):
    plots.use_notebook_renderer()
    assert pio.renderers.default == plots.NOTEBOOK_RENDERER
    bundle = pio.renderers._build_mime_bundle(plots.throughput(sweep).to_dict())
    assert "application/vnd.plotly.v1+json" in bundle  # what JupyterLab draws
    html = bundle["text/html"]  # what nbconvert --to html keeps
    assert "Plotly.newPlot" in html and 'class="plotly-graph-div"' in html
    assert "<script src" not in html and "src=" not in html  # no MathJax or plotly.js CDN: works offline


def test_latency_percentiles_plots_ci_of_the_median_and_skips_failed_points(sweep):
    fig = plots.latency_percentiles(sweep)
    p50 = next(trace for trace in fig.data if trace.name.endswith("p50"))
    ok = sweep[sweep["status"] == "ok"].sort_values("batch_size")
    assert list(p50.x) == ok["batch_size"].tolist()  # the oom row is not drawn as a point
    assert list(p50.y) == pytest.approx(ok["latency_p50_ms"].tolist())
    assert list(p50.error_y.array) == pytest.approx((ok["latency_ci_high_ms"] - ok["latency_p50_ms"]).tolist(), nan_ok=True)
    assert list(p50.error_y.arrayminus) == pytest.approx((ok["latency_p50_ms"] - ok["latency_ci_low_ms"]).tolist(), nan_ok=True)
    assert {t.name.split()[-1] for t in fig.data} == {"p50", "p90", "p99"}
    assert fig.layout.xaxis.type == "log"


def test_throughput_and_distribution_use_the_measured_columns(sweep):
    ok = sweep[sweep["status"] == "ok"].sort_values("batch_size")
    fig = plots.throughput(sweep)
    assert list(fig.data[0].y) == pytest.approx(ok["throughput_items_per_s"].tolist())
    dist = plots.latency_distribution(sweep)
    assert [len(trace.y) for trace in dist.data] == [len(s) for s in ok["samples_ms"]]


def test_empty_input_gives_a_labelled_empty_chart():
    fig = plots.latency_percentiles(pd.DataFrame({"status": ["error"], "batch_size": [1]}))
    assert not fig.data and "no successful" in fig.layout.annotations[0].text


def test_roofline_draws_measured_and_theoretical_roofs_and_sized_points():
    peaks = {"matmul": {"float32": {"status": "ok", "measured_flops_per_s": 100e9}},
             "bandwidth": {"measured_bytes_per_s": 10e9},
             "theoretical": {"flops_per_s": {"float32": 200e9}, "bandwidth_bytes_per_s": None}}
    points = pd.DataFrame({"module": ["a", "b"], "operational_intensity": [1.0, 50.0],
                           "achieved_flops_per_s": [5e9, 80e9], "time_ms": [1.0, 4.0]})
    fig = plots.roofline(points, peaks, whole_model={"operational_intensity": 20.0, "achieved_flops_per_s": 50e9})
    measured = next(t for t in fig.data if t.name.startswith("measured float32"))
    x, y = list(measured.x), list(measured.y)
    assert "ridge 10.0" in measured.name
    assert y[0] == pytest.approx(10e9 * x[0] / 1e9) and y[-1] == pytest.approx(100.0)  # slope, then flat
    theoretical = next(t for t in fig.data if t.name.startswith("theoretical float32"))
    assert set(theoretical.y) == {200.0}  # no theoretical bandwidth on CPU: compute peak only
    modules = next(t for t in fig.data if t.name.startswith("modules"))
    assert list(modules.y) == [5.0, 80.0] and modules.marker.size[1] > modules.marker.size[0]
    assert any(t.name == "whole model" for t in fig.data)
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"


def test_speedup_vs_accuracy_marks_failed_guard_and_baseline():
    df = pd.DataFrame({
        "variant": ["eager-fp32", "bf16", "int8-dynamic"], "batch_size": [8, 8, 8], "status": ["ok"] * 3,
        "speedup_vs_baseline": [1.0, 2.0, 3.0], "speedup_ci_low": [0.98, 1.9, 2.8],
        "speedup_ci_high": [1.02, 2.1, 3.2], "rel_error": [0.0, 1e-3, 0.2], "accuracy_ok": [True, True, False]})
    fig = plots.speedup_vs_accuracy(df)
    failed = next(t for t in fig.data if "FAILED" in t.name)
    assert list(failed.text) == ["int8-dynamic"] and failed.marker.symbol == "x"
    passed = next(t for t in fig.data if "accuracy ok" in t.name)
    assert list(passed.x)[0] == pytest.approx(1e-12)  # exact result drawn at the left edge of the log axis
    assert fig.layout.shapes[0].y0 == 1.0  # baseline line


def test_time_breakdown_keeps_top_entries_and_sums_the_rest():
    df = pd.DataFrame({"operator": [f"op{i}" for i in range(20)], "self_cpu_ms": list(range(20, 0, -1))})
    fig = plots.time_breakdown(df, name_col="operator", time_col="self_cpu_ms", title="t", top=5)
    bar = fig.data[0]
    assert list(bar.y)[-1] == "op0" and list(bar.y)[0] == "other (15)"
    assert sum(bar.x) == pytest.approx(df["self_cpu_ms"].sum())


def test_compare_labels_series_by_what_varies(sweep):
    a = sweep.assign(run="r1", host="h")
    b = sweep.assign(run="r2", host="h")
    fig = plots.compare(pd.concat([a, b]), "batch_size", "latency_p50_ms", title="t", x_label="x", y_label="y")
    assert sorted(t.name for t in fig.data) == ["r1", "r2"]


def test_explore_builds_widgets_without_blocking(sweep):
    box = plots.explore(sweep.assign(run="r1"))
    dropdowns = [w for row in box.children[:2] for w in row.children]
    assert [w.description for w in dropdowns] == ["model", "device", "variant", "batch sizes", "metric"]
    assert "latency_p50_ms" in dropdowns[-1].options


def test_figures_are_json_serialisable(sweep):
    json.dumps(plots.latency_distribution(sweep).to_plotly_json(), default=str)
