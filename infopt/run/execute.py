"""Executing one notebook with papermill in a kernel on this very interpreter, and what a run does around it:
partial files moved into place when a notebook ends, its error in one line, signals handled like Ctrl-C."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from pathlib import Path

from infopt.errors import InfoptError
from infopt.run.plan import Job

KERNEL_NAME = "python3"


#: Notebooks whose rows report the process's resident memory as a figure of its own (the benchmark's
#: ``peak_memory_mb``, the report's "process RSS"; the memory notebook): forked from the zygote only when its forks
#: map its resident library pages again (:func:`infopt.run.kernel_launcher.map_pages` says why), else plain.
RSS_NOTEBOOKS: tuple[str, ...] = ("benchmark", "memory")


@dataclasses.dataclass(frozen=True)
class Zygote:
    """A running zygote: its socket, and whether its forks map its library pages (their RSS is a plain kernel's)."""

    socket: str
    maps_library_pages: bool

    def serves(self, notebook: str) -> bool:
        return self.maps_library_pages or notebook not in RSS_NOTEBOOKS


LAUNCHER = Path(__file__).with_name("kernel_launcher.py")


def kernel_environment() -> dict:
    """What a kernel adds to this process's environment: this infopt, and the runner's working directory (so
    py:<module>:<function> factories import in the kernel as here), on its path."""
    package_root = str(Path(__file__).resolve().parents[2])
    return {"PYTHONPATH": os.pathsep.join(p for p in (package_root, os.getcwd(), os.environ.get("PYTHONPATH", ""))
                                          if p)}


def kernel_manager_class(kernel_log: Path | None = None, zygote: str | None = None):
    """An AsyncKernelManager whose kernel is this interpreter with this infopt on its path.

    Using the runner's ``sys.executable`` (not whatever ``python3`` kernelspec
    happens to be installed) makes ``import infopt`` work in a virtualenv and
    guarantees the notebooks run the same code as the runner; :mod:`infopt.run.kernel_launcher` starts it
    (ipykernel without the interpreter's teardown at shutdown), forked from the ``zygote`` socket's process
    when one is given (:func:`kernel_zygote`). With ``kernel_log``
    the kernel process's own stderr (its start-up warnings, ZeroMQ tracebacks when
    it is interrupted or shut down) is appended there instead of reaching the
    terminal; what the notebook's code prints stays in the notebook.
    """
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import AsyncKernelManager

    from infopt.run.kernel_launcher import VIA_FLAG

    via = [VIA_FLAG, zygote] if zygote else []
    environment = kernel_environment()  # now: papermill changes the working directory before starting a kernel

    class SameInterpreterKernelManager(AsyncKernelManager):
        @property
        def kernel_spec(self):
            if self._kernel_spec is None:
                self._kernel_spec = KernelSpec(
                    argv=[sys.executable, str(LAUNCHER), *via, "-f", "{connection_file}"],
                    display_name=f"Python ({sys.executable})", language="python",
                    env=environment, metadata={"debugger": True},
                )
            return self._kernel_spec

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            if kernel_log is not None and "stderr" not in kw:
                with open(kernel_log, "a", encoding="utf-8") as sink:  # the child keeps its own descriptor
                    kw["stderr"] = sink
                    return await super()._async_launch_kernel(kernel_cmd, **kw)
            return await super()._async_launch_kernel(kernel_cmd, **kw)

    return SameInterpreterKernelManager


def running_kernels() -> list:
    """This process's descendants that belong to notebook kernels (psutil processes): all of them but a kernel
    zygote, which lives for the whole run and runs no notebook (its forks carry its command line too, so only the
    direct child is left out)."""
    import psutil

    from infopt.run.kernel_launcher import ZYGOTE_FLAG

    def is_zygote(process) -> bool:
        with contextlib.suppress(psutil.Error):
            return process.ppid() == os.getpid() and ZYGOTE_FLAG in process.cmdline()
        return False

    return [process for process in psutil.Process().children(recursive=True) if not is_zygote(process)]


@contextlib.contextmanager
def kernel_zygote(kernel_log: Path | None = None, ready_timeout_s: float = 180.0):
    """A zygote for the kernels of a run's notebooks (:mod:`infopt.run.kernel_launcher`): it imports the lab's
    libraries once, before the first notebook and with nothing else running, and forks one kernel per notebook.
    Yields its :class:`Zygote`, or None (plain kernels) where forking is unsupported or it did not start."""
    import select
    import shutil
    import subprocess
    import tempfile

    from infopt.run.kernel_launcher import MAPS_PAGES, READY_LINE, ZYGOTE_FLAG, zygote_supported

    if not zygote_supported():
        yield None
        return
    folder = tempfile.mkdtemp(prefix="infopt-zygote-")  # a short path: a socket's name is limited to 107 bytes
    socket_path = os.path.join(folder, "socket")
    sink = open(kernel_log, "a", encoding="utf-8") if kernel_log is not None else subprocess.DEVNULL
    process = subprocess.Popen([sys.executable, str(LAUNCHER), ZYGOTE_FLAG, socket_path], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=sink, env={**os.environ, **kernel_environment()},
                               start_new_session=True)
    try:
        line = process.stdout.readline().decode().strip() if select.select([process.stdout], [], [],
                                                                            ready_timeout_s)[0] else ""
        ready = line == READY_LINE or line.startswith(READY_LINE + ":")
        yield Zygote(socket_path, line.endswith(MAPS_PAGES)) if ready else None
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # the zygote ends when its socket is gone ...
        process.terminate()  # ... or now
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        if process.poll() is None:
            process.kill()
        process.stdout.close()
        if sink is not subprocess.DEVNULL:
            sink.close()


def export_html(notebook_path: Path, plotly_js: Path | None = None) -> Path:
    """The shareable page of an executed notebook: code hidden, charts via the run's one plotly.min.js, no CDN."""
    from infopt.report.htmlexport import export_html as _export

    return _export(notebook_path, plotly_js=plotly_js)


def export_job_html(job: Job, run_dir: Path) -> None:
    """Export an executed notebook to its shareable page; a failed export is recorded on the job (its status
    becomes failed), a failure of the runner's own writes stops the run."""
    if not job.output.is_file():
        return
    try:
        export_html(job.output, run_dir / "plotly.min.js")
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
        if io_failure(exc):
            raise
        job.error = (job.error + "; " if job.error else "") + f"HTML export failed: {error_text(exc)}"
        job.status = "failed"


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, ``docker stop``, CI): handled like Ctrl-C."""


class RunWriteError(InfoptError):
    """The runner could not write the run's files (full disk, read-only or vanished folder): the run stops."""


def io_failure(error: BaseException) -> bool:
    """An error of the runner's own file writing (the run stops), not of a notebook (recorded, the run goes on).

    A cell timeout is a ``TimeoutError``, itself an ``OSError``: it belongs to the notebook.
    """
    return isinstance(error, OSError) and not isinstance(error, TimeoutError)


def describe_os_error(error: OSError) -> str:
    """``no space left on device: /path`` (the reason, then the file), one line."""
    reason = (error.strerror or str(error) or type(error).__name__).strip().lower()
    name = error.filename or ""
    return f"{reason}: {name}" if name else reason


def timed_out_cell(notebook_path: Path) -> int | None:
    """1-based number of the cell papermill was running in a timed-out executed notebook (its last started one)."""
    import nbformat

    try:
        nb = nbformat.read(str(notebook_path), as_version=4)
    except Exception:  # noqa: BLE001 - best effort: the message still says a cell timed out
        return None
    started = [index for index, cell in enumerate(nb.cells)
               if (cell.get("metadata", {}).get("papermill") or {}).get("start_time")]
    return started[-1] + 1 if started else None


def error_text(exc: BaseException, *, timeout: int | None = None, notebook: str = "the notebook") -> str:
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if ename:
        return f"{ename}: {evalue}"
    if type(exc).__name__ == "CellTimeoutError" or isinstance(exc, TimeoutError):
        cell = getattr(exc, "infopt_cell", None)
        where = f"cell {cell} of {notebook}" if cell else f"a cell of {notebook}"
        return f"CellTimeoutError: {where} ran past the --timeout of {timeout} s per cell"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}".strip()


def partial_path(output: Path) -> Path:
    """Where a notebook is written while it runs: a hidden name, moved to ``output`` once it has ended."""
    return output.with_name(f".{output.stem}.partial{output.suffix}")


def execute(job: Job, *, timeout: int | None, cwd: Path, kernel_manager_class) -> None:
    """Run one notebook with papermill into a temporary name; the executed notebook replaces ``job.output``
    when it ends, failed or not (papermill's error banner included), never while it is partial."""
    import papermill

    job.output.parent.mkdir(parents=True, exist_ok=True)
    temporary = partial_path(job.output)
    ended = False
    try:
        papermill.execute_notebook(
            str(job.source), str(temporary), parameters=job.parameters, kernel_name=KERNEL_NAME,
            progress_bar={"desc": f"  {job.key}", "leave": False, "position": 1, "disable": None},
            cwd=str(cwd), execution_timeout=timeout, kernel_manager_class=kernel_manager_class,
        )
        ended = True
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - a failing notebook ended: keep it, with the cell that failed
        if io_failure(exc):
            raise
        ended = getattr(exc, "ename", None) != "KeyboardInterrupt"
        if type(exc).__name__ == "CellTimeoutError" or isinstance(exc, TimeoutError):
            exc.infopt_cell = timed_out_cell(temporary)  # read before the file moves
        raise
    finally:
        if ended and temporary.is_file():
            os.replace(temporary, job.output)
        else:
            with contextlib.suppress(OSError):
                temporary.unlink()


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt), so it ends a run like Ctrl-C."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_ignored():
    """Let the final manifest write finish even if a second Ctrl-C or SIGTERM arrives."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def quiet_shutdown_noise() -> None:
    """After an interrupt, kernel-client sockets and tasks torn down mid-flight print tracebacks at exit
    (ZeroMQ, asyncio): none of it is about the run, so it stays off the terminal."""
    import asyncio
    import logging

    sys.unraisablehook = lambda unraisable: None
    for name in ("asyncio", "traitlets", "papermill", "nbclient", "jupyter_client"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    with contextlib.suppress(Exception):
        asyncio.get_event_loop_policy().get_event_loop().set_exception_handler(lambda loop, context: None)


class _RecordedElsewhere(logging.Filter):
    """nbclient logs a cell timeout before raising it; the runner records it (cell and limit) and prints one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout waiting for execute reply")


PAPERMILL_LOG_FILTER = _RecordedElsewhere()


__all__ = ["KERNEL_NAME", "PAPERMILL_LOG_FILTER", "RSS_NOTEBOOKS", "Zygote", "kernel_environment", "kernel_zygote",
           "running_kernels", "RunWriteError", "Terminated", "describe_os_error", "error_text",
           "execute", "export_html", "export_job_html", "io_failure", "kernel_manager_class", "partial_path", "quiet_shutdown_noise",
           "signals_ignored", "sigterm_as_interrupt", "timed_out_cell"]
