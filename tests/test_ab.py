"""A/B (``run_notebooks.py --ab``): a known 2x of work is flagged slower; an identical pair passes the guard."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infopt.measure.timing import TimingConfig
from infopt.models import load_model
from infopt.run import runner
from infopt.run.ab import ab_compare, ab_verdict

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
KNOB = "py:knob_model:make_model?width=384&layers=4"


@pytest.fixture
def knob_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))


def test_the_verdict_reads_the_interval():
    assert ab_verdict(1.1, 1.3) == "slower"
    assert ab_verdict(0.7, 0.9) == "faster"
    assert ab_verdict(0.95, 1.05) == "no significant difference"


def test_twice_the_work_is_slower_with_an_interval_near_2(knob_path):
    baseline = load_model(KNOB, size="tiny")
    candidate = load_model(KNOB + "&extra_work=1", size="tiny")
    timing = TimingConfig.quick(max_time_s=3.0, num_threads=1)
    table = ab_compare(baseline, candidate, [8], rounds=10, timing=timing)
    row = table.iloc[0]
    assert row["verdict"] == "slower"
    # one thread: a shared machine stalls a two-thread matmul far more than one thread; loose: the paired
    # ratio must land near the 2x of arithmetic added, whatever this machine's speed
    assert row["time_ratio_ci_low"] < 3.0 and row["time_ratio_ci_high"] > 1.33
    assert row["time_ratio_ci_low"] > 1.0
    assert not row["accuracy_ok"]  # more layers: different outputs, and the guard says so


def test_an_identical_pair_passes_the_accuracy_guard(knob_path):
    baseline, candidate = load_model(KNOB, size="tiny"), load_model(KNOB, size="tiny")
    timing = TimingConfig.quick(max_time_s=1.0, num_threads=1)
    row = ab_compare(baseline, candidate, [4], rounds=6, timing=timing).iloc[0]
    assert row["accuracy_ok"] and row["rel_error"] == 0
    assert 0.5 < row["time_ratio"] < 2.0


@pytest.mark.parametrize("extra, message", [(["resnet51", "resnet50"], "resnet51"),
                                            (["resnet50", "resnet50", "--models", "gpt2"], "leave out --models")])
def test_bad_specs_are_one_line_and_exit_2(tmp_path, capsys, extra, message):
    code = runner.main(["--ab", *extra, "--quick", "--device", "cpu", "--output", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not any(tmp_path.iterdir())


def test_the_runner_writes_an_ab_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLES), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(REPO / "run_notebooks.py"), "--ab", KNOB, KNOB + "&extra_work=1",
                           "--quick", "--device", "cpu", "--batch-sizes", "4", "--output", str(tmp_path),
                           "--run-name", "ab"], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "ab" / "run.json").read_text())
    assert manifest["mode"] == "ab" and manifest["status"] == "succeeded"
    assert {"start", "end"} <= set(manifest["reference_workload"])
    row = manifest["ab"]["rows"][0]
    assert row["batch_size"] == 4 and row["verdict"] in ("slower", "no significant difference", "faster")
    assert (tmp_path / "ab" / "cpu" / "ab" / "ab_cpu_ab.json").is_file()
    assert "time ratio candidate/baseline" in proc.stdout
