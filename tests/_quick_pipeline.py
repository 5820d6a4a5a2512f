"""One `run_notebooks.py --device cpu --quick` run shared by test_end_to_end.py, test_browser.py and test_docs.py.

The command is the README's own quick run (:func:`_readme.quick_command`), with only where to write added.

The run takes a few minutes, so it is made once per pytest process (whichever
test module asks first) in a temporary folder removed at exit.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _readme import REPO, quick_command

RUN_NAME = "quick"


@dataclass
class QuickRun:
    output: Path
    run_dir: Path
    returncode: int
    stdout: str
    stderr: str
    wall_s: float


_cache: dict[str, QuickRun] = {}


def quick_run() -> QuickRun:
    if "run" not in _cache:
        output = Path(tempfile.mkdtemp(prefix="infopt-quick-"))
        atexit.register(shutil.rmtree, output, ignore_errors=True)
        started = time.perf_counter()
        proc = subprocess.run(
            [*quick_command(), "--output", str(output), "--run-name", RUN_NAME],
            capture_output=True, text=True, timeout=900, cwd=str(output),
        )
        _cache["run"] = QuickRun(output, output / RUN_NAME, proc.returncode, proc.stdout, proc.stderr,
                                 time.perf_counter() - started)
        print(f"\nquick run: exit {proc.returncode} in {_cache['run'].wall_s:.0f} s", file=sys.stderr)
    return _cache["run"]


def run_quick_models(root: Path, models: list[str], notebooks: tuple[str, ...], run_name: str,
                     timeout: int = 900) -> Path:
    """``run_notebooks.py --device cpu --quick`` on ``models`` and ``notebooks`` (no HTML) into ``root/out``, run
    from ``root``; returns the run folder once the run exited 0 (its output is the failure message otherwise)."""
    proc = subprocess.run([sys.executable, str(REPO / "run_notebooks.py"), "--device", "cpu", "--quick", "--models",
                           *models, "--notebooks", *notebooks, "--no-html", "--output", str(root / "out"),
                           "--run-name", run_name], capture_output=True, text=True, timeout=timeout, cwd=str(root))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root / "out" / run_name
