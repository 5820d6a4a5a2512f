"""`python run_notebooks.py --device cpu --quick` end to end: every notebook, file, chart and the manifest."""

from __future__ import annotations

import json
import re
import shutil

import nbformat
import pandas as pd
import papermill
import pytest

from _quick_pipeline import REPO, quick_run
from infopt.presets import MODEL_NOTEBOOKS
from infopt.run import execute as execute_module
from infopt.results import load_results

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MODELS = ("distilbert", "gpt2", "resnet50")
NOTEBOOKS = MODEL_NOTEBOOKS  # benchmark, profile, memory, optimize, serve

BENCHMARK_COLUMNS = {
    "model", "device", "variant", "batch_size", "seq_len", "status", "n_samples", "converged", "latency_mean_ms",
    "latency_std_ms", "latency_min_ms", "latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms",
    "latency_max_ms", "latency_ci_low_ms", "latency_ci_high_ms", "throughput_items_per_s", "tokens_per_s",
    "peak_memory_mb", "activation_memory_mb", "warmup_calls", "wall_time_s"}
GENERATION_COLUMNS = {
    "model", "device", "variant", "batch_size", "prompt_len", "new_tokens", "status", "ttft_ms", "tpot_mean_ms",
    "tpot_p50_ms", "tpot_p90_ms", "tpot_p99_ms", "decode_tokens_per_s", "e2e_ms", "peak_memory_mb"}
KIND_COLUMNS = {
    "results": BENCHMARK_COLUMNS,
    "profile_ops": {"operator", "self_cpu_ms", "total_cpu_ms", "share_of_profiled_time", "flops_per_step"},
    "profile_modules": {"module", "inclusive_cpu_ms", "self_cpu_ms", "share_of_profiled_time"},
    "roofline": {"module", "flops", "bytes", "operational_intensity", "achieved_flops_per_s", "roof_flops_per_s",
                 "roof_fraction", "bound"},
    "roofline_model": {"flops", "bytes", "operational_intensity", "achieved_flops_per_s", "roof_fraction"},
    "memory": {"batch_size", "weights_mb", "activation_workspace_mb", "peak_memory_mb", "memory_method"},
    "memory_timeline": {"t_ms", "metric", "value_mb"},
    "variants": BENCHMARK_COLUMNS | {"speedup_vs_baseline", "speedup_ci_low", "speedup_ci_high", "compile_time_s",
                                     "accuracy_ok"},
}
CHARTS = {
    "benchmark": {"latency_percentiles", "throughput", "latency_distribution"},
    "profile": {"operator_breakdown", "module_breakdown", "roofline"},
    "memory": {"memory_vs_batch", "memory_timeline"},
    "optimize": {"speedup_vs_accuracy"},
    "serve": {"serving_latency_vs_load"},
}
PLOTLY_JS_BANNER = "* plotly.js v"


def chart_divs(html: str) -> int:
    """Figure containers in a page (plotly.js itself mentions the class name, so match the element)."""
    return len(re.findall(r'<div\b[^>]*class="plotly-graph-div"[^>]*>', html))


@pytest.fixture(scope="module")
def run():
    result = quick_run()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_run_json_lists_every_notebook_as_succeeded(run):
    manifest = json.loads((run.run_dir / "run.json").read_text())
    assert manifest["status"] == "succeeded"
    keys = {entry["key"]: entry for entry in manifest["notebooks"]}
    assert set(keys) == {f"{m}/{n}" for m in MODELS for n in NOTEBOOKS} | {"report"}
    assert all(entry["status"] == "succeeded" and entry["duration_s"] > 0 and entry["error"] is None
               for entry in keys.values())
    assert manifest["command"][1:] == ["--device", "cpu", "--quick", "--output", str(run.output), "--run-name",
                                       "quick"]
    assert manifest["environment"]["torch_version"] and "git_commit" in manifest
    assert keys["gpt2/benchmark"]["parameters"]["size"] == "tiny"
    assert manifest["settings"]["preset"] == "quick" and manifest["settings"]["preset_values"]["quick"] is True
    # the lock is released and no notebook or file was left half-written
    assert not [p for p in run.run_dir.rglob("*") if p.name == ".run.lock" or ".partial" in p.name
                or p.name.endswith(".tmp")]
    print(f"quick run wall time: {run.wall_s:.0f} s")  # shown with -s; the target is under 3 minutes


def _executed(path):
    return nbformat.read(str(path), as_version=4)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_model_notebook_executed_without_error_and_exports_charts(run, model, name):
    folder = run.run_dir / "cpu" / model
    nb = _executed(folder / f"{name}.ipynb")
    assert nb.metadata.papermill.exception is not True
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    html = (folder / f"{name}.html").read_text()
    # the chart is in the HTML page itself (a div drawn by the run's one plotly.min.js), not only in a MIME bundle
    gpt2_extra = {("gpt2", "benchmark"), ("gpt2", "memory"), ("gpt2", "optimize")}  # generation charts
    expected = len(CHARTS[name]) + (1 if (model, name) in gpt2_extra else 0)
    assert chart_divs(html) == expected
    assert html.count("Plotly.newPlot(") == expected
    assert html.count(PLOTLY_JS_BANNER) == 0  # no embedded copy: one shared file per run, offline
    assert re.findall(r'<script[^>]*src="([^"]*)"', html) == ["../../plotly.min.js"]
    assert "import pandas" not in html  # code hidden in the shared page
    assert PLOTLY_JS_BANNER not in (folder / f"{name}.ipynb").read_text()  # the notebook stores the JSON only
    bundles = [o for c in nb.cells for o in c.get("outputs", []) if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(bundles) == expected  # and the JSON bundle JupyterLab draws
    for chart in CHARTS[name]:
        assert (folder / "charts" / f"{chart}.html").is_file()


@pytest.mark.parametrize("model", MODELS)
def test_result_files_have_the_documented_columns(run, model):
    folder = run.run_dir / "cpu" / model
    for kind, columns in KIND_COLUMNS.items():
        frame = pd.read_csv(folder / f"{model}_cpu_{kind}.csv", keep_default_na=False)
        assert columns <= set(frame.columns), (kind, columns - set(frame.columns))
        document = json.loads((folder / f"{model}_cpu_{kind}.json").read_text())
        assert document["schema_version"] == 1 and document["env"]["hostname"] and len(document["rows"]) == len(frame)
    results = pd.read_csv(folder / f"{model}_cpu_results.csv")
    assert results["status"].eq("ok").all() and results["batch_size"].tolist() == [1, 2, 4]
    raw = json.loads((folder / f"{model}_cpu_results.json").read_text())["raw_samples"]
    assert all(len(row["samples_ms"]) == n for row, n in zip(raw, results["n_samples"]))
    variants = load_results(folder / f"{model}_cpu_variants.json")
    assert (variants.loc[variants["variant"] == "eager-fp32", "speedup_vs_baseline"] == 1.0).all()
    # the racing search: raced-out variants keep a row that says where they stopped; the baseline and the
    # confirmed finalists ran in full
    assert set(variants["status"]) <= {"ok", "n/a", "eliminated"} and (variants["status"] == "ok").sum() >= 2
    assert variants.loc[variants["status"] == "eliminated", "search_stage"].notna().all()
    peaks = json.loads((folder / f"{model}_cpu_peaks.json").read_text())
    assert peaks["matmul"]["float32"]["measured_flops_per_s"] > 0
    trace = json.loads((folder / "trace.json").read_text())
    assert trace["traceEvents"]
    if model == "gpt2":
        generation = pd.read_csv(folder / "gpt2_cpu_generation.csv")
        assert GENERATION_COLUMNS <= set(generation.columns)
        assert set(generation["use_cache"]) == {True, False} and generation["status"].eq("ok").all()
        assert {"measured_mb", "analytic_mb"} <= set(pd.read_csv(folder / "gpt2_cpu_kv_cache.csv").columns)


def test_chart_files_load_the_runs_one_plotly_js(run):
    assert (run.run_dir / "plotly.min.js").is_file()
    for folder, src in [(run.run_dir / "cpu" / m / "charts", "../../../plotly.min.js") for m in MODELS] + \
            [(run.run_dir / "charts", "../plotly.min.js")]:
        assert not (folder / "plotly.min.js").exists()
        pages = list(folder.glob("*.html"))
        assert pages and all(f'src="{src}"' in p.read_text() for p in pages)


def test_report_renders_every_model_and_recommendations(run):
    nb = _executed(run.run_dir / "report.ipynb")
    assert nb.metadata.papermill.exception is not True
    html = (run.run_dir / "report.html").read_text()
    assert re.findall(r'<script[^>]*src="([^"]*)"', html) == ["plotly.min.js"]
    assert chart_divs(html) >= 6
    for model in MODELS:
        assert f"{model} on cpu, batch 4:" in html  # one recommendation line per model and batch size
    names = {trace["name"] for c in nb.cells for o in c.get("outputs", [])
             for trace in o.get("data", {}).get("application/vnd.plotly.v1+json", {}).get("data", [])
             if trace.get("name")}
    assert set(MODELS) <= names  # the comparison charts draw one series per model


def test_report_puts_a_run_copied_from_another_machine_side_by_side(run, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(run.run_dir, results / "quick")
    other = results / "from-other-host"
    shutil.copytree(run.run_dir, other)
    manifest = json.loads((other / "run.json").read_text())
    manifest["environment"]["hostname"] = "other-host"
    (other / "run.json").write_text(json.dumps(manifest))
    papermill.execute_notebook(
        str(REPO / "notebooks" / "report.ipynb"), str(tmp_path / "report.ipynb"), progress_bar=False,
        parameters={"results_dir": str(results), "output_dir": str(tmp_path / "out")}, kernel_name="python3",
        kernel_manager_class=execute_module.kernel_manager_class(), cwd=str(tmp_path))
    nb = _executed(tmp_path / "report.ipynb")
    text = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert "other-host" in text and "from-other-host" in text
    names = {trace.get("name") for c in nb.cells for o in c.get("outputs", [])
             for trace in o.get("data", {}).get("application/vnd.plotly.v1+json", {}).get("data", [])}
    assert any(n and n.startswith("from-other-host") for n in names) and any(n and n.startswith("quick") for n in names)


def test_notebook_defaults_write_to_the_shared_interactive_folder_and_widgets_never_block(tmp_path, monkeypatch):
    """As opened by hand: output_dir left at its default, interactive=True, executed headless."""
    (tmp_path / "notebooks").mkdir()
    monkeypatch.setenv("INFOPT_RESULTS", str(tmp_path / "results"))  # else the checkout's results/ folder
    params = {"model": "distilbert", "size": "tiny", "quick": True, "batch_sizes": [1, 2], "seq_len": 16,
              "interactive": True}
    for attempt in range(2):  # twice: a second execution must not collide with the first one's results
        papermill.execute_notebook(
            str(REPO / "notebooks" / "benchmark.ipynb"), str(tmp_path / f"run{attempt}.ipynb"), parameters=params,
            progress_bar=False, kernel_name="python3", kernel_manager_class=execute_module.kernel_manager_class(),
            cwd=str(tmp_path / "notebooks"), execution_timeout=300)
    # hand runs of one model share one folder; the second replaced the first one's files
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("distilbert_cpu_results.csv")) == \
        ["results/interactive/cpu/distilbert/distilbert_cpu_results.csv"]
    nb = _executed(tmp_path / "run1.ipynb")
    widgets = [o for c in nb.cells for o in c.get("outputs", [])
               if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widgets  # the explore controls were displayed
