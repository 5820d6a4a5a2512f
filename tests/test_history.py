"""``--mlflow``: a real quick run logged to a temporary MLflow store and read back with MLflow's client.

The same run proves the runner records the machine-drift reference workload at its start and end.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from infopt.run import history, runner

mlflow = pytest.importorskip("mlflow")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("history")
    uri = f"sqlite:///{output / 'store.db'}"
    proc = subprocess.run([sys.executable, str(REPO / "run_notebooks.py"), "--device", "cpu", "--quick",
                           "--models", "resnet50", "--notebooks", "benchmark", "--no-html", "--output", str(output),
                           "--run-name", "logged", "--mlflow", uri, "--threads", "1"], capture_output=True, text=True,
                          timeout=900, cwd=str(output))
    return output / "logged", uri, proc


def test_the_run_records_the_reference_workload_at_start_and_end(logged_run):
    run_dir, _, proc = logged_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    reference = json.loads((run_dir / "run.json").read_text())["reference_workload"]
    for moment in ("start", "end"):
        assert reference[moment]["matmul"]["median_ms"] > 0 and reference[moment]["conv"]["median_ms"] > 0
    assert reference["start"]["utc"] <= reference["end"]["utc"]


def test_threads_pin_the_notebooks_the_reference_and_the_recorded_environment(logged_run):
    """``--threads 1`` (the steady setting for run-vs-run gates): every timed row, both reference moments and the
    environment say one thread, and the run's settings keep it for --resume."""
    run_dir, _, proc = logged_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["settings"]["threads"] == 1
    assert manifest["environment"]["torch_num_threads"] == 1 and manifest["environment"]["omp_num_threads_env"] == "1"
    for moment in ("start", "end"):
        assert manifest["reference_workload"][moment]["matmul"]["num_threads"] == 1
    rows = json.loads(next(run_dir.rglob("resnet50_cpu_results.json")).read_text())["rows"]
    assert rows and all(row["num_threads"] == 1 for row in rows)


def test_mlflow_holds_the_parameters_metrics_and_files(logged_run):
    run_dir, uri, proc = logged_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "MLflow: run" in proc.stdout
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(history.EXPERIMENT)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["models"] == '["resnet50"]' and run.data.params["quick"] == "True"
    assert run.data.params["threads"] == "1"
    latency = {k: v for k, v in run.data.metrics.items() if k.startswith("cpu.resnet50.bs") and k.endswith("p50_ms")}
    saved = json.loads((run_dir / "cpu" / "resnet50" / "resnet50_cpu_results.json").read_text())["rows"]
    assert latency == {f"cpu.resnet50.bs{r['batch_size']}.p50_ms": pytest.approx(r["latency_p50_ms"]) for r in saved}
    assert "reference.start.matmul.ms" in run.data.metrics
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "run.json" in top and "report.html" not in top  # --no-html: no report page to send
    files = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "cpu/resnet50")}
    assert {"resnet50_cpu_results.json", "resnet50_cpu_results.csv"} <= files


def test_the_default_store_lives_under_the_results_folder(tmp_path):
    assert history.tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve() / history.STORE_NAME}"
    assert history.tracking_uri("http://mlflow:5000", tmp_path) == "http://mlflow:5000"


def test_a_plain_run_does_not_need_mlflow(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the history extra were not installed
    assert runner.main(["--device", "cpu", "--quick", "--output", str(tmp_path), "--mlflow"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install" in err
    history.log_history(tmp_path, type("Args", (), {"mlflow": None})())  # no --mlflow: nothing imported
