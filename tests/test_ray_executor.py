"""``run_notebooks.py --executor ray`` on a local Ray instance (2 CPUs): same results as the local runner,
CPU timing jobs never overlap, a killed worker is recorded and resumable, and every refusal is one line.

Kept cheap: quick (tiny) models, the benchmark notebook only, no HTML export.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from infopt import runner
from infopt.ray_executor import RayExecutorError, check_options, pack, probe_address, task_options, unpack

REPO = Path(__file__).resolve().parent.parent
MODELS = ["resnet50", "distilbert"]
QUICK = ["--device", "cpu", "--quick", "--notebooks", "benchmark", "--no-html"]


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def _files(run_dir: Path) -> set[str]:
    """Result files of a run, relative: notebooks, CSV/JSON results, charts (not the manifest or kernel logs)."""
    return {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")
            if p.is_file() and not p.name.startswith(".") and p.name != "run.json"}


# -- refusals: one line, exit 2, nothing run (no Ray instance needed) ---------------------------------

def test_without_ray_installed_the_ray_executor_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code = runner.main([*QUICK, "--models", "resnet50", "--executor", "ray", "--output", str(tmp_path / "out"),
                        "--run-name", "r"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert 'pip install -e ".[ray]"' in err
    assert not (tmp_path / "out" / "r").exists()


def test_unreachable_cluster_stops_with_one_line_before_anything_runs(tmp_path, capsys):
    code = runner.main([*QUICK, "--models", "resnet50", "--executor", "ray", "--ray-address", "127.0.0.1:1",
                        "--output", str(tmp_path / "out"), "--run-name", "r"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Cannot reach the Ray cluster at 127.0.0.1:1" in err
    assert not (tmp_path / "out" / "r").exists()


def test_option_misfits_are_refused():
    args = runner.build_parser().parse_args(["--ray-address", "10.0.0.1:6379"])
    with pytest.raises(RayExecutorError, match="only applies to --executor ray"):
        check_options(args)
    args = runner.build_parser().parse_args(["--executor", "ray", "--device", "cuda:1"])
    with pytest.raises(RayExecutorError, match="whole GPU"):
        check_options(args)
    check_options(runner.build_parser().parse_args(["--executor", "ray", "--device", "cuda"]))  # Ray picks it
    with pytest.raises(RayExecutorError, match="HOST:PORT"):
        probe_address("no-port-here")


def test_unknown_executor_and_unavailable_device_are_refused(tmp_path, capsys):
    assert runner.main(["--executor", "dask", "--output", str(tmp_path)]) == 2
    assert "invalid choice" in capsys.readouterr().err
    # several devices in one run are not supported yet: refused in one line, not half-run
    assert runner.main(["--executor", "ray", "--device", "cuda", "cpu", "--output", str(tmp_path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    import torch

    if not torch.cuda.is_available():  # no GPU on the test machine: refused before Ray starts
        code = runner.main(["--executor", "ray", "--device", "cuda", "--quick", "--models", "resnet50",
                            "--output", str(tmp_path / "out"), "--run-name", "r"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "cuda" in err.lower()


def test_files_travel_and_land_atomically_inside_the_model_folder(tmp_path):
    source = tmp_path / "a"
    (source / "charts").mkdir(parents=True)
    (source / "x.csv").write_text("1\n")
    (source / "charts" / "c.json").write_text("{}")
    (source / ".memory.partial.ipynb").write_text("half")
    files = pack(source)
    assert set(files) == {"x.csv", "charts/c.json"}
    unpack(files, tmp_path / "b")
    assert (tmp_path / "b" / "charts" / "c.json").read_text() == "{}"
    assert not [p for p in (tmp_path / "b").rglob("*.tmp")]
    with pytest.raises(RayExecutorError, match="outside"):
        unpack({"../escape.txt": b"x"}, tmp_path / "b")


def test_a_gpu_job_asks_for_one_whole_gpu_and_a_cpu_job_for_every_cpu_of_its_node():
    pytest.importorskip("ray")
    node = {"NodeID": "ab" * 28, "Resources": {"CPU": 16.0, "GPU": 4.0}}
    gpu = task_options(None, "cuda", node)
    assert gpu["num_gpus"] == 1 and gpu["max_retries"] == 0 and "scheduling_strategy" not in gpu
    cpu = task_options(None, "cpu", node)
    assert cpu["num_cpus"] == 16.0 and cpu["max_retries"] == 0
    assert cpu["scheduling_strategy"].node_id == node["NodeID"] and cpu["scheduling_strategy"].soft is False


# -- on a local Ray instance --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_run_matches_the_local_runner_and_cpu_jobs_never_overlap(local_ray, tmp_path, capsys):
    out = tmp_path / "out"
    assert runner.main([*QUICK, "--models", *MODELS, "--output", str(out), "--run-name", "local"]) == 0
    assert runner.main([*QUICK, "--models", *MODELS, "--executor", "ray", "--output", str(out),
                        "--run-name", "ray"]) == 0
    local, ray_run = out / "local", out / "ray"
    assert _files(ray_run) == _files(local)
    statuses = {run: {e["key"]: e["status"] for e in _manifest(out / run)["notebooks"]} for run in ("local", "ray")}
    assert statuses["ray"] == statuses["local"] == {"resnet50/benchmark": "succeeded",
                                                    "distilbert/benchmark": "succeeded", "report": "succeeded"}
    manifest = _manifest(ray_run)
    assert manifest["executor"]["name"] == "ray" and manifest["executor"]["hosts"]
    placed = [e["placement"] for e in manifest["notebooks"] if e["model"]]
    node = local_ray.get_runtime_context().get_node_id()
    assert all(p["node_id"] == node and p["host"] in manifest["executor"]["hosts"] for p in placed)
    # each CPU job asked for both CPUs of the node: the two models' jobs ran one after the other
    first, second = sorted(placed, key=lambda p: p["started_unix"])
    assert first["ended_unix"] <= second["started_unix"]


def _killing_notebook_dir(tmp_path: Path) -> Path:
    """The repository's notebooks, with benchmark.ipynb killing the Ray worker that runs it (its kernel's parent)."""
    import nbformat

    folder = tmp_path / "notebooks"
    shutil.copytree(REPO / "notebooks", folder, ignore=shutil.ignore_patterns("*.py"))
    nb = nbformat.read(folder / "benchmark.ipynb", as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])) + 1
    nb.cells.insert(at, nbformat.v4.new_code_cell(  # after papermill's injected parameters: resnet50 only
        "import os, signal\nif model == 'resnet50':\n    os.kill(os.getppid(), signal.SIGKILL)"))
    nbformat.write(nb, folder / "benchmark.ipynb")
    return folder


def test_a_killed_worker_is_recorded_and_resume_reruns_only_it(local_ray, tmp_path, capsys):
    notebooks = _killing_notebook_dir(tmp_path)
    out = tmp_path / "out"
    common = ["--output", str(out), "--run-name", "r", "--executor", "ray"]
    assert runner.main([*QUICK, "--models", *MODELS, "--notebook-dir", str(notebooks), *common]) == 1
    entry = {e["key"]: e for e in _manifest(out / "r")["notebooks"]}
    assert entry["resnet50/benchmark"]["status"] == "failed"
    assert "worker" in entry["resnet50/benchmark"]["error"].lower()
    assert entry["distilbert/benchmark"]["status"] == "succeeded"  # the rest of the run went on
    assert "died" in capsys.readouterr().err
    shutil.copy(REPO / "notebooks" / "benchmark.ipynb", notebooks / "benchmark.ipynb")  # the fault is gone
    assert runner.main(["--resume", *common]) == 0
    manifest = _manifest(out / "r")
    entries = {e["key"]: e for e in manifest["notebooks"]}
    assert {k: e["status"] for k, e in entries.items()} == {
        "resnet50/benchmark": "succeeded", "distilbert/benchmark": "skipped", "report": "succeeded"}
    assert entries["distilbert/benchmark"]["placement"] == entry["distilbert/benchmark"]["placement"]  # kept
    assert manifest["previous_attempts"][-1]["status"] == "failed"


def test_ctrl_c_cancels_running_jobs_and_marks_the_run_interrupted(local_ray, tmp_path, monkeypatch, capsys):
    cancelled = []
    real_cancel = local_ray.cancel

    def interrupted_wait(*args, **kwargs):
        raise KeyboardInterrupt

    def recording_cancel(ref, **kwargs):
        cancelled.append(ref)
        return real_cancel(ref, **kwargs)

    monkeypatch.setattr(local_ray, "wait", interrupted_wait)
    monkeypatch.setattr(local_ray, "cancel", recording_cancel)
    out = tmp_path / "out"
    assert runner.main([*QUICK, "--models", *MODELS, "--executor", "ray", "--output", str(out),
                        "--run-name", "r"]) == 130
    manifest = _manifest(out / "r")
    assert manifest["status"] == "interrupted"
    statuses = {e["key"]: e["status"] for e in manifest["notebooks"]}
    # both models' first jobs were submitted (one waits for the CPUs) and both were cancelled
    assert statuses == {"resnet50/benchmark": "interrupted", "distilbert/benchmark": "interrupted",
                        "report": "not run"}
    assert len(cancelled) == 2
    assert "Interrupted by Ctrl-C" in capsys.readouterr().err
