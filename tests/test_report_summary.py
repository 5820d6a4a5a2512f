"""The report's scope (its own run by default, quick runs apart) and its executive summary."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from infopt.report import summary
from infopt.errors import InvalidInputError
from infopt.report.gathering import ReportScope
from infopt.results import save_results

ENV = {"hostname": "host-a"}


def bench_rows(model: str, scale: float) -> pd.DataFrame:
    return pd.DataFrame([{"model": model, "device": "cpu", "variant": "eager-fp32", "batch_size": b, "status": "ok",
                          "latency_p50_ms": scale * b, "latency_ci_low_ms": scale * b * 0.99,
                          "latency_ci_high_ms": scale * b * 1.01, "throughput_items_per_s": b * 1000 / (scale * b + b ** 1.5),
                          "peak_memory_mb": 100.0 + b} for b in (1, 4, 8)])


def variant_rows(model: str) -> pd.DataFrame:
    base = {"model": model, "device": "cpu", "batch_size": 8, "status": "ok", "tolerance": "cosine>=0.99; x",
            "cosine_similarity": 0.9999, "latency_p50_ms": 1.0}
    return pd.DataFrame([
        {**base, "variant": "eager-fp32", "speedup_vs_baseline": 1.0, "speedup_ci_low": 0.98, "speedup_ci_high": 1.02,
         "rel_error": 0.0, "accuracy_ok": True},
        {**base, "variant": "bf16", "speedup_vs_baseline": 1.8, "speedup_ci_low": 1.7, "speedup_ci_high": 1.9,
         "rel_error": 1e-3, "accuracy_ok": True},
        {**base, "variant": "int8-dynamic", "speedup_vs_baseline": 3.0, "speedup_ci_low": 2.9, "speedup_ci_high": 3.1,
         "rel_error": 0.3, "accuracy_ok": False},
        {**base, "batch_size": 1, "variant": "eager-fp32", "speedup_vs_baseline": 1.0, "speedup_ci_low": 0.98,
         "speedup_ci_high": 1.02, "rel_error": 0.0, "accuracy_ok": True},
    ])


def make_run(root, name: str, *, quick: bool, scale: float = 1.0, status: str = "succeeded", variants=True):
    run = root / name
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"run_name": name, "status": status, "duration_s": 12.5,
                                              "settings": {"quick": quick}, "environment": ENV, "notebooks": []}))
    model_dir = run / "cpu" / "tiny-net"
    save_results(bench_rows("tiny-net", scale), model_dir, "tiny-net", "cpu", env=ENV)
    if variants:
        save_results(variant_rows("tiny-net"), model_dir, "tiny-net", "cpu", kind="variants", env=ENV)
    save_results(pd.DataFrame([{"model": "tiny-net", "device": "cpu", "batch_size": 8, "status": "ok",
                                "roof_fraction": 0.25, "bound": "memory"}]), model_dir, "tiny-net", "cpu",
                 kind="roofline_model", env=ENV)
    return run


@pytest.fixture
def results(tmp_path):
    make_run(tmp_path, "full-a", quick=False, scale=1.0)
    make_run(tmp_path, "full-b", quick=False, scale=2.0)
    make_run(tmp_path, "smoke", quick=True, scale=0.1)
    return tmp_path


def test_report_covers_its_own_run_by_default(results):
    scope = ReportScope(results, "full-a")
    assert scope.runs == ("full-a",)
    assert set(scope.gather("results")["run"]) == {"full-a"}
    assert list(scope.runs_table()["run"]) == ["full-a"]


def test_other_runs_only_when_listed_and_quick_runs_kept_apart(results):
    scope = ReportScope(results, "full-a", ["full-b", "smoke"])
    assert scope.runs == ("full-a", "full-b") and any("smoke" in note for note in scope.notes)
    mixed = ReportScope(results, "full-a", ["smoke"], include_quick=True)
    assert set(mixed.gather("results")["run"]) == {"full-a", "smoke (quick)"}  # marked when shown
    everything = ReportScope(results, "full-a", ["all"])
    assert everything.runs == ("full-a", "full-b")


def test_a_quick_run_report_shows_only_quick_runs_marked(results):
    scope = ReportScope(results, "smoke", ["full-a"])
    assert scope.runs == ("smoke",)
    assert set(scope.gather("results")["run"]) == {"smoke (quick)"}


def test_a_folder_report_shows_full_size_runs_or_only_smoke_runs(results, tmp_path_factory):
    assert ReportScope(results).runs == ("full-a", "full-b")
    smoke_only = tmp_path_factory.mktemp("smoke")
    make_run(smoke_only, "s1", quick=True)
    make_run(smoke_only, "s2", quick=True)
    assert set(ReportScope(smoke_only).gather("results")["run"]) == {"s1 (quick)", "s2 (quick)"}


def test_unknown_run_is_refused_by_name(results):
    with pytest.raises(InvalidInputError, match="No run named 'nope'"):
        ReportScope(results, "full-a", ["nope"])


def test_headline_row_per_model_and_device_from_the_saved_results(results):
    scope = ReportScope(results, "full-a")
    head = summary.headline(scope.gather("results"), scope.gather("roofline_model"), scope.gather("variants"))
    assert len(head) == 1
    row = head.iloc[0]
    assert row["latency_batch"] == 1 and row["latency_p50_ms"] == pytest.approx(1.0)
    assert (row["latency_ci_low_ms"], row["latency_ci_high_ms"]) == pytest.approx((0.99, 1.01))
    rows = bench_rows("tiny-net", 1.0)
    best = rows.loc[rows["throughput_items_per_s"].idxmax()]
    assert row["best_throughput_batch"] == best["batch_size"]
    assert row["peak_memory_mb"] == pytest.approx(108.0) and row["roof_fraction"] == pytest.approx(0.25)
    # int8 is faster but failed the accuracy guard: bf16 is recommended, with its interval
    assert row["recommended_variant"] == "bf16" and row["speedup"] == pytest.approx(1.8)
    assert "b8: bf16 1.80x [1.70, 1.90]" in row["recommendation_text"]
    assert "b1: keep eager-fp32" in row["recommendation_text"]
    text = summary.format_text(head)
    assert "latency p50 (95% CI)" in text and "1 ms [0.99, 1.01] @ b1" in text and "25% of roof, memory" in text


def test_headline_says_what_was_not_measured(tmp_path):
    make_run(tmp_path, "r", quick=False, variants=False)
    head = summary.load_headline(tmp_path / "r")
    assert head.iloc[0]["recommendation_text"] == "optimize not run" and math.isnan(head.iloc[0]["speedup"])
    fig = summary.chart(head)
    assert len(fig.data) == 2


def test_print_headline_never_raises(tmp_path, capsys):
    summary.print_headline(tmp_path / "missing")
    assert "Summary" in capsys.readouterr().out


def test_headline_marks_latency_timed_on_a_busy_machine():
    rows = bench_rows("m", 1.0).assign(interference=[True, False, False])
    assert summary.headline(rows).iloc[0]["latency_text"].endswith("machine busy")
    assert "busy" not in summary.headline(rows.assign(interference=False)).iloc[0]["latency_text"]


def test_headline_of_frames_without_model_keys_is_empty_not_an_error():
    """A run of the memory notebook alone leaves nothing the summary reads: an empty table, not a crash."""
    from infopt.report.summary import headline

    assert headline(pd.DataFrame(), None, None).empty
    assert headline(pd.DataFrame({"unrelated": [1]}), None, None).empty


def _memory_rows(device: str, method: str, process_mb: float) -> pd.DataFrame:
    return pd.DataFrame([{"model": "m", "device": device, "variant": "eager-fp32", "batch_size": b, "status": "ok",
                          "latency_p50_ms": 1.0 * b, "latency_ci_low_ms": 0.9 * b, "latency_ci_high_ms": 1.1 * b,
                          "throughput_items_per_s": 100.0, "weight_memory_mb": 2.0, "activation_memory_mb": 0.1 * b,
                          "model_memory_mb": 2.0 + 0.1 * b, "peak_memory_mb": process_mb + b,
                          "memory_method": method} for b in (1, 8)])


def test_headline_memory_is_the_models_own_footprint_with_the_process_beside_it():
    """A tiny model in an 822 MB interpreter: the headline is weights + activations, not the process."""
    row = summary.headline(_memory_rows("cpu", "cpu-rss-sampled", 820.0)).iloc[0]
    assert row["model_memory_mb"] == pytest.approx(2.8) and row["peak_memory_batch"] == 8
    assert row["memory_text"] == "2.8 MB (weights 2 + activations 0.8; process RSS 828 MB) @ b8"
    assert "cpu-rss-sampled" not in row["memory_text"]  # one device: the column header says enough
    assert "model memory (process)" in summary.format_text(summary.headline(_memory_rows("cpu", "x", 1.0)))


def test_headline_names_the_memory_method_when_two_devices_share_the_table():
    both = pd.concat([_memory_rows("cpu", "cpu-rss-sampled", 820.0), _memory_rows("cuda", "cuda-max-allocated", 3.0)])
    texts = summary.headline(both).set_index("device")["memory_text"]
    assert "process RSS 828 MB, cpu-rss-sampled" in texts["cpu"]
    assert "all CUDA tensors 11 MB, cuda-max-allocated" in texts["cuda"]


def test_headline_memory_of_rows_saved_before_the_footprint_existed_says_so():
    old = _memory_rows("cpu", "cpu-rss-sampled", 820.0).drop(columns=["model_memory_mb", "weight_memory_mb"])
    assert summary.headline(old).iloc[0]["memory_text"] == "not measured (process RSS 828 MB) @ b8"


def test_a_kept_baseline_shows_no_speedup_and_the_paired_figure_is_read_by_its_own_name():
    base = {"model": "m", "device": "cpu", "batch_size": 8, "status": "ok", "tolerance": "t", "rel_error": 0.0,
            "cosine_similarity": 1.0, "accuracy_ok": True}
    rows = pd.DataFrame([
        {**base, "variant": "eager-fp32", "latency_p50_ms": 10.0, "speedup_vs_baseline": 1.0,
         "speedup_ci_low": 0.9, "speedup_ci_high": 1.1},
        {**base, "variant": "bf16", "latency_p50_ms": 5.0, "speedup_vs_baseline": 2.0, "speedup_ci_low": 1.9,
         "speedup_ci_high": 2.1, "paired_speedup": 1.5, "paired_speedup_ci_low": 1.4, "paired_speedup_ci_high": 1.6}])
    row = summary.headline(None, variants=rows).iloc[0]
    assert row["speedup"] == pytest.approx(1.5) and row["speedup_ci_low"] == pytest.approx(1.4)  # paired, not 2.0
    assert row["recommendation_text"] == "b8: bf16 1.50x [1.40, 1.60], paired rounds"
    slower = rows.assign(paired_speedup=[None, 0.8], paired_speedup_ci_low=[None, 0.7],
                         paired_speedup_ci_high=[None, 0.9])
    kept = summary.headline(None, variants=slower).iloc[0]
    assert kept["recommended_variant"] == "eager-fp32" and math.isnan(kept["speedup"])  # not a literal 1.0
    assert "keep eager-fp32" in kept["recommendation_text"]
