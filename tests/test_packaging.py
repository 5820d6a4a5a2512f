"""pyproject.toml and environment.yml list the same dependencies; layout is as documented."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"pytorch": "torch"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    conda = set()
    text = (ROOT / "environment.yml").read_text()
    for line in text.split("\ndependencies:", 1)[1].splitlines():
        match = re.match(r"\s+-\s+([A-Za-z][\w.-]*)", line)
        if match and match.group(1) not in ("python", "pip"):
            conda.add(CONDA_NAMES.get(match.group(1).lower(), match.group(1).lower()))
    assert conda == wanted


def test_torch_is_never_pinned_above_the_available_release():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        if _name(requirement) in ("torch", "torchvision"):
            assert ">=" in requirement and "==" not in requirement


def test_top_level_layout():
    for path in ["infopt", "notebooks", "results", "environment.yml", "Dockerfile", "run_notebooks.py",
                 "README.md", "pyproject.toml", "tests", "benchmarks", ".ci/run"]:
        assert (ROOT / path).exists(), path


def test_dockerfile_keeps_token_auth_and_runs_as_non_root():
    text = (ROOT / "Dockerfile").read_text()
    assert "USER lab" in text and "EXPOSE 8888" in text
    assert "token=''" not in text and 'token=""' not in text and "--NotebookApp.token=" not in text


def test_dockerignore_keeps_results_git_and_virtual_environments_out_of_the_image():
    lines = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")}
    assert {".git", "results/*", ".venv/"} <= lines and "!results/README.md" in lines


def test_what_the_runner_and_notebook_sources_import_is_declared():
    """tqdm (the runner's progress bars) and jupytext (notebook sources) are direct dependencies."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r): r for r in project["dependencies"]}
    for name in ("tqdm", "jupytext", "papermill", "nbformat"):
        assert name in declared and ">=" in declared[name], name
