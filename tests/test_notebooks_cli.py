"""The notebooks under papermill's own command line, as a user runs them by hand.

Parameters typed on the command line arrive as text and are coerced or
refused by name before any model loads; results land in the same folder
whatever the working directory; a run that fails before measuring leaves no
folder behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from infopt.layout import RESULTS_ENV, default_results_dir

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def papermill(notebook: str, out: Path, cwd: Path, results: Path, *params: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "papermill", str(NOTEBOOKS / f"{notebook}.ipynb"), str(out), "--no-progress-bar"]
    for param in params:
        name, value = param.split("=", 1)
        args += ["-p", name, value]
    env = {**os.environ, RESULTS_ENV: str(results)}
    return subprocess.run(args, capture_output=True, text=True, cwd=str(cwd), env=env, timeout=500)


def test_default_results_folder_does_not_depend_on_the_working_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != RESULTS_ENV}
    code = "from infopt.layout import default_results_dir; print(default_results_dir())"
    seen = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(cwd), env=env,
                           check=True).stdout.strip() for cwd in (REPO, REPO / "notebooks", tmp_path)}
    assert seen == {str(REPO / "results")}
    assert default_results_dir() in (REPO / "results", Path(os.environ.get(RESULTS_ENV, "/")).resolve())


@pytest.mark.parametrize("param, message", [
    ("quick=maybe", "Parameter 'quick' must be true or false, got 'maybe'"),
    ("batch_sizes=[1, 2", "Parameter 'batch_sizes' must be a list"),
])
def test_bad_parameters_are_refused_by_name_before_the_model_loads(tmp_path, param, message):
    run = papermill("memory", tmp_path / "out.ipynb", tmp_path, tmp_path / "results", "size=tiny", param)
    assert run.returncode != 0
    assert message in run.stderr
    assert "load_model" not in run.stderr.split(message)[0][-2000:]  # stopped in the first cell, not in loading
    assert not (tmp_path / "results").exists()  # nothing created


def test_unknown_model_leaves_no_empty_folder(tmp_path):
    run = papermill("memory", tmp_path / "out.ipynb", tmp_path, tmp_path / "results", "model=no-such-model")
    assert run.returncode != 0 and "no-such-model" in run.stderr
    assert not (tmp_path / "results").exists()


def test_hand_runs_from_two_directories_share_one_model_folder(tmp_path):
    results = tmp_path / "results"
    first_cwd, second_cwd = REPO, tmp_path / "elsewhere"
    second_cwd.mkdir()
    params = ("model=distilbert", "size=tiny", "quick=true", "batch_sizes=1", "seq_len=16", "timeline_batch_size=1")
    for index, cwd in enumerate((first_cwd, second_cwd)):
        run = papermill("memory", tmp_path / f"out{index}.ipynb", cwd, results, *params)
        assert run.returncode == 0, run.stderr[-3000:]
    folders = sorted(p.parent for p in results.rglob("distilbert_cpu_memory.json"))
    assert folders == [results / "interactive" / "cpu" / "distilbert"]  # one folder, the second run replaced it
    assert not (first_cwd / "results" / "interactive" / "cpu" / "distilbert" / "distilbert_cpu_memory.json").exists() \
        or (first_cwd / "results").resolve() == results.resolve()
