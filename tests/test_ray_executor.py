"""``run_notebooks.py --executor ray`` on a local Ray instance (2 CPUs): same results as the local runner,
CPU timing jobs never overlap, a killed worker is recorded and resumable, several device targets (one placed by a
Ray node label) each get their tree and a "Where it ran" row, and every refusal is one line.

Kept cheap: quick (tiny) models, the benchmark notebook only, no HTML export.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from _stub_notebooks import make_stub_notebooks
from infopt.run import runner
from infopt.run import cli
from infopt.run.ray_executor import (RayExecutorError, check_options, check_targets, matching_nodes, pack,
                                 probe_address, task_options, unpack)

REPO = Path(__file__).resolve().parent.parent
MODELS = ["resnet50", "distilbert"]
QUICK = ["--device", "cpu", "--quick", "--notebooks", "benchmark", "--no-html"]
LABEL = {"infopt-test": "yes"}  # the local Ray node's label, so a second CPU target can select it


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
    args = cli.build_parser().parse_args(["--ray-address", "10.0.0.1:6379"])
    with pytest.raises(RayExecutorError, match="only applies to --executor ray"):
        check_options(args)
    args = cli.build_parser().parse_args(["--executor", "ray", "--device", "cuda:1"])
    with pytest.raises(RayExecutorError, match="whole GPU"):
        check_options(args)
    check_options(cli.build_parser().parse_args(["--executor", "ray", "--device", "cuda"]))  # Ray picks it
    with pytest.raises(RayExecutorError, match="--threads applies to the local executor"):
        check_options(cli.build_parser().parse_args(["--executor", "ray", "--threads", "1"]))
    with pytest.raises(RayExecutorError, match="HOST:PORT"):
        probe_address("no-port-here")


def test_unknown_executor_and_unavailable_device_are_refused(tmp_path, capsys):
    assert runner.main(["--executor", "dask", "--output", str(tmp_path)]) == 2
    assert "invalid choice" in capsys.readouterr().err
    import torch

    if not torch.cuda.is_available():  # no GPU on the test machine: refused before Ray starts
        # a local Ray instance runs on this machine, so its targets are checked here, the missing one named
        assert runner.main(["--executor", "ray", "--device", "cuda", "cpu", "--output", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "'cuda' was requested but" in err
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


def test_a_targets_selector_becomes_rays_accelerator_type_and_label_selector():
    pytest.importorskip("ray")
    from infopt.devices import resolve_targets

    h100, labelled_cpu = resolve_targets(["cuda@accelerator_type:H100,zone=a", "cpu@zone=b"], ray=True,
                                         check_locally=False)
    gpu = task_options(None, h100, None)
    assert gpu["num_gpus"] == 1 and gpu["accelerator_type"] == "H100" and gpu["label_selector"] == {"zone": "a"}
    nodes = [{"NodeID": "a" * 56, "Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0, "accelerator_type:H100": 1.0},
              "Labels": {"zone": "a"}},
             {"NodeID": "b" * 56, "Alive": True, "Resources": {"CPU": 4.0}, "Labels": {"zone": "b"}},
             {"NodeID": "c" * 56, "Alive": False, "Resources": {"CPU": 4.0}, "Labels": {"zone": "b"}}]
    assert [n["NodeID"][0] for n in matching_nodes(nodes, h100)] == ["a"]
    assert [n["NodeID"][0] for n in matching_nodes(nodes, labelled_cpu)] == ["b"]  # alive and labelled
    cpu = task_options(None, labelled_cpu, nodes[1])
    assert cpu["num_cpus"] == 4.0 and cpu["scheduling_strategy"].node_id == "b" * 56

    class Cluster:
        def nodes(self):
            return nodes[1:]

    check_targets(Cluster(), [labelled_cpu])
    with pytest.raises(RayExecutorError, match=r"--device cuda@accelerator_type:H100,zone=a: no node of the Ray "
                                               r"cluster \(1 alive\) has a GPU of accelerator type H100"):
        check_targets(Cluster(), [labelled_cpu, h100])


def _fake_two_target_run(root: Path) -> Path:
    """A Ray run with a result file per target, as a worker host left it (no kernel, no Ray)."""
    import pandas as pd

    run = root / "r"
    for label in ("cpu", "cpu-zone-a"):
        folder = run / label / "resnet50"
        folder.mkdir(parents=True)
        pd.DataFrame([{"model": "resnet50", "device": "cpu", "batch_size": 1, "status": "ok",
                       "latency_p50_ms": 2.0 if label == "cpu" else 3.0}]).to_csv(
            folder / "resnet50_cpu_results.csv", index=False)

    def entry(label, target, host, **extra):
        return {"key": f"{label}/resnet50/benchmark", "notebook": "benchmark", "model": "resnet50", "device": label,
                "target": target, "host": host, "status": "succeeded", "path": f"{label}/resnet50/benchmark.ipynb",
                "parameters": {"device": "cpu"}, "placement": {"host": host, "node_id": host[-1] * 56}, **extra}

    manifest = {"settings": {"quick": True}, "status": "succeeded",
                "environment": {"hostname": "driver", "cpu_model": "Driver CPU"},
                "executor": {"name": "ray", "hosts": {"worker-1": {"cpu_model": "Worker CPU"}}},
                "targets": [{"label": "cpu", "target": "cpu"}, {"label": "cpu-zone-a", "target": "cpu@zone=a"}],
                "notebooks": [entry("cpu", "cpu", "worker-1"),
                              entry("cpu-zone-a", "cpu@zone=a", "worker-2", device_name="Zone CPU"),
                              {"key": "report", "notebook": "report", "model": None, "status": "succeeded"}]}
    (run / "run.json").write_text(json.dumps(manifest))
    return run


def test_report_rows_carry_the_worker_host_and_keep_targets_apart(tmp_path):
    from infopt import report
    from infopt.report import summary

    run = _fake_two_target_run(tmp_path)
    frame = report.gather(tmp_path)
    rows = frame.set_index("target")
    assert rows.loc["cpu", "host"] == "worker-1" and rows.loc["cpu-zone-a", "host"] == "worker-2"  # not "driver"
    assert sorted(frame["device"]) == ["cpu", "cpu-zone-a"]  # a target that says more than "cpu" is shown
    head = summary.headline(frame)
    assert sorted(head["device"]) == ["cpu", "cpu-zone-a"] and sorted(head["latency_p50_ms"]) == [2.0, 3.0]
    assert sorted(summary.load_headline(run)["device"]) == ["cpu", "cpu-zone-a"]  # the terminal's table too
    where = report.placements(tmp_path).set_index("target")
    assert list(where.columns) == [c for c in report.PLACEMENT_COLUMNS if c != "target"]
    assert where.loc["cpu", "device"] == "Worker CPU" and where.loc["cpu@zone=a", "device"] == "Zone CPU"
    assert where.loc["cpu", "ray_node"] == "1" * 16 and where.loc["cpu@zone=a", "host"] == "worker-2"
    assert where.loc["cpu", "jobs"] == 1 and where.loc["cpu", "statuses"] == "1 succeeded"


# -- on a local Ray instance --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False, labels=LABEL)
    yield ray
    ray.shutdown()


def _killing_notebook_dir(tmp_path: Path) -> Path:
    """Stand-in notebooks (:mod:`_stub_notebooks`: seconds per kernel), with benchmark.ipynb killing the Ray worker
    that runs it (its kernel's parent) on the plain ``cpu`` target (not on ``cpu@infopt-test=yes``)."""
    import nbformat

    folder = make_stub_notebooks(tmp_path / "notebooks")
    nb = nbformat.read(folder / "benchmark.ipynb", as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])) + 1
    nb.cells.insert(at, nbformat.v4.new_code_cell(  # after papermill's injected parameters: resnet50 only
        "import os, signal\nif 'infopt-test' not in output_dir:\n    os.kill(os.getppid(), signal.SIGKILL)"))
    nbformat.write(nb, folder / "benchmark.ipynb")
    return folder


def test_a_killed_worker_is_recorded_and_resume_reruns_only_it(local_ray, tmp_path, capsys):
    notebooks = _killing_notebook_dir(tmp_path)
    out = tmp_path / "out"
    common = ["--output", str(out), "--run-name", "r", "--executor", "ray"]
    killed, kept = "cpu/resnet50/benchmark", "cpu-infopt-test-yes/resnet50/benchmark"
    assert runner.main([*QUICK[:2], "cpu@infopt-test=yes", *QUICK[2:], "--models", "resnet50", "--notebook-dir",
                        str(notebooks), *common]) == 1
    entry = {e["key"]: e for e in _manifest(out / "r")["notebooks"]}
    assert entry[killed]["status"] == "failed"
    assert "worker" in entry[killed]["error"].lower()
    assert entry[kept]["status"] == "succeeded"  # the rest of the run went on
    assert "died" in capsys.readouterr().err
    make_stub_notebooks(notebooks)  # the fault is gone
    assert runner.main(["--resume", *common]) == 0
    manifest = _manifest(out / "r")
    entries = {e["key"]: e for e in manifest["notebooks"]}
    assert {k: e["status"] for k, e in entries.items()} == {killed: "succeeded", kept: "skipped",
                                                         "report": "succeeded"}
    assert entries[kept]["placement"] == entry[kept]["placement"]  # kept
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


def test_a_target_no_node_can_serve_is_refused_in_one_line(local_ray, tmp_path, capsys):
    out = tmp_path / "out"
    assert runner.main(["--device", "cpu", "cpu@infopt-test=no", "--quick", "--models", "resnet50", "--executor",
                        "ray", "--output", str(out), "--run-name", "none"]) == 2  # no node has that label
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "no node of the Ray cluster (1 alive) has CPUs with the label infopt-test=no" in err
    assert not (out / "none").exists()


def test_a_ray_run_of_two_cpu_targets_matches_the_local_runner_never_overlaps_and_shows_where_it_ran(
        local_ray, tmp_path, capsys):
    """One Ray run of two targets (one placed by a node label, which only Ray can place) against the local
    runner's run of the first: the same files and statuses there, each target its own tree, the two CPU jobs one
    after the other (each asks for every CPU of the node), and the report's "Where it ran" row."""
    out = tmp_path / "out"
    common = ["--quick", "--notebooks", "benchmark", "--no-html", "--models", "resnet50", "--output", str(out)]
    assert runner.main(["--device", "cpu", *common, "--run-name", "local"]) == 0
    capsys.readouterr()
    assert runner.main(["--device", "cpu", "cpu@infopt-test=yes", *common, "--executor", "ray",
                        "--run-name", "two"]) == 0
    run = out / "two"
    assert {f for f in _files(run) if not f.startswith("cpu-infopt-test-yes/")} == _files(out / "local")
    for label in ("cpu", "cpu-infopt-test-yes"):
        assert (run / label / "resnet50" / "benchmark.ipynb").is_file()
        assert (run / label / "resnet50" / "resnet50_cpu_results.json").is_file()
    manifest = _manifest(run)
    assert manifest["executor"]["name"] == "ray" and manifest["executor"]["hosts"]
    assert [t["target"] for t in manifest["targets"]] == ["cpu", "cpu@infopt-test=yes"]
    entries = {e["key"]: e for e in manifest["notebooks"]}
    local = {e["key"]: e["status"] for e in _manifest(out / "local")["notebooks"]}
    assert local == {"resnet50/benchmark": "succeeded", "report": "succeeded"}
    assert {k: e["status"] for k, e in entries.items()} == {
        "cpu/resnet50/benchmark": "succeeded", "cpu-infopt-test-yes/resnet50/benchmark": "succeeded",
        "report": "succeeded"}
    node = local_ray.get_runtime_context().get_node_id()
    placed = []
    for key, target in (("cpu/resnet50/benchmark", "cpu"), ("cpu-infopt-test-yes/resnet50/benchmark",
                                                            "cpu@infopt-test=yes")):
        entry = entries[key]
        assert entry["target"] == target and entry["placement"]["node_id"] == node
        assert entry["host"] == entry["placement"]["host"] in manifest["executor"]["hosts"]
        placed.append(entry["placement"])
    first, second = sorted(placed, key=lambda p: p["started_unix"])  # both ask for every CPU of the node
    assert first["ended_unix"] <= second["started_unix"]
    summary_text = capsys.readouterr().out.split("Summary (details in report.html):", 1)[1]
    assert "cpu-infopt-test-yes" in summary_text  # one headline row per target
    import nbformat

    report = nbformat.read(run / "report.ipynb", as_version=4)
    cell = next(c for c in report.cells if "scope.placements()" in c.source)
    html = "".join(str(o.get("data", {}).get("text/html", "")) for o in cell.outputs)
    for text in ("cpu@infopt-test=yes", "cpu-infopt-test-yes", node[:16], "1 succeeded"):
        assert text in html, text
