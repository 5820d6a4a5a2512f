"""Results files: CSV/JSON round trips, atomic writes, no silent overwrite, tolerant tree loading."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from infopt import results
from infopt.errors import InfoptError
from infopt.results import (ResultsExistError, load_results, results_paths, safe_name, save_json, save_results,
                            to_jsonable)

ENV = {"hostname": "test-host", "torch": "x"}  # keeps the tests fast; save_results collects it by default


def sample_frame(model="resnet50"):
    return pd.DataFrame({
        "model": [model, model],
        "device": ["cpu", "cpu"],
        "batch_size": [1, 8],
        "status": ["ok", "oom"],
        "error": [None, "OutOfMemoryError: out of memory"],
        "latency_p50_ms": [1.25, np.nan],
        "tokens_per_s": [None, None],
        "converged": [True, False],
        "samples_ms": [[1.2, 1.25, 1.3], []],
    })


def strict_json(path):
    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_save_writes_csv_and_json_with_provenance(tmp_path):
    paths = save_results(sample_frame(), tmp_path, "resnet50", "cpu", config={"batch_sizes": [1, 8]}, env=ENV)
    assert paths == results_paths(tmp_path, "resnet50", "cpu")
    assert paths["csv"].name == "resnet50_cpu_results.csv" and paths["json"].name == "resnet50_cpu_results.json"
    document = strict_json(paths["json"])  # NaN written as null, never as bare NaN
    assert document["schema_version"] == results.SCHEMA_VERSION
    assert (document["kind"], document["model"], document["device"]) == ("results", "resnet50", "cpu")
    assert document["config"] == {"batch_sizes": [1, 8]} and document["env"] == ENV
    assert document["rows"][1]["latency_p50_ms"] is None
    assert document["raw_samples"] == [{"samples_ms": [1.2, 1.25, 1.3]}, {"samples_ms": []}]
    assert "samples_ms" not in pd.read_csv(paths["csv"]).columns
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resnet50_cpu_results.csv", "resnet50_cpu_results.json"]


def test_env_is_collected_by_default(tmp_path):
    paths = save_results(sample_frame(), tmp_path, "resnet50", "cpu")
    env = strict_json(paths["json"])["env"]
    assert env and "torch" in json.dumps(env)


def test_json_round_trip_keeps_rows_and_raw_samples(tmp_path):
    original = sample_frame()
    paths = save_results(original, tmp_path, "resnet50", "cpu", kind="generation", env=ENV)
    assert paths["json"].name == "resnet50_cpu_generation.json"
    loaded = load_results(paths["json"])
    assert list(loaded.columns[: len(original.columns)]) == list(original.columns)
    assert loaded["kind"].tolist() == ["generation"] * 2 and loaded["source_file"].iloc[0] == str(paths["json"])
    assert loaded["samples_ms"].tolist() == original["samples_ms"].tolist()
    pd.testing.assert_frame_equal(loaded[["model", "batch_size", "status", "latency_p50_ms", "converged"]],
                                  original[["model", "batch_size", "status", "latency_p50_ms", "converged"]],
                                  check_dtype=False)
    assert loaded["tokens_per_s"].isna().all() and loaded["error"].iloc[1].startswith("OutOfMemoryError")


def test_csv_round_trip(tmp_path):
    paths = save_results(sample_frame(), tmp_path, "resnet50", "cpu", env=ENV)
    loaded = load_results(paths["csv"])
    assert loaded["batch_size"].tolist() == [1, 8]
    assert loaded["latency_p50_ms"].iloc[0] == 1.25 and np.isnan(loaded["latency_p50_ms"].iloc[1])
    assert loaded["kind"].tolist() == ["results", "results"]


def test_existing_results_are_never_silently_overwritten(tmp_path):
    save_results(sample_frame(), tmp_path, "resnet50", "cpu", env=ENV)
    with pytest.raises(ResultsExistError, match="overwrite=True"):
        save_results(sample_frame().head(1), tmp_path, "resnet50", "cpu", env=ENV)
    assert len(load_results(tmp_path)) == 2
    save_results(sample_frame().head(1), tmp_path, "resnet50", "cpu", env=ENV, overwrite=True)
    assert len(load_results(tmp_path)) == 1
    assert issubclass(ResultsExistError, InfoptError)


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    paths = save_results(sample_frame(), tmp_path, "resnet50", "cpu", env=ENV)
    before = paths["json"].read_text()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_results(sample_frame().head(1), tmp_path, "resnet50", "cpu", env=ENV, overwrite=True)
    assert paths["json"].read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_tree_loading_skips_corrupt_and_foreign_files_with_a_warning(tmp_path):
    save_results(sample_frame("resnet50"), tmp_path / "cpu", "resnet50", "cpu", env=ENV)
    save_results(sample_frame("gpt2"), tmp_path / "cpu" / "nested", "gpt2", "cpu", env=ENV)
    truncated = tmp_path / "distilbert_cpu_results.json"
    truncated.write_text('{"schema_version": 1, "rows": [{"model": "dis')
    foreign_json = tmp_path / "trace_cpu_results.json"
    foreign_json.write_text('{"traceEvents": []}')
    foreign_csv = tmp_path / "notes.csv"
    foreign_csv.write_text("a,b\n1,2\n")
    with pytest.warns(UserWarning) as caught:
        loaded = load_results(tmp_path)
    messages = " ".join(str(w.message) for w in caught)
    for bad in (truncated, foreign_json, foreign_csv):
        assert str(bad) in messages
    assert sorted(loaded["model"].unique()) == ["gpt2", "resnet50"] and len(loaded) == 4  # CSV twins not doubled


def test_kind_filter_reads_only_that_kind(tmp_path):
    save_results(sample_frame(), tmp_path, "resnet50", "cpu", env=ENV)
    save_results(sample_frame().head(1), tmp_path, "resnet50", "cpu", kind="variants", env=ENV)
    (tmp_path / "resnet50_cpu_trace.json").write_text("not json at all")
    assert len(load_results(tmp_path, kind="variants")) == 1
    assert len(load_results(tmp_path, kind="results")) == 2


def test_missing_path_and_empty_dir(tmp_path):
    with pytest.raises(InfoptError, match="does not exist"):
        load_results(tmp_path / "nope")
    assert load_results(tmp_path).empty


def test_save_json_is_atomic_safe_and_refuses_overwrite(tmp_path):
    path = save_json({"peak": float("nan"), "values": np.array([1.5, np.inf]), "n": np.int64(3)},
                     tmp_path / "cpu_peaks.json")
    assert strict_json(path) == {"peak": None, "values": [1.5, None], "n": 3}
    with pytest.raises(ResultsExistError):
        save_json({}, path)
    save_json({"ok": True}, path, overwrite=True)
    assert strict_json(path) == {"ok": True}


def test_helpers():
    assert safe_name("cuda:0") == "cuda-0"
    assert results_paths("out", "resnet50", "cpu", "profile_ops")["csv"].name == "resnet50_cpu_profile_ops.csv"
    assert to_jsonable({"a": (np.float32(0.5), pd.NA, float("-inf"))}) == {"a": [0.5, None, None]}
