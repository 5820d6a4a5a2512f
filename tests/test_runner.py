"""The papermill runner: validation before any kernel, failure handling, refusal to overwrite, --resume.

Execution tests use tiny stand-in notebooks (no torch import) so real kernels
start and finish in seconds; the real notebooks run in test_end_to_end.py.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from infopt.run import runner
from infopt.run import executors
from infopt.run import execute as execute_module
from infopt.run import manifest as manifest_module
from infopt.run import estimate
from infopt.run import plan as plan_module
from infopt.run import cli

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
from _stub_notebooks import FAIL_ENV, SLEEP_ENV, _notebook, make_stub_notebooks

@pytest.fixture
def stub_notebooks(tmp_path):
    return make_stub_notebooks(tmp_path / "notebooks")


@pytest.fixture
def no_kernel(monkeypatch):
    """Fail the test if anything tries to execute a notebook."""
    def refuse(*args, **kwargs):
        raise AssertionError("a notebook was executed")
    monkeypatch.setattr(papermill, "execute_notebook", refuse)


def _base(tmp_path, *extra):
    return ["--device", "cpu", "--quick", "--output", str(tmp_path / "results"), "--run-name", "r", *extra]


@pytest.mark.parametrize("extra, message", [
    (["--models", "resnet51"], "Unknown model 'resnet51'"),
    (["--batch-sizes", "1", "0"], "must be at least 1"),
    (["--batch-sizes", "two"], "expected an integer"),
    (["--notebooks", "benchmark", "nope"], "Unknown notebook 'nope'"),
    (["--param", "no_such_parameter=3"], "no_such_parameter"),
    (["--timeout", "0"], "must be at least 1"),
    (["--threads", "0"], "must be at least 1"),
    (["--threads", "4097"], "--threads 4097: this machine lets the run use"),
    (["--run-name", "a/b"], "plain folder name"),
])
def test_bad_input_is_one_line_exit_2_and_no_kernel(tmp_path, capsys, no_kernel, extra, message):
    args = _base(tmp_path)
    if "--run-name" in extra:
        args = args[:-2]
    assert runner.main(args + extra) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "results").exists()


def test_unavailable_device_is_refused_before_any_kernel(tmp_path, capsys, no_kernel):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert runner.main(["--device", "cuda", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cuda" in err.lower()


def test_command_line_reports_bad_model_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "run_notebooks.py"), "--device", "cpu", "--models", "bert",
                           "--output", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Unknown model 'bert'" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_notebook_without_a_parameter_the_runner_passes_is_refused(tmp_path, capsys, stub_notebooks, no_kernel):
    _notebook(stub_notebooks / "benchmark.ipynb", 'model: str = "resnet50"  # model', "pass")
    code = runner.main(_base(tmp_path, "--notebook-dir", str(stub_notebooks), "--notebooks", "benchmark"))
    err = capsys.readouterr().err
    assert code == 2 and "has no parameter named" in err and len(err.strip().splitlines()) == 1


def test_list_shows_notebook_parameters(capsys):
    assert runner.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "benchmark" in out and "batch_sizes: list" in out and "results_dir: str" in out


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def test_failing_notebook_is_recorded_others_run_and_exit_1_then_resume(tmp_path, stub_notebooks, monkeypatch,
                                                                       capsys):
    args = _base(tmp_path, "--notebook-dir", str(stub_notebooks), "--notebooks", "benchmark", "--no-html")
    run_dir = tmp_path / "results" / "r"
    monkeypatch.setenv(FAIL_ENV, "gpt2")
    assert runner.main(args) == 1
    manifest = _manifest(run_dir)
    status = {entry["key"]: entry for entry in manifest["notebooks"]}
    assert manifest["status"] == "failed"
    assert status["gpt2/benchmark"]["status"] == "failed"
    assert "injected failure for gpt2" in status["gpt2/benchmark"]["error"]
    assert {status[k]["status"] for k in ("resnet50/benchmark", "distilbert/benchmark", "report")} == {"succeeded"}
    # the failed notebook is kept, with papermill's error banner
    failed_nb = (run_dir / "cpu" / "gpt2" / "benchmark.ipynb").read_text()
    assert "An Exception was encountered" in failed_nb and "injected failure" in failed_nb
    # the report still ran over what exists
    assert (run_dir / "report_saw.txt").read_text().split() == ["distilbert_stub.json", "resnet50_stub.json"]
    out = capsys.readouterr().out
    assert "gpt2/benchmark" in out and "failed" in out  # summary table
    # each kernel ran this very interpreter
    stub = json.loads((run_dir / "cpu" / "resnet50" / "resnet50_stub.json").read_text())
    assert Path(stub["executable"]).resolve() == Path(sys.executable).resolve()
    assert stub["batch_sizes"] == [1, 2, 4]  # the --quick default reached the notebook
    assert manifest["command"][0] == "run_notebooks.py" and manifest["environment"]["hostname"]
    assert all(entry["duration_s"] > 0 for entry in manifest["notebooks"])

    # same name without --resume: refused, nothing touched
    before = (run_dir / "run.json").read_text()
    assert runner.main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert (run_dir / "run.json").read_text() == before

    # --resume: the successful notebooks are skipped, the failed one re-runs (and may replace its stale files)
    monkeypatch.delenv(FAIL_ENV)
    resnet_stub = run_dir / "cpu" / "resnet50" / "resnet50_stub.json"
    mtime = resnet_stub.stat().st_mtime_ns
    assert runner.main(args + ["--resume"]) == 0
    manifest = _manifest(run_dir)
    status = {entry["key"]: entry["status"] for entry in manifest["notebooks"]}
    assert status == {"distilbert/benchmark": "skipped", "gpt2/benchmark": "succeeded",
                      "resnet50/benchmark": "skipped", "report": "succeeded"}
    assert manifest["status"] == "succeeded" and len(manifest["previous_attempts"]) == 1
    assert resnet_stub.stat().st_mtime_ns == mtime
    assert (run_dir / "report_saw.txt").read_text().split() == ["distilbert_stub.json", "gpt2_stub.json",
                                                                "resnet50_stub.json"]


def test_ctrl_c_marks_the_run_interrupted_and_keeps_finished_results(tmp_path, stub_notebooks, monkeypatch, capsys):
    real_execute = executors.execute
    calls = []

    def execute_then_interrupt(job, **kwargs):
        calls.append(job.key)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_execute(job, **kwargs)

    monkeypatch.setattr(executors, "execute", execute_then_interrupt)
    code = runner.main(_base(tmp_path, "--notebook-dir", str(stub_notebooks), "--notebooks", "benchmark",
                             "--no-html"))
    assert code == 130
    manifest = _manifest(tmp_path / "results" / "r")
    status = {entry["key"]: entry["status"] for entry in manifest["notebooks"]}
    assert manifest["status"] == "interrupted"
    assert status == {"distilbert/benchmark": "succeeded", "gpt2/benchmark": "interrupted",
                      "resnet50/benchmark": "not run", "report": "not run"}
    assert (tmp_path / "results" / "r" / "cpu" / "distilbert" / "distilbert_stub.json").is_file()
    assert "interrupted" in capsys.readouterr().err


def test_html_export_keeps_charts_from_text_html(tmp_path):
    nb = new_notebook(cells=[new_code_cell("x")])
    nb.cells[0].outputs = [nbformat.v4.new_output("display_data", data={
        "text/html": '<div class="plotly-graph-div">chart</div>',
        "application/vnd.plotly.v1+json": {"data": [], "layout": {}}})]
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, str(path))
    html = execute_module.export_html(path).read_text()
    assert 'class="plotly-graph-div"' in html


@pytest.mark.parametrize("name", ["benchmark", "profile", "memory", "optimize", "serve", "report"])
def test_committed_notebooks_have_one_documented_parameters_cell_and_no_outputs(name):
    nb = nbformat.read(str(NOTEBOOKS / f"{name}.ipynb"), as_version=4)
    tagged = [cell for cell in nb.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1
    declared = papermill.inspect_notebook(str(NOTEBOOKS / f"{name}.ipynb"))
    assert len(declared) == len(tagged[0].source.strip().splitlines())  # every line parsed
    assert all(p["help"] and p["inferred_type_name"] != "None" for p in declared.values())
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")
    if name != "report":
        assert {"model", "device", "size", "quick", "output_dir", "interactive"} <= set(declared)


def test_committed_notebooks_are_generated_from_their_percent_sources(tmp_path):
    """notebooks/<name>.py is the source; each committed .ipynb must be exactly what it generates."""
    from infopt import notebook

    sources = notebook.notebook_sources()
    assert [p.stem for p in sources] == sorted(["benchmark", "profile", "memory", "optimize", "serve", "report"])
    assert notebook.stale_notebooks() == []
    # and the check bites: an edited source makes its notebook stale, sync repairs it
    for source in sources:
        (tmp_path / source.name).write_text(source.read_text())
        (tmp_path / source.with_suffix(".ipynb").name).write_text(source.with_suffix(".ipynb").read_text())
    edited = tmp_path / "memory.py"
    edited.write_text(edited.read_text().replace("timeline_batch_size: int = 8", "timeline_batch_size: int = 2"))
    assert notebook.stale_notebooks(tmp_path) == [tmp_path / "memory.ipynb"]
    assert notebook.sync_notebooks(tmp_path) == [tmp_path / "memory.ipynb"]
    assert notebook.stale_notebooks(tmp_path) == []
    assert papermill.inspect_notebook(str(tmp_path / "memory.ipynb"))["timeline_batch_size"]["default"] == "2"


@pytest.mark.parametrize("name", ["benchmark", "profile", "memory", "optimize", "serve"])
def test_notebook_defaults_are_the_full_preset(name):
    """The notebooks' literal defaults and the runner's parameters come from one preset: the full run on the
    notebooks' default device, the CPU (infopt.presets.FULL_CPU: capped timing, no torch.compile)."""
    from infopt import presets

    declared = papermill.inspect_notebook(str(NOTEBOOKS / f"{name}.ipynb"))
    assert ast.literal_eval(declared["device"]["default"]) == "cpu"
    for key, value in presets.preset_for(False, "cpu").notebook_parameters(name).items():
        assert key in declared, key
        assert ast.literal_eval(declared[key]["default"]) == value, (name, key)


def test_runner_parameters_come_from_the_preset(tmp_path):
    from infopt import presets

    args = cli.build_parser().parse_args(["--device", "cpu", "--output", str(tmp_path), "--run-name", "x"])
    plan = plan_module.build_plan(args)
    assert plan.settings["preset"] == "full-cpu"
    assert plan.settings["preset_values"]["benchmark_max_time_s"] == presets.CPU_BENCHMARK_MAX_TIME_S
    optimize = next(job for job in plan.jobs if job.key == "gpt2/optimize")
    assert optimize.parameters["max_time_s"] == presets.CPU_VARIANT_MAX_TIME_S
    assert optimize.parameters["include_compile"] is True  # the compiled paths are in the default CPU run (#23)
    assert optimize.parameters["search"] == "racing"
    profile = next(job for job in plan.jobs if job.key == "resnet50/profile")
    assert profile.parameters["batch_size"] == 8
    assert profile.parameters["peaks_path"] == str(tmp_path.resolve() / "x" / "cpu" / "device_peaks.json")
    args = cli.build_parser().parse_args(["--device", "cpu", "--quick", "--batch-sizes", "3", "16",
                                             "--output", str(tmp_path), "--run-name", "y"])
    plan = plan_module.build_plan(args)
    params = {job.key: job.parameters for job in plan.jobs}
    assert plan.settings["preset"] == "quick"
    assert params["gpt2/memory"]["batch_sizes"] == [3, 16] and params["gpt2/memory"]["timeline_batch_size"] == 3
    assert params["gpt2/optimize"]["batch_sizes"] == [3, 16]
    assert params["gpt2/benchmark"]["size"] == "tiny" and params["gpt2/benchmark"]["seq_len"] == 32


# -- faults (issue 13): every case asserts exit code, stderr lines, the manifest's final state, files left ------

def _err_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _leftovers(run_dir: Path) -> list[str]:
    """Files that must never survive a run: partial notebooks, temporary writes, the lock."""
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
                  if ".partial" in p.name or p.name.endswith(".tmp") or p.name == ".run.lock")


@pytest.mark.parametrize("param, message", [
    ("device=cuda", "--param device is set by the runner: use --device instead"),
    ("batch_sizes=[0]", "use --batch-sizes instead"),
    ("model=gpt2", "use --models instead"),
    ("quick=true", "use --quick instead"),
    ("output_dir=/tmp/x", "use --output and --run-name instead"),
    ("max_time_s=abc", "--param max_time_s=abc: expected a number (JSON syntax), got 'abc'"),
    ("max_time_s=true", "expected a number"),
    ("max_time_s=0", "must be above 0"),
    ("seq_len=0", "must be at least 1"),
    ("seq_len=2.5", "expected an integer"),
    ("prompt_lengths=[8, 0]", "every entry must be an integer of at least 1"),
    ("prompt_lengths=[]", "at least one length"),
    ("new_tokens=[8]", "expected an integer"),
    ("=3", "expected NAME=VALUE"),
])
def test_param_is_checked_like_the_named_flags_before_any_kernel(tmp_path, capsys, stub_notebooks, no_kernel,
                                                                 param, message):
    code = runner.main(_base(tmp_path, "--notebook-dir", str(stub_notebooks), "--notebooks", "benchmark",
                             "--param", param))
    err = capsys.readouterr().err
    assert code == 2 and len(_err_lines(err)) == 1 and message in err, err
    assert not (tmp_path / "results").exists()


def test_valid_params_are_converted_to_their_declared_type(tmp_path, stub_notebooks):
    args = cli.build_parser().parse_args(_base(tmp_path, "--notebook-dir", str(stub_notebooks), "--notebooks",
                                                  "benchmark", "--param", "max_time_s=2", "--param",
                                                  "no_cache_prompt_lengths=[]"))
    plan = plan_module.build_plan(args)
    assert plan.settings["extra_parameters"] == {"max_time_s": 2.0, "no_cache_prompt_lengths": []}
    benchmark = plan.jobs[0].parameters
    assert benchmark["max_time_s"] == 2.0 and isinstance(benchmark["max_time_s"], float)


@pytest.mark.parametrize("extra, message", [
    (["--run-name", ""], "--run-name must not be empty"),
    (["--run-name", "x" * 300], "the limit is 120"),
    (["--device", "gpu"], "invalid choice: 'gpu'"),
    (["--resume"], "--resume needs the --run-name"),
])
def test_run_names_and_devices_are_refused_in_one_line(tmp_path, capsys, no_kernel, extra, message):
    args = ["--device", "cpu", "--quick", "--output", str(tmp_path / "results")]
    assert runner.main(args + extra) == 2
    err = capsys.readouterr().err
    assert len(_err_lines(err)) == 1 and message in err, err
    assert not (tmp_path / "results").exists()


def test_device_cuda_n_is_accepted_by_the_command_line():
    args = cli.build_parser().parse_args(["--device", "cuda:1"])
    assert args.device == ["cuda:1"]
    args = cli.build_parser().parse_args(["--device", "CUDA", "cuda@ zone=a , accelerator_type:H100"])
    assert args.device == ["cuda", "cuda@accelerator_type:H100,zone=a"]  # canonical text; availability later


def test_output_that_is_a_file_or_read_only_is_one_line_exit_2(tmp_path, capsys, no_kernel, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert runner.main(["--device", "cpu", "--quick", "--output", str(a_file), "--run-name", "r"]) == 2
    err = capsys.readouterr().err
    assert len(_err_lines(err)) == 1 and "is a file, not a folder" in err
    assert a_file.read_text() == "x"

    def read_only(self, *args, **kwargs):
        raise OSError(30, "Read-only file system", str(self))
    monkeypatch.setattr(Path, "mkdir", read_only)
    assert runner.main(["--device", "cpu", "--quick", "--output", str(tmp_path / "ro"), "--run-name", "r"]) == 2
    err = capsys.readouterr().err
    assert len(_err_lines(err)) == 1 and "Cannot create the run folder" in err and "read-only file system" in err
    assert not (tmp_path / "ro").exists()


@pytest.mark.parametrize("content, message", [("{not json", "is not readable JSON"),
                                              ("[1, 2]", "is not a run manifest"),
                                              ('{"settings": 3}', "is not a run manifest")])
def test_resume_of_a_corrupt_or_non_object_manifest_is_one_line_exit_2(tmp_path, capsys, no_kernel, content,
                                                                       message):
    run_dir = tmp_path / "results" / "r"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(content)
    assert runner.main(_base(tmp_path, "--resume")) == 2
    err = capsys.readouterr().err
    assert len(_err_lines(err)) == 1 and message in err, err
    assert (run_dir / "run.json").read_text() == content and sorted(p.name for p in run_dir.iterdir()) == ["run.json"]


def _first_run(tmp_path, stub_notebooks, monkeypatch, fail="gpt2"):
    args = _base(tmp_path, "--notebook-dir", str(stub_notebooks), "--notebooks", "benchmark", "--no-html")
    monkeypatch.setenv(FAIL_ENV, fail)
    assert runner.main(args) == (1 if fail == "gpt2" else 0)
    monkeypatch.delenv(FAIL_ENV)
    return tmp_path / "results" / "r"


def test_resume_takes_the_runs_settings_and_refuses_contradicting_flags(tmp_path, stub_notebooks, monkeypatch,
                                                                        capsys):
    run_dir = _first_run(tmp_path, stub_notebooks, monkeypatch)
    capsys.readouterr()
    before = (run_dir / "run.json").read_text()
    resume = ["--output", str(tmp_path / "results"), "--run-name", "r", "--resume"]
    for extra, named in [(["--batch-sizes", "1"], "--batch-sizes 1"), (["--models", "gpt2"], "--models gpt2"),
                         (["--notebooks", "benchmark", "memory"], "--notebooks benchmark memory"),
                         (["--html"], "--html/--no-html True"), (["--param", "new_tokens=4"], "new_tokens=4")]:
        assert runner.main(resume + extra) == 2
        err = capsys.readouterr().err
        assert len(_err_lines(err)) == 1 and "contradicts the run's recorded" in err and named in err, err
        assert (run_dir / "run.json").read_text() == before
    # a job this runner does not plan (an older runner's) stays in the manifest as it was
    manifest = _manifest(run_dir)
    foreign = {"key": "vgg16/benchmark", "notebook": "benchmark", "model": "vgg16", "status": "failed",
               "error": "from an older runner"}
    manifest["notebooks"].append(foreign)
    (run_dir / "run.json").write_text(json.dumps(manifest))
    # without --quick and --notebook-dir the run continues as it started: quick, the same notebooks
    assert runner.main(resume) == 0
    manifest = _manifest(run_dir)
    assert manifest["settings"]["quick"] is True and manifest["settings"]["preset"] == "quick"
    status = {entry["key"]: entry["status"] for entry in manifest["notebooks"]}
    assert status == {"distilbert/benchmark": "skipped", "gpt2/benchmark": "succeeded",
                      "resnet50/benchmark": "skipped", "report": "succeeded", "vgg16/benchmark": "failed"}
    assert foreign in manifest["notebooks"]
    # every earlier attempt stays on record, with the failure it had
    (attempt,) = manifest["previous_attempts"]
    assert attempt["status"] == "failed"
    failed = {n["key"]: n for n in attempt["notebooks"]}["gpt2/benchmark"]
    assert failed["status"] == "failed" and "injected failure" in failed["error"]
    assert _leftovers(run_dir) == []


def test_a_live_lock_refuses_a_second_runner_and_a_stale_one_is_taken_over(tmp_path, stub_notebooks, monkeypatch,
                                                                          capsys):
    import socket

    run_dir = _first_run(tmp_path, stub_notebooks, monkeypatch, fail="none")
    capsys.readouterr()
    lock = run_dir / ".run.lock"
    resume = ["--output", str(tmp_path / "results"), "--run-name", "r", "--resume"]
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(json.dumps({"pid": live.pid, "host": socket.gethostname()}))
        before = (run_dir / "run.json").read_text()
        assert runner.main(resume) == 2
        err = capsys.readouterr().err
        assert len(_err_lines(err)) == 1 and f"in use by process {live.pid}" in err
        assert (run_dir / "run.json").read_text() == before and lock.is_file()
    finally:
        live.kill()
        live.wait(timeout=30)
    # the process is gone: its lock is stale, the resume proceeds and removes the lock at the end
    assert runner.main(resume) == 0
    assert not lock.exists() and _manifest(run_dir)["status"] == "succeeded"


def _runner_process(tmp_path, stub_notebooks, *extra, env=None, group=False):
    command = [sys.executable, str(REPO / "run_notebooks.py"), "--device", "cpu", "--quick", "--output",
               str(tmp_path / "results"), "--run-name", "r", "--notebook-dir", str(stub_notebooks),
               "--notebooks", "benchmark", "--no-html", *extra]
    # SIGINT back to its default in the child: a test session started in the background of a non-interactive
    # shell inherits SIGINT ignored, and Python then never raises KeyboardInterrupt (Ctrl-C could not be tested)
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(tmp_path),
                            env={**__import__("os").environ, **(env or {})}, start_new_session=group,
                            preexec_fn=_default_sigint)


def _default_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for(predicate, seconds=120.0):
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def _running(run_dir: Path, key: str) -> bool:
    try:
        entries = {e["key"]: e for e in _manifest(run_dir)["notebooks"]}
    except (OSError, ValueError, KeyError):
        return False
    return entries.get(key, {}).get("status") == "running"


def test_concurrent_runs_of_one_name_second_refused_in_one_line(tmp_path, stub_notebooks):
    run_dir = tmp_path / "results" / "r"
    release = tmp_path / "release"
    first = _runner_process(tmp_path, stub_notebooks, env={SLEEP_ENV: f"distilbert=until:{release}"})
    try:
        assert _wait_for(lambda: _running(run_dir, "distilbert/benchmark"))
        second = _runner_process(tmp_path, stub_notebooks)  # same new run
        out, err = second.communicate(timeout=120)
        assert second.returncode == 2 and len(_err_lines(err)) == 1 and "already exists" in err, err
        third = _runner_process(tmp_path, stub_notebooks, "--resume")  # a resume while it runs
        out, err = third.communicate(timeout=120)
        assert third.returncode == 2 and len(_err_lines(err)) == 1 and "is in use by process" in err, err
        release.touch()
        out, err = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0, err
    assert _err_lines(err) == [] and _manifest(run_dir)["status"] == "succeeded" and _leftovers(run_dir) == []


@pytest.mark.parametrize("sig, code, by, group", [
    ("SIGTERM", 143, "SIGTERM", False),
    ("SIGINT", 130, "Ctrl-C", False),
    ("SIGINT", 130, "Ctrl-C", True),  # as a terminal sends it: to the runner and its kernel at once
])
def test_sigterm_and_ctrl_c_mark_the_run_interrupted_and_keep_finished_results(tmp_path, stub_notebooks, sig, code,
                                                                              by, group):
    import os
    import signal
    import time

    run_dir = tmp_path / "results" / "r"
    proc = _runner_process(tmp_path, stub_notebooks, env={SLEEP_ENV: "gpt2=60"}, group=group)
    try:
        assert _wait_for(lambda: _running(run_dir, "gpt2/benchmark"))
        time.sleep(3)  # the kernel is in the sleeping cell
        if group:
            os.killpg(proc.pid, getattr(signal, sig))
        else:
            proc.send_signal(getattr(signal, sig))
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    lines = _err_lines(err)
    assert len(lines) == 1 and f"Interrupted by {by}" in lines[0], err  # no kernel or ZeroMQ traceback
    manifest = _manifest(run_dir)
    status = {entry["key"]: entry["status"] for entry in manifest["notebooks"]}
    assert manifest["status"] == "interrupted"
    assert status == {"distilbert/benchmark": "succeeded", "gpt2/benchmark": "interrupted",
                      "resnet50/benchmark": "not run", "report": "not run"}
    assert {e["key"]: e["error"] for e in manifest["notebooks"]}["gpt2/benchmark"] == f"stopped by {by}"
    assert (run_dir / "cpu" / "distilbert" / "benchmark.ipynb").is_file()
    assert not (run_dir / "cpu" / "gpt2" / "benchmark.ipynb").exists()  # never a partial that looks complete
    assert _leftovers(run_dir) == []


def test_a_timed_out_notebook_is_recorded_with_its_cell_and_the_limit(tmp_path, stub_notebooks):
    run_dir = tmp_path / "results" / "r"
    proc = _runner_process(tmp_path, stub_notebooks, "--timeout", "2", "--models", "gpt2",
                           env={SLEEP_ENV: "gpt2=30"})
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    entry = {e["key"]: e for e in _manifest(run_dir)["notebooks"]}["gpt2/benchmark"]
    # executed notebook: parameters cell, papermill's injected parameters, the sleeping cell (3), the body
    assert entry["status"] == "failed"
    assert entry["error"] == "CellTimeoutError: cell 3 of benchmark.ipynb ran past the --timeout of 2 s per cell"
    lines = _err_lines(err)
    assert len(lines) == 1 and lines[0] == f"FAILED gpt2/benchmark: {entry['error']}", err
    assert (run_dir / "cpu" / "gpt2" / "benchmark.ipynb").is_file() and _leftovers(run_dir) == []


def test_a_write_failure_stops_the_run_with_the_reason_and_leaves_no_partial_file(tmp_path, stub_notebooks,
                                                                                 monkeypatch, capsys):
    import errno

    real_execute = papermill.execute_notebook

    def disk_full_on_gpt2(source, output, **kwargs):
        if "gpt2" in output:
            Path(output).write_text('{"cells": [')  # papermill had started writing the executed notebook
            raise OSError(errno.ENOSPC, "No space left on device", output)
        return real_execute(source, output, **kwargs)

    monkeypatch.setattr(papermill, "execute_notebook", disk_full_on_gpt2)
    code = runner.main(_base(tmp_path, "--notebook-dir", str(stub_notebooks), "--notebooks", "benchmark",
                             "--no-html"))
    assert code == 1
    err = capsys.readouterr().err
    lines = _err_lines(err)
    assert len(lines) == 1 and "a file could not be written (no space left on device:" in lines[0], err
    run_dir = tmp_path / "results" / "r"
    manifest = _manifest(run_dir)
    status = {entry["key"]: entry["status"] for entry in manifest["notebooks"]}
    assert manifest["status"] == "failed" and manifest["failure_reason"].startswith("no space left on device: ")
    assert status == {"distilbert/benchmark": "succeeded", "gpt2/benchmark": "failed",
                      "resnet50/benchmark": "not run", "report": "not run"}
    assert not (run_dir / "cpu" / "gpt2" / "benchmark.ipynb").exists() and _leftovers(run_dir) == []


def test_a_full_disk_is_recorded_on_a_small_tmpfs(tmp_path, stub_notebooks):
    """A real ENOSPC: the run folder on a 512 KiB tmpfs, filled by the HTML export of the first notebook."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        filler = mount / "filler"
        filler.write_bytes(b"\0" * (400 * 1024))
        command = [sys.executable, str(REPO / "run_notebooks.py"), "--device", "cpu", "--quick", "--output",
                   str(mount), "--run-name", "r", "--notebook-dir", str(stub_notebooks), "--notebooks",
                   "benchmark", "--html"]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
        run_dir = mount / "r"
        assert proc.returncode == 1, proc.stderr
        lines = _err_lines(proc.stderr)
        assert len(lines) == 1 and "no space left on device" in lines[0], proc.stderr
        manifest = _manifest(run_dir)
        assert manifest["status"] == "failed" and "no space left on device" in manifest["failure_reason"]
        assert "not run" in {entry["status"] for entry in manifest["notebooks"]}
        assert _leftovers(run_dir) == []
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


# -- several device targets in one run (issue 16) ---------------------------------------------------------------

def _gpu_visible(monkeypatch):
    """Make `cuda` look usable to the runner (the stub notebooks never touch a device)."""
    import torch

    import infopt.devices as devices

    monkeypatch.setattr(devices, "cuda_unavailable_reason", lambda index=None: None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


@pytest.mark.parametrize("devices, message", [
    (["cpu", "cpu@zone=a"], "a placement selector (after @) needs --executor ray"),
    (["cpu", "cpu"], "--device lists the same target twice: 'cpu' and 'cpu' both mean cpu"),
    (["cpu@zone"], "expected a selector of the form"),
    (["cpu", "gpu"], "invalid choice: 'gpu'"),
    (["cpu@accelerator_type:H100"], "applies to a cuda target only"),
])
def test_bad_targets_are_one_line_exit_2_no_kernel_no_folder(tmp_path, capsys, no_kernel, devices, message):
    assert runner.main(_base(tmp_path, "--device", *devices)) == 2
    err = capsys.readouterr().err
    assert len(_err_lines(err)) == 1 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "results").exists()


def test_targets_that_resolve_to_one_device_or_are_missing_here_are_refused(tmp_path, capsys, no_kernel):
    import torch

    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("auto picks a GPU here")
    assert runner.main(_base(tmp_path, "--device", "auto", "cpu")) == 2  # auto is the CPU on this machine
    err = capsys.readouterr().err
    assert len(_err_lines(err)) == 1 and "'auto' and 'cpu' both mean cpu" in err, err
    assert runner.main(_base(tmp_path, "--device", "cpu", "cuda")) == 2  # the local executor: this machine only
    err = capsys.readouterr().err
    assert len(_err_lines(err)) == 1 and "'cuda' was requested but" in err, err
    assert not (tmp_path / "results").exists()


def test_a_plan_with_two_targets_has_one_tree_each(tmp_path, monkeypatch):
    _gpu_visible(monkeypatch)
    args = cli.build_parser().parse_args(["--device", "cuda", "cpu", "--models", "resnet50", "gpt2",
                                             "--notebooks", "benchmark", "profile", "--output", str(tmp_path),
                                             "--run-name", "two"])
    plan = plan_module.build_plan(args)
    run = tmp_path.resolve() / "two"
    assert [t.label for t in plan.targets] == ["cuda", "cpu"] and [t.device for t in plan.targets] == ["cuda:0", "cpu"]
    keys = [job.key for job in plan.jobs]
    assert keys == ["cuda/resnet50/benchmark", "cuda/resnet50/profile", "cuda/gpt2/benchmark", "cuda/gpt2/profile",
                    "cpu/resnet50/benchmark", "cpu/resnet50/profile", "cpu/gpt2/benchmark", "cpu/gpt2/profile",
                    "report"]  # target after target: the local executor measures one device at a time
    jobs = {job.key: job for job in plan.jobs}
    assert jobs["cuda/gpt2/profile"].output == run / "cuda" / "gpt2" / "profile.ipynb"
    assert jobs["cpu/gpt2/profile"].parameters["peaks_path"] == str(run / "cpu" / "device_peaks.json")
    assert jobs["cuda/gpt2/profile"].parameters["peaks_path"] == str(run / "cuda" / "device_peaks.json")
    assert jobs["cuda/gpt2/benchmark"].parameters["device"] == "cuda:0"
    assert jobs["cpu/gpt2/benchmark"].parameters["device"] == "cpu"
    # a full-size run: each target keeps its own preset (the CPU caps on cpu only)
    assert plan.settings["preset"] == {"cuda": "full", "cpu": "full-cpu"}
    assert plan.settings["device"] == ["cuda", "cpu"]
    assert jobs["cpu/gpt2/benchmark"].parameters["max_time_s"] != jobs["cuda/gpt2/benchmark"].parameters["max_time_s"]
    manifest = manifest_module.Manifest(plan, ["run_notebooks.py"]).data
    assert "device" not in manifest and [t["label"] for t in manifest["targets"]] == ["cuda", "cpu"]
    plan.run_dir.mkdir(parents=True)
    manifest_module.Manifest(plan, ["run_notebooks.py"]).save()
    entry = {e["key"]: e for e in _manifest(plan.run_dir)["notebooks"]}["cuda/gpt2/benchmark"]
    assert entry["device"] == "cuda" and entry["target"] == "cuda" and entry["host"] is None  # not run yet
    assert estimate.estimate_seconds(plan, {}) > 0


def test_a_single_target_run_keeps_its_keys_folders_and_manifest_fields(tmp_path):
    args = cli.build_parser().parse_args(["--device", "cpu", "--quick", "--models", "resnet50", "--notebooks",
                                             "benchmark", "--output", str(tmp_path), "--run-name", "one"])
    plan = plan_module.build_plan(args)
    assert [job.key for job in plan.jobs] == ["resnet50/benchmark", "report"]
    assert plan.jobs[0].output == tmp_path.resolve() / "one" / "cpu" / "resnet50" / "benchmark.ipynb"
    data = manifest_module.Manifest(plan, ["run_notebooks.py"]).data
    assert data["device"] == {"device": "cpu", "requested": "cpu", "reason": "requested"}
    assert data["device_label"] == "cpu" and data["settings"]["device"] == "cpu"
    assert data["settings"]["preset"] == "quick"


def test_two_targets_run_one_after_another_and_resume_keeps_both(tmp_path, stub_notebooks, monkeypatch, capsys):
    _gpu_visible(monkeypatch)
    monkeypatch.setenv(FAIL_ENV, "gpt2")
    args = _base(tmp_path, "--device", "cuda", "cpu", "--notebook-dir", str(stub_notebooks), "--notebooks",
                 "benchmark", "--models", "resnet50", "gpt2", "--no-html")
    assert runner.main(args) == 1
    run_dir = tmp_path / "results" / "r"
    manifest = _manifest(run_dir)
    entries = {e["key"]: e for e in manifest["notebooks"]}
    assert {k: e["status"] for k, e in entries.items()} == {
        "cuda/resnet50/benchmark": "succeeded", "cuda/gpt2/benchmark": "failed",
        "cpu/resnet50/benchmark": "succeeded", "cpu/gpt2/benchmark": "failed", "report": "succeeded"}
    for label in ("cuda", "cpu"):
        assert (run_dir / label / "resnet50" / "resnet50_stub.json").is_file()
        assert entries[f"{label}/resnet50/benchmark"]["target"] == label
        assert entries[f"{label}/resnet50/benchmark"]["host"] == manifest["environment"]["hostname"]
    assert entries["cpu/resnet50/benchmark"]["device_name"] == manifest["environment"]["cpu_model"]
    first_cpu = entries["cpu/resnet50/benchmark"]["started_utc"]
    assert all(entries[f"cuda/{m}/benchmark"]["started_utc"] <= first_cpu for m in ("resnet50", "gpt2"))
    out = capsys.readouterr().out
    assert "cuda/gpt2/benchmark" in out and "cpu/gpt2/benchmark" in out and "on cuda, cpu:" in out
    # --resume: a different set of targets is refused; without --device both targets continue, failures rerun
    resume = ["--output", str(tmp_path / "results"), "--run-name", "r", "--resume"]
    assert runner.main(resume + ["--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert len(_err_lines(err)) == 1 and "contradicts the run's recorded setting device=['cuda', 'cpu']" in err, err
    monkeypatch.delenv(FAIL_ENV)
    assert runner.main(resume + ["--device", "cpu", "cuda"]) == 0  # the same targets, in another order
    entries = {e["key"]: e["status"] for e in _manifest(run_dir)["notebooks"]}
    assert entries == {"cuda/resnet50/benchmark": "skipped", "cuda/gpt2/benchmark": "succeeded",
                       "cpu/resnet50/benchmark": "skipped", "cpu/gpt2/benchmark": "succeeded", "report": "succeeded"}
