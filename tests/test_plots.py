"""Chart builders and the two delivery paths (notebook renderer, standalone chart files)."""

from __future__ import annotations

import json
import re

import subprocess
import sys

import pandas as pd
import plotly.io as pio
import pytest

import infopt
from infopt.report import explorer, plots
from infopt.measure.benchmark import run_batch_sweep
from infopt.measure.timing import TimingConfig


@pytest.fixture(scope="module")
def sweep():
    """A real (tiny) batch sweep, plus one failed point, as the benchmark notebook would chart it."""
    model = infopt.load_model("distilbert", size="tiny")
    df = run_batch_sweep(model, [1, 2], seq_len=16, timing=TimingConfig.quick(), measure_memory=False)
    failed = df.iloc[[0]].assign(batch_size=64, status="oom", error="simulated", latency_p50_ms=float("nan"))
    return pd.concat([df, failed], ignore_index=True)


def test_save_chart_references_one_shared_plotly_js_at_the_run_root(tmp_path, sweep):
    (tmp_path / "run.json").write_text("{}")
    charts = tmp_path / "cpu" / "model" / "charts"
    first = plots.save_chart(plots.latency_percentiles(sweep), charts, "latency")
    second = plots.save_chart(plots.throughput(sweep), tmp_path / "charts", "throughput")
    assert sorted(p.name for p in charts.iterdir()) == ["latency.html"]  # no per-folder copy of plotly.js
    assert (tmp_path / "plotly.min.js").stat().st_size > 1_000_000
    for path, src in ((first, "../../../plotly.min.js"), (second, "../plotly.min.js")):
        html = path.read_text()
        assert "Plotly.newPlot" in html and len(html) < 200_000
        assert re.findall(r'src="([^"]*)"', html) == [src]  # no CDN script: opens offline


def test_save_chart_without_a_run_keeps_plotly_js_beside_the_chart(tmp_path, sweep):
    plots.save_chart(plots.throughput(sweep), tmp_path / "charts", "throughput")
    assert sorted(p.name for p in (tmp_path / "charts").iterdir()) == ["plotly.min.js", "throughput.html"]


def test_hand_runs_share_one_plotly_js_per_results_run_folder(tmp_path, sweep, monkeypatch):
    monkeypatch.setenv("INFOPT_RESULTS", str(tmp_path))
    for model in ("a", "b"):
        plots.save_chart(plots.throughput(sweep), tmp_path / "interactive" / "cpu" / model / "charts", "t")
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("plotly.min.js")] == \
        ["interactive/plotly.min.js"]


def test_notebook_renderer_stores_only_the_plotly_json(sweep):
    plots.use_notebook_renderer()
    assert pio.renderers.default == plots.NOTEBOOK_RENDERER
    bundle = pio.renderers._build_mime_bundle(plots.throughput(sweep).to_dict())
    assert set(bundle) == {"application/vnd.plotly.v1+json"}  # what JupyterLab draws; no 4.8 MB plotly.js copy
    # show() builds the same bundle without plotly's renderer registry (3 s of imports in every kernel)
    assert plots.mime_bundle(plots.throughput(sweep)) == bundle


def test_show_sends_only_the_plotly_json_and_never_loads_the_renderer_registry(tmp_path):
    """A fresh interpreter: showing a chart must not import plotly.io._renderers (nbformat, jsonschema and
    rfc3987-syntax's grammars come with it)."""
    code = ("import sys, pandas as pd\n"
            "from unittest import mock\n"
            "from infopt.report import plots\n"
            "sweep = pd.DataFrame({'model': ['m'] * 2, 'device': ['cpu'] * 2, 'batch_size': [1, 2], "
            "'throughput_items_per_s': [1.0, 2.0], 'status': ['ok'] * 2})\n"
            "with mock.patch('IPython.display.display') as shown:\n"
            f"    plots.show(plots.throughput(sweep), {str(tmp_path)!r}, 't')\n"
            "(bundle,), kwargs = shown.call_args\n"
            "assert set(bundle) == {'application/vnd.plotly.v1+json'} and kwargs == {'raw': True}, bundle\n"
            "assert 'plotly.io._renderers' not in sys.modules and 'nbformat' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "t.html").is_file()


def test_html_export_hides_code_and_loads_the_shared_plotly_js_without_cdn(tmp_path, sweep):
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    from infopt.report import htmlexport

    (tmp_path / "run.json").write_text("{}")
    figure = plots.throughput(sweep).to_plotly_json()
    nb = new_notebook(cells=[
        new_markdown_cell("# Title"),
        new_code_cell("secret_code_line = 1", outputs=[new_output(
            "display_data", data={htmlexport.PLOTLY_MIME: figure, "text/plain": "Figure"})]),
        new_code_cell("print('x')", outputs=[new_output("stream", name="stdout", text="printed text\n")])])
    path = tmp_path / "cpu" / "m" / "benchmark.ipynb"
    path.parent.mkdir(parents=True)
    nbformat.write(nb, str(path))
    html = htmlexport.export_html(path).read_text()
    assert "secret_code_line" not in html and "printed text" in html and "Title" in html
    assert html.count('class="plotly-graph-div"') == 1 and "Plotly.newPlot" in html
    assert re.findall(r'<script[^>]*src="([^"]*)"', html) == ["../../plotly.min.js"]
    assert not re.search(r'(src|href)="https?:', html)  # no require.js, MathJax or widget CDN
    assert "mathjax" not in html.lower() and "require.js" not in html.lower()
    assert (tmp_path / "plotly.min.js").is_file() and len(html) < 1_000_000
    shown = htmlexport.notebook_to_html(nb, path.parent, show_code=True)
    assert "secret_code_line" in shown


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
    by_name = {t.name: t for t in fig.data}
    assert sorted(by_name) == ["bf16", "eager-fp32", "int8-dynamic"]
    assert list(by_name["int8-dynamic"].marker.symbol) == ["x"] and list(by_name["bf16"].marker.symbol) == ["circle"]
    assert list(by_name["eager-fp32"].x)[0] == pytest.approx(1e-12)  # exact result at the left edge of the log axis
    assert all(t.mode == "markers" for t in fig.data)  # names in legend and hover, no piled-up text labels
    assert fig.layout.shapes[0].y0 == 1.0  # baseline line


def test_speedup_vs_accuracy_draws_each_point_once_without_an_accuracy_column():
    df = pd.DataFrame({"variant": ["a", "b"], "batch_size": [1, 1], "status": ["ok", "ok"],
                       "speedup_vs_baseline": [1.0, 1.5]})
    fig = plots.speedup_vs_accuracy(df)
    assert sum(len(t.x) for t in fig.data) == 2
    assert {s for t in fig.data for s in t.marker.symbol} == {"diamond"}  # "not checked", neither ok nor FAILED


def test_speedup_vs_accuracy_stays_readable_with_many_variants_and_batches():
    variants = [f"variant-{i}" for i in range(24)]
    df = pd.DataFrame([{"variant": v, "batch_size": b, "status": "ok", "speedup_vs_baseline": 1 + i / 10,
                        "rel_error": 1e-3, "accuracy_ok": True} for i, v in enumerate(variants) for b in (1, 8)])
    fig = plots.speedup_vs_accuracy(df)
    assert len(fig.data) == 48 and sum(bool(t.showlegend) for t in fig.data) == 24  # one legend entry per variant
    assert len({t.marker.color for t in fig.data}) == 24  # distinct colours
    assert {t.xaxis for t in fig.data} == {"x", "x2"}  # one panel per batch size
    assert [a.text for a in fig.layout.annotations][:2] == ["batch 1", "batch 8"]


def test_batch_size_axes_tick_only_the_measured_sizes(sweep):
    for fig in (plots.latency_percentiles(sweep), plots.throughput(sweep),
                plots.compare(sweep, "batch_size", "latency_p50_ms", title="t", x_label="x", y_label="y")):
        assert list(fig.layout.xaxis.tickvals) == [1, 2] and list(fig.layout.xaxis.ticktext) == ["1", "2"]
        assert fig.layout.xaxis.tickmode == "array"


def test_kv_cache_chart_of_no_rows_is_a_labelled_empty_chart():
    fig = plots.kv_cache(pd.DataFrame({"cache_seq_len": [], "measured_mb": [], "analytic_mb": [], "source": []}))
    assert not fig.data and fig.layout.annotations


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
    box = explorer.explore(sweep.assign(run="r1"))
    dropdowns = [w for row in box.children[:2] for w in row.children]
    assert [w.description for w in dropdowns] == ["model", "device", "variant", "batch sizes", "metric"]
    assert "latency_p50_ms" in dropdowns[-1].options


def test_figures_survive_a_json_round_trip(sweep):
    fig = plots.latency_distribution(sweep)
    again = pio.from_json(json.dumps(fig.to_plotly_json(), default=str))
    assert [list(trace.y) for trace in again.data] == [list(trace.y) for trace in fig.data]
    assert again.layout.title.text == fig.layout.title.text
