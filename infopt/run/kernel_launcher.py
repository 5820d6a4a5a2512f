"""The runner's notebook kernel: ipykernel as ``ipykernel_launcher`` starts it, minus the interpreter's teardown.

Once a kernel has acknowledged papermill's shutdown request, every output has reached papermill and every result
file is closed (the lab writes them atomically). What is left is Python's own finalization: unloading torch,
transformers and their threads takes 1-2 s per notebook here, more than some quick notebooks' cells. So the
``atexit`` handlers run as usual (IPython's history, logging), the streams are flushed, and the process ends
with ``os._exit`` and the kernel's own exit status.

    python .../infopt/run/kernel_launcher.py -f CONNECTION_FILE   # what the runner's kernel spec runs

Run by its path, not with ``-m``: importing the ``infopt`` package first would load torch before the kernel says
it is ready (the notebook imports it anyway, on its own clock).
"""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path


def exit_status(code) -> int:
    """``sys.exit``'s argument as a process exit status (None: 0; a message: 1)."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def main() -> None:
    # run by path, sys.path[0] is this file's folder: off it (its modules are not top-level ones); the working
    # directory stays off too while ipykernel loads, as with ipykernel_launcher (IPython adds it back)
    if sys.path and (sys.path[0] == "" or Path(sys.path[0]).resolve() in (Path(__file__).resolve().parent,
                                                                            Path.cwd().resolve())):
        del sys.path[0]
    from ipykernel import kernelapp

    status = 0
    try:
        kernelapp.launch_new_instance()
    except SystemExit as stop:
        status = exit_status(stop.code)
    except BaseException:  # noqa: BLE001 - a crash keeps its traceback and a failing status
        import traceback

        traceback.print_exc()
        status = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
