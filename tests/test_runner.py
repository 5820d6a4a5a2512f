"""The papermill runner: validation before any kernel, failure handling, refusal to overwrite, --resume.

Execution tests use tiny stand-in notebooks (no torch import) so real kernels
start and finish in seconds; the real notebooks run in test_end_to_end.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from infopt import runner

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
FAIL_ENV = "INFOPT_TEST_FAIL_MODEL"

MODEL_PARAMS = '''\
model: str = "resnet50"  # model
device: str = "cpu"  # device
size: str = "full"  # size
quick: bool = False  # quick
output_dir: str = ""  # output folder
overwrite: bool = False  # overwrite
interactive: bool = False  # widgets
batch_sizes: list = [1]  # batch sizes
seq_len: int = 128  # tokens
prompt_lengths: list = [32]  # prompts
no_cache_prompt_lengths: list = [32]  # prompts without cache
new_tokens: int = 8  # generated tokens'''

MODEL_BODY = '''\
import os, sys, json, pathlib
out = pathlib.Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
if os.environ.get("%s") == model:
    raise RuntimeError(f"injected failure for {model}")
target = out / f"{model}_stub.json"
if target.exists() and not overwrite:
    raise FileExistsError(target)
target.write_text(json.dumps({"executable": sys.executable, "batch_sizes": batch_sizes}))''' % FAIL_ENV

REPORT_PARAMS = '''\
results_dir: str = "../results"  # results
output_dir: str = ""  # output
run_name: str = ""  # run
interactive: bool = False  # widgets'''

REPORT_BODY = '''\
import pathlib
found = sorted(p.name for p in pathlib.Path(output_dir).rglob("*_stub.json"))
pathlib.Path(output_dir, "report_saw.txt").write_text("\\n".join(found))'''


def _notebook(path: Path, params: str, body: str) -> None:
    cell = new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[cell, new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


@pytest.fixture
def stub_notebooks(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "benchmark.ipynb", MODEL_PARAMS, MODEL_BODY)
    _notebook(folder / "report.ipynb", REPORT_PARAMS, REPORT_BODY)
    return folder


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
    real_execute = runner.execute
    calls = []

    def execute_then_interrupt(job, **kwargs):
        calls.append(job.key)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_execute(job, **kwargs)

    monkeypatch.setattr(runner, "execute", execute_then_interrupt)
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
    html = runner.export_html(path).read_text()
    assert 'class="plotly-graph-div"' in html


@pytest.mark.parametrize("name", ["benchmark", "profile", "memory", "optimize", "report"])
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


def test_committed_notebooks_match_their_builder(tmp_path):
    """notebooks/_build_notebooks.py is the source of truth; the committed files must be its output."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("nb_builder", NOTEBOOKS / "_build_notebooks.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    builder.HERE = tmp_path
    builder.main()
    for name in ("benchmark", "profile", "memory", "optimize", "report"):
        assert (tmp_path / f"{name}.ipynb").read_text() == (NOTEBOOKS / f"{name}.ipynb").read_text(), name
