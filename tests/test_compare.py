"""Run vs run (infopt.report.compare, python -m infopt.compare): verdicts, drift, the CI gate, bad input.

The runs are written by the test (synthetic samples of known ratio), so no assertion depends on this machine.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from infopt.compare import main
from infopt.measure.drift import REFERENCE_KERNELS, describe_reference
from infopt.report.compare import (bootstrap_ratio, compare_runs, display_table, fastest_visit, repeat_spread,
                                   timing_rows)
from infopt.results import save_json, save_results


def make_run(root, name, *, scale=1.0, reference=1.0, model="toy", torch_version="2.0", seed=0, spread=1.0,
             slow_visit=None):
    """A run folder with one results file (three batch sizes) whose samples are ``scale`` times a base.

    ``slow_visit``: each row is two visits of 100 samples, the first of them that many times slower (a slow spell
    of the machine that covered one visit)."""
    run = root / name
    rng = np.random.default_rng(seed)
    rows = []
    for batch_size, base_ms in ((1, 2.0), (4, 5.0), (16, 12.0)):
        samples = base_ms * scale * (1 + 0.02 * rng.standard_normal(200))
        row = {"model": model, "device": "cpu", "variant": "eager-fp32", "batch_size": batch_size, "seq_len": None,
               "status": "ok"}
        if slow_visit:
            samples[:100] *= slow_visit
            row["visit_samples"] = [100, 100]
        rows.append({**row, "latency_p50_ms": float(np.median(samples)), "samples_ms": samples.tolist()})
    save_results(pd.DataFrame(rows), run / "cpu" / model, model, "cpu", kind="results", env={})
    save_json({"schema_version": 1, "run_name": name, "status": "succeeded",
               "environment": {"torch_version": torch_version, "versions": {"numpy": "1"}, "git_commit": "abc"},
               "git_commit": "abc",
               "reference_workload": {"definition": describe_reference(),
                                      "start": {k: {"median_ms": reference} for k in REFERENCE_KERNELS},
                                      "end": {k: {"median_ms": reference * spread} for k in REFERENCE_KERNELS}}},
              run / "run.json")
    return run


def test_the_bootstrap_interval_covers_a_known_ratio():
    rng = np.random.default_rng(1)
    base, new = 1 + 0.05 * rng.standard_normal(300), 1.2 * (1 + 0.05 * rng.standard_normal(300))
    ratio, low, high = bootstrap_ratio(base, new)
    assert low < 1.2 < high and low < ratio < high and high - low < 0.05


def test_the_same_code_twice_is_no_significant_difference(tmp_path):
    base, new = make_run(tmp_path, "a", seed=1), make_run(tmp_path, "b", seed=2)
    comparison = compare_runs(base, new)
    assert len(comparison.rows) == 3
    assert set(comparison.rows["verdict"]) <= {"no significant difference", "within machine drift"}
    assert comparison.environment == []


def test_a_known_regression_is_slower_and_a_slower_machine_is_drift(tmp_path):
    base = make_run(tmp_path, "base")
    slower = compare_runs(base, make_run(tmp_path, "slower-code", scale=1.2, seed=3))
    assert set(slower.rows["verdict"]) == {"slower"}
    assert all(low < 1.2 < high for low, high in zip(slower.rows["normalised_low"], slower.rows["normalised_high"]))
    # the same 20% on a machine whose reference workload also got 20% slower: the machine, not the code
    machine = compare_runs(base, make_run(tmp_path, "slower-machine", scale=1.2, reference=1.2, seed=4))
    assert set(machine.rows["verdict"]) == {"within machine drift"}
    assert np.allclose(machine.rows["normalised_ratio"], 1.0, atol=0.02)
    assert math.isclose(machine.drift.factor, 1.2)
    faster = compare_runs(base, make_run(tmp_path, "faster", scale=0.7, seed=5))
    assert set(faster.rows["verdict"]) == {"faster"}


def test_a_slow_spell_over_one_visit_is_left_out_and_a_regression_in_every_visit_is_not(tmp_path):
    base = make_run(tmp_path, "base", slow_visit=1.0)
    spell = compare_runs(base, make_run(tmp_path, "spell", slow_visit=1.6, seed=6))
    assert set(spell.rows["verdict"]) == {"no significant difference"}
    assert np.allclose(spell.rows["ratio"], 1.0, atol=0.02)
    # taken whole, the same rows would read 30% slower or more (the median falls inside the slow visit)
    whole = timing_rows(make_run(tmp_path, "spell-whole", slow_visit=1.6, seed=6))
    assert whole["visits"].tolist() == [2, 2, 2]
    regression = compare_runs(base, make_run(tmp_path, "slower", scale=1.2, slow_visit=1.6, seed=7))
    assert set(regression.rows["verdict"]) == {"slower"}
    assert all(low < 1.2 < high for low, high in zip(regression.rows["ratio_low"], regression.rows["ratio_high"]))


def test_fastest_visit_keeps_a_row_whole_when_its_counts_do_not_add_up():
    samples = [5.0, 5.0, 1.0, 1.0, 1.0]
    assert fastest_visit(samples, [2, 3]) == ([1.0, 1.0, 1.0], 2)
    assert fastest_visit(samples, [2, 2]) == (samples, 1)  # counts of another row
    assert fastest_visit(samples, None) == (samples, 1)


def test_a_change_that_shows_only_after_dividing_by_the_reference_is_not_a_regression(tmp_path):
    """The reference kernels need not track a workload: here they read 12% faster while the code's rows moved 4%.
    Normalised, that is +18%; raw, it is within the drift band. Neither slower nor a gate failure."""
    base = make_run(tmp_path, "base")
    new = make_run(tmp_path, "new", scale=1.04, reference=0.88, seed=9)
    comparison = compare_runs(base, new)
    assert (comparison.rows["normalised_ratio"] > 1.15).all()
    assert set(comparison.rows["verdict"]) == {"within machine drift"}
    assert main([str(base), str(new), "--fail-above", "10"]) == 0
    # a real 20% on the same faster-reading machine is slower, and the gate uses the smaller of the two changes
    real = make_run(tmp_path, "real", scale=1.2, reference=0.88, seed=10)
    assert set(compare_runs(base, real).rows["verdict"]) == {"slower"}
    assert main([str(base), str(real), "--fail-above", "25"]) == 0  # raw +20% is under 25%, normalised +36% is not
    assert main([str(base), str(real), "--fail-above", "10"]) == 1


def test_a_run_whose_machine_moved_within_it_needs_a_larger_change(tmp_path):
    base = make_run(tmp_path, "base", spread=1.15)  # the reference moved 15% between start and end
    comparison = compare_runs(base, make_run(tmp_path, "new", scale=1.08, seed=6, spread=1.15))
    assert set(comparison.rows["verdict"]) == {"within machine drift"}


def test_a_point_a_run_timed_twice_far_apart_widens_the_band(tmp_path):
    """The benchmark and optimize notebooks both time eager fp32 at batch 4: when one run's two timings of that
    point sit 30% apart, the machine moved that much within the run, so a 20% change is drift, not code."""
    base, new = make_run(tmp_path, "base"), make_run(tmp_path, "new", scale=1.2, seed=7)
    assert set(compare_runs(base, new).rows["verdict"]) == {"slower"}
    rng = np.random.default_rng(8)
    samples = 5.0 * 1.3 * (1 + 0.02 * rng.standard_normal(200))  # batch 4 again, 30% slower, same run
    save_results(pd.DataFrame([{"model": "toy", "device": "cpu", "variant": "eager-fp32", "batch_size": 4,
                                "seq_len": None, "status": "ok", "latency_p50_ms": float(np.median(samples)),
                                "samples_ms": samples.tolist()}]),
                 base / "cpu" / "toy", "toy", "cpu", kind="variants", env={})
    assert repeat_spread(timing_rows(base)) == pytest.approx(math.log(1.3), rel=0.02)
    comparison = compare_runs(base, new)
    assert "timed twice" in comparison.drift.detail
    assert set(comparison.rows[comparison.rows["kind"] == "results"]["verdict"]) == {"within machine drift"}


def test_environment_changes_are_listed(tmp_path):
    comparison = compare_runs(make_run(tmp_path, "a"), make_run(tmp_path, "b", torch_version="2.1"))
    assert {"field": "torch_version", "base": "2.0", "new": "2.1"} in comparison.environment
    table = display_table(comparison)
    assert list(table["point"]) and table["verdict"].notna().all()


def test_the_gate_exits_1_on_a_regression_and_0_without(tmp_path, capsys):
    base = make_run(tmp_path, "base")
    slower = make_run(tmp_path, "slower", scale=1.2, seed=7)
    same = make_run(tmp_path, "same", seed=8)
    assert main([str(base), str(slower), "--fail-above", "10"]) == 1
    assert main([str(base), str(slower), "--fail-above", "30"]) == 0
    assert main([str(base), str(same), "--fail-above", "10"]) == 0
    capsys.readouterr()
    assert main([str(base), str(slower), "--format", "json", "--fail-above", "10"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["regressions"] == 3 and document["counts"]["slower"] == 3
    assert main([str(base), str(slower), "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("### Run comparison") and "| slower |" in out


def test_the_text_table_has_one_line_per_row(tmp_path, capsys):
    assert main([str(make_run(tmp_path, "a")), str(make_run(tmp_path, "b", scale=1.2))]) == 0
    out = capsys.readouterr().out
    assert out.count("slower") >= 3 and "machine drift:" in out and "+20" in out


@pytest.mark.parametrize("case", ["missing", "not a run", "no model in common", "negative gate"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case):
    base = make_run(tmp_path, "base")
    other = {"missing": tmp_path / "nope", "not a run": tmp_path,
             "no model in common": make_run(tmp_path, "other", model="other"), "negative gate": base}[case]
    extra = ["--fail-above", "-3"] if case == "negative gate" else []
    assert main([str(base), str(other), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("python -m infopt.compare: error:")


def test_the_module_runs_from_the_command_line(tmp_path):
    base = make_run(tmp_path, "base")
    proc = subprocess.run([sys.executable, "-m", "infopt.compare", str(base), str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_the_report_shows_the_verdicts_of_compare_runs(tmp_path):
    import papermill

    make_run(tmp_path, "base")
    make_run(tmp_path, "new", scale=1.2, seed=9)
    out = tmp_path / "report.ipynb"
    papermill.execute_notebook(str(Path(__file__).resolve().parent.parent / "notebooks" / "report.ipynb"), str(out),
                               parameters=dict(results_dir=str(tmp_path), run_name="new", compare_runs=["base"],
                                               output_dir=str(tmp_path / "charts")), progress_bar=False)
    cells = [c for c in json.loads(out.read_text())["cells"] if "compare_two_runs" in "".join(c["source"])]
    shown = json.dumps(cells[0]["outputs"])
    assert "3 slower" in shown and "machine drift" in shown
