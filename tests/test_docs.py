"""The docs check: the README front page stays a front page, its runnable commands run, and every link between
the README, ARCHITECTURE.md and docs/ points at a file that exists."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from _quick_pipeline import quick_run
from _readme import README, REPO, as_argv, runnable_blocks

FRONT_PAGE_BYTES = 8 * 1024
PAGES = [README, REPO / "ARCHITECTURE.md", *sorted((REPO / "docs").glob("*.md"))]


def test_the_front_page_is_short_and_names_the_set_up_and_the_main_job():
    text = README.read_text(encoding="utf-8")
    assert len(text.encode()) < FRONT_PAGE_BYTES
    for must in ('pip install -e ".[dev]"', "python run_notebooks.py --device cpu", "## Your own model",
                 "## Where to read more"):
        assert must in text


def test_runnable_blocks_are_found_and_a_marked_block_must_be_bash():
    sample = "x\n<!-- runnable -->\n```bash\necho hi\n```\n\n```bash\nnot marked\n```\n"
    assert runnable_blocks(sample) == ["echo hi"]
    assert len(runnable_blocks()) >= 3


@pytest.mark.parametrize("command", [c for c in runnable_blocks() if "--quick" not in shlex.split(c)])
def test_each_runnable_readme_command_exits_0(command, tmp_path):
    proc = subprocess.run(as_argv(command), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip()


def test_the_readme_quick_run_succeeds():
    run = quick_run()  # the README's own quick command, writing into a temporary folder
    assert run.returncode == 0, run.stderr[-3000:]
    assert (run.run_dir / "report.html").is_file()


def test_the_readme_python_examples_run(tmp_path):
    blocks = re.findall(r"```python\n(.*?)\n```", README.read_text(encoding="utf-8"), re.S)
    assert blocks
    for code in blocks:
        proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "INFOPT_OFFLINE": "1"})
        assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_points_at_a_file(page):
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8"))
    missing = [link for link in links if "://" not in link and not (page.parent / link).exists()]
    assert missing == []
