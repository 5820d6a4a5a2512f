"""Results files: CSV/JSON round trips, atomic writes, no silent overwrite, tolerant tree loading."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from infopt import results
from infopt.errors import InfoptError
from infopt.names import safe_name
from infopt.results import (ResultsExistError, load_results, results_paths, save_json, save_results,
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


@pytest.mark.parametrize("field, value", [("raw_samples", 5), ("columns", 7), ("rows", [1, 2]),
                                          ("raw_samples", [1, 2]), ("config", "x")])
def test_valid_json_of_the_wrong_shape_is_skipped_with_a_warning(tmp_path, field, value):
    save_results(sample_frame("gpt2"), tmp_path / "good", "gpt2", "cpu", env=ENV)
    paths = save_results(sample_frame(), tmp_path / "bad", "resnet50", "cpu", env=ENV)
    document = json.loads(paths["json"].read_text())
    document[field] = value
    paths["json"].write_text(json.dumps(document))
    paths["csv"].unlink()
    with pytest.warns(UserWarning, match=f"Skipping {paths['json']}.*'{field}'"):
        loaded = load_results(tmp_path)
    assert list(loaded["model"].unique()) == ["gpt2"]
    with pytest.raises(results.ResultsFormatError, match=field):
        load_results(paths["json"])


def test_a_corrupt_json_no_longer_hides_the_intact_csv_of_the_same_result(tmp_path):
    paths = save_results(sample_frame(), tmp_path / "cpu", "resnet50", "cpu", kind="memory_timeline", env=ENV)
    paths["json"].write_text('{"schema_version": 1, "rows": [{"mod')  # truncated by a crash
    with pytest.warns(UserWarning, match="reading the CSV of the same result instead"):
        loaded = load_results(tmp_path, kind="memory_timeline")
    assert len(loaded) == 2 and set(loaded["kind"]) == {"memory_timeline"}
    assert loaded["source_file"].iloc[0] == str(paths["csv"])


def test_kind_of_a_csv_is_read_with_model_names_that_hold_underscores(tmp_path):
    paths = save_results(sample_frame("torchvision:vit_b_16"), tmp_path, "torchvision:vit_b_16", "cpu", env=ENV)
    paths["json"].unlink()
    assert set(load_results(tmp_path, kind="results")["kind"]) == {"results"}


def test_dot_named_run_folders_are_read_but_hidden_files_and_checkpoints_are_not(tmp_path):
    run = tmp_path / ".nightly"
    save_results(sample_frame(), run / "cpu" / "resnet50", "resnet50", "cpu", env=ENV)
    (run / "run.json").write_text("{}")
    save_results(sample_frame("gpt2"), tmp_path / "r" / ".ipynb_checkpoints", "gpt2", "cpu", env=ENV)
    (tmp_path / "r" / ".distilbert_cpu_results.json.x.tmp").write_text("{}")
    loaded = load_results(tmp_path)
    assert list(loaded["model"].unique()) == ["resnet50"]


def test_writing_results_leaves_the_process_umask_alone(tmp_path, monkeypatch):
    def refuse(mask):
        raise AssertionError("results.py must not change the process umask")
    monkeypatch.setattr(os, "umask", refuse)
    paths = save_results(sample_frame(), tmp_path, "resnet50", "cpu", env=ENV)
    save_json({"a": 1}, tmp_path / "x.json")
    for path in [*paths.values(), tmp_path / "x.json"]:
        assert path.stat().st_mode & 0o777 == results.FILE_MODE == 0o644


def test_the_report_reads_a_dot_named_run_and_skips_a_manifest_that_is_not_an_object(tmp_path):
    from infopt import report

    save_results(sample_frame(), tmp_path / ".nightly" / "cpu" / "resnet50", "resnet50", "cpu", env=ENV)
    (tmp_path / ".nightly" / "run.json").write_text(json.dumps({"status": "succeeded", "notebooks": []}))
    save_results(sample_frame("gpt2"), tmp_path / "odd" / "cpu" / "gpt2", "gpt2", "cpu", env=ENV)
    (tmp_path / "odd" / "run.json").write_text("[1, 2, 3]")
    with pytest.warns(UserWarning, match="odd/run.json: it is not a JSON object"):
        gathered = report.gather(tmp_path)
    assert sorted(gathered["run"].unique()) == [".nightly", "odd"]
    with pytest.warns(UserWarning, match="not a JSON object"):
        runs = report.runs(tmp_path)
    assert list(runs["run"]) == [".nightly"]
