"""The README front page's runnable commands: fenced ``bash`` blocks preceded by ``<!-- runnable -->``.

The docs check (test_docs.py) runs them, and the shared quick run (_quick_pipeline.py) *is* the README's quick
command, so the command a newcomer copies is the one CI executes.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
MARKER = "<!-- runnable -->"


def runnable_blocks(text: str | None = None) -> list[str]:
    """The commands of every fenced bash block marked runnable, in order."""
    text = README.read_text(encoding="utf-8") if text is None else text
    return [m.group(1).strip() for m in re.finditer(rf"{re.escape(MARKER)}\s*\n```bash\n(.*?)\n```", text, re.S)]


def as_argv(command: str) -> list[str]:
    """A README command as the argv this checkout runs: ``python`` is this interpreter, scripts are the repo's."""
    argv = shlex.split(command)
    if argv and argv[0] == "python":
        argv[0] = sys.executable
    return [str(REPO / a) if (REPO / a).is_file() and a.endswith(".py") else a for a in argv]


def quick_command() -> list[str]:
    """The README's quick run (the one runnable block with ``--quick``)."""
    quick = [c for c in runnable_blocks() if "--quick" in shlex.split(c)]
    assert len(quick) == 1, f"the README front page must mark exactly one quick run runnable, found {quick}"
    return as_argv(quick[0])
