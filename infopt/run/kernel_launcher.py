"""The runner's notebook kernel: ipykernel as ``ipykernel_launcher`` starts it, minus the interpreter's teardown,
optionally forked from a zygote that has already imported the lab's libraries.

Once a kernel has acknowledged papermill's shutdown request, every output has reached papermill and every result
file is closed (the lab writes them atomically). What is left is Python's own finalization: unloading torch,
transformers and their threads takes 1-2 s per notebook here, more than some quick notebooks' cells. So the
``atexit`` handlers run as usual (IPython's history, logging), the streams are flushed, and the process ends
with ``os._exit`` and the kernel's own exit status.

Importing torch, transformers, pandas, plotly and infopt takes 5-7 s of CPU per notebook on a 2-core machine:
a run of 16 notebooks spent over a minute on it. A **zygote** imports them once and forks a fresh kernel per
notebook (each notebook still gets its own process, its own state, its own exit):

    python .../infopt/run/kernel_launcher.py -f CONNECTION_FILE                 # a plain kernel
    python .../infopt/run/kernel_launcher.py --zygote SOCKET                    # the zygote (the runner starts it)
    python .../infopt/run/kernel_launcher.py --via SOCKET -f CONNECTION_FILE    # a kernel forked by the zygote

``--via`` is what the kernel manager starts: a stdlib-only stand-in that hands its standard streams, working
directory and environment to the zygote, forwards the signals it gets (interrupt, terminate) to the forked
kernel and exits as the kernel did (the same status, or the same signal). If it is killed, the zygote's
supervisor kills the kernel. It falls back to a plain kernel when the zygote cannot serve it: no zygote, or an
environment variable that libraries read at import (threads, allocator, CUDA, torch's own) differs from the
zygote's. Forking is safe because importing starts no OpenMP pool and initialises no CUDA; the zygote runs no
model code. Each fork maps the library pages the zygote's imports made resident again (:func:`map_pages`), so its
resident set, which the benchmark and memory notebooks report, counts them as a kernel that imported them does.

Run by its path, not with ``-m``: importing the ``infopt`` package first would load torch before a plain kernel
says it is ready (the notebook imports it anyway, on its own clock).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import sys
from pathlib import Path

#: What the zygote imports before it serves: what the notebooks' first cells import, and the model libraries.
#: A module that fails to import is skipped (an optional library missing), the notebook meets the error itself.
ZYGOTE_PRELOAD: tuple[str, ...] = (
    "ipykernel.kernelapp", "torch", "torchvision", "numpy", "pandas", "plotly.graph_objects", "plotly.io",
    "transformers", "transformers.modeling_utils", "infopt", "infopt.notebook", "infopt.report",
    "infopt.report.explorer", "infopt.report.plots", "infopt.results", "infopt.measure.benchmark",
    "infopt.measure.interference", "infopt.optimize", "infopt.optimize.race", "infopt.serve",
)
#: Environment variables read when a library loads: a kernel whose value differs is started plain, not forked.
IMPORT_TIME_ENV_PREFIXES: tuple[str, ...] = (
    "OMP_", "KMP_", "GOMP_", "MKL_", "OPENBLAS_", "MALLOC_", "LD_", "PYTHON", "CUDA_", "NVIDIA_", "TORCH",
    "PYTORCH_", "TRANSFORMERS_", "HF_",
)
#: The forwarded signals (what jupyter_client sends a kernel: interrupt, terminate, kill is uncatchable).
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
READY_LINE = "zygote ready"
#: Appended to :data:`READY_LINE` when the zygote's forks map its resident library pages (:func:`map_pages`).
MAPS_PAGES = "library pages mapped"
ZYGOTE_FLAG, VIA_FLAG = "--zygote", "--via"
#: ``madvise`` advice that faults pages into the caller's page tables without writing them (Linux 5.14+).
MADV_POPULATE_READ = 22


def exit_status(code) -> int:
    """``sys.exit``'s argument as a process exit status (None: 0; a message: 1)."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def zygote_supported() -> bool:
    """Fork, pidfds and descriptor passing: Linux (elsewhere every kernel is a plain one)."""
    return hasattr(os, "fork") and hasattr(os, "pidfd_open") and hasattr(socket, "send_fds")


def drop_launcher_folder_from_path() -> None:
    """Run by path, sys.path[0] is this file's folder: off it (its modules are not top-level ones); the working
    directory stays off too while ipykernel loads, as with ipykernel_launcher (IPython adds it back)."""
    if sys.path and (sys.path[0] == "" or Path(sys.path[0]).resolve() in (Path(__file__).resolve().parent,
                                                                            Path.cwd().resolve())):
        del sys.path[0]


def run_kernel(argv: list[str]) -> None:
    """Run ipykernel with ``argv`` (``-f CONNECTION_FILE``) and end the process with its status, no teardown."""
    from ipykernel import kernelapp

    sys.argv = [str(Path(__file__).resolve()), *argv]
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


def import_time_env(env: dict) -> dict:
    return {key: value for key, value in env.items() if key.startswith(IMPORT_TIME_ENV_PREFIXES)}


# ---- the zygote ------------------------------------------------------------------------------------------------

def resident_library_pages() -> list[tuple[int, int]]:
    """(address, length) runs of this process's file-backed pages (libraries, mapped files) that are resident in
    its page tables, from ``/proc/self/pagemap``'s present bit (readable without privileges)."""
    import struct

    page = os.sysconf("SC_PAGE_SIZE")
    runs: list[tuple[int, int]] = []
    with open("/proc/self/maps", encoding="utf-8") as maps, open("/proc/self/pagemap", "rb") as pagemap:
        for line in maps:
            fields = line.split()
            if len(fields) < 6 or not fields[5].startswith("/"):
                continue
            start, end = (int(value, 16) for value in fields[0].split("-"))
            pagemap.seek(start // page * 8)
            present = [entry >> 63 for (entry,) in struct.iter_unpack("<Q", pagemap.read((end - start) // page * 8))]
            first = None
            for index, bit in enumerate([*present, 0]):
                if bit and first is None:
                    first = index
                elif not bit and first is not None:
                    runs.append((start + first * page, (index - first) * page))
                    first = None
    return runs


def map_pages(runs: list[tuple[int, int]]) -> bool:
    """Fault ``runs`` into this process's page tables (``MADV_POPULATE_READ``); False where the kernel lacks it.

    Why: ``fork`` copies no page-table entries of file-backed mappings, so a forked kernel's resident set counts
    a library page only once the kernel touches it: tiny resnet50's process RSS read 558 MB forked against 808 MB
    in a plain kernel. Mapped again, a fork holds the library pages the zygote's imports made resident, as a
    kernel that imported them itself does, and its RSS says so (the benchmark's and memory notebook's figure)."""
    import ctypes

    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return False
    madvise.argtypes, madvise.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    return all(madvise(address, length, MADV_POPULATE_READ) == 0 for address, length in runs)


def serve_zygote(socket_path: str) -> None:
    """Import :data:`ZYGOTE_PRELOAD`, print :data:`READY_LINE`, then fork a kernel per request until the parent
    (the runner) is gone or the socket file is removed."""
    import importlib
    import select

    started_with = set(import_time_env(dict(os.environ)).items())  # imports write some (torch's cache folder)
    for name in ZYGOTE_PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the notebook that needs it reports it
            pass
    try:
        pages = resident_library_pages()
        pages = pages if pages and map_pages(pages[:1]) else None
    except OSError:
        pages = None
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(16)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # supervisors are reaped by the system
    parent = os.getppid()
    print(f"{READY_LINE}: {MAPS_PAGES}" if pages else READY_LINE, flush=True)
    while os.getppid() == parent and os.path.exists(socket_path):
        if not select.select([listener], [], [], 1.0)[0]:
            continue
        connection, _ = listener.accept()
        try:
            message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
            request = json.loads(message.decode())
        except (OSError, ValueError):
            connection.close()
            continue
        differs = sorted(set(import_time_env(request["env"]).items()) ^ started_with)
        if differs or len(fds) != 3:
            reason = f"{differs[0][0]} differs from the zygote's" if differs else "no standard streams"
            send_line(connection, {"refused": reason})
            connection.close()
            for fd in fds:
                os.close(fd)
            continue
        if os.fork() == 0:
            listener.close()
            supervise(connection, fds, request, pages)  # never returns
        connection.close()
        for fd in fds:
            os.close(fd)


def supervise(connection: socket.socket, fds: list[int], request: dict, pages: list | None = None) -> None:
    """In the zygote's child: fork the kernel (``pages``: the library pages it maps again, :func:`map_pages`),
    tell the stand-in its pid, forward its signals, report its exit; kill the kernel if the stand-in goes away."""
    import select

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    kernel = os.fork()
    if kernel == 0:
        connection.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for number in FORWARDED_SIGNALS:
            signal.signal(number, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if pages:
            map_pages(pages)
        # ipykernel read JPY_PARENT_PID when the zygote imported it: the parent it watches (and dies with) is
        # set here, the supervisor, as a plain kernel's is the kernel manager that started it
        run_kernel([*request["argv"], f"--IPKernelApp.parent_handle={os.getppid()}"])
    for fd in fds:
        os.close(fd)
    send_line(connection, {"pid": kernel})
    exited = os.pidfd_open(kernel)
    pending = b""
    while True:
        readable = select.select([connection, exited], [], [])[0]
        if exited in readable:
            _, status = os.waitpid(kernel, 0)
            send_line(connection, {"exit": os.waitstatus_to_exitcode(status)})
            os._exit(0)
        chunk = connection.recv(4096)
        if not chunk:  # the stand-in is gone (killed): so is its kernel
            os.kill(kernel, signal.SIGKILL)
            os.waitpid(kernel, 0)
            os._exit(0)
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            os.kill(kernel, int(json.loads(line)["signal"]))


def send_line(connection: socket.socket, message: dict) -> None:
    try:
        connection.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        pass


# ---- the stand-in the kernel manager starts ----------------------------------------------------------------------

def kernel_via_zygote(socket_path: str, argv: list[str]) -> None:
    """Ask the zygote for a forked kernel and stand in for it; a plain kernel when the zygote cannot serve."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(socket_path)
        request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}
        socket.send_fds(connection, [json.dumps(request).encode()], [0, 1, 2])
        reader = connection.makefile("rb")
        reply = json.loads(reader.readline() or b"{}")
    except (OSError, ValueError):
        reply = {}
    if "pid" not in reply:
        connection.close()
        if reply.get("refused"):
            print(f"infopt: a plain kernel, not a forked one ({reply['refused']})", file=sys.stderr, flush=True)
        os.execv(sys.executable, [sys.executable, str(Path(__file__).resolve()), *argv])

    def forward(number, frame):
        send_line(connection, {"signal": int(number)})

    for number in FORWARDED_SIGNALS:
        signal.signal(number, forward)
    while True:
        try:
            line = reader.readline()
        except InterruptedError:
            continue
        if not line:
            os._exit(1)  # the supervisor died: the kernel's fate is unknown
        code = json.loads(line).get("exit")
        if code is not None:
            break
    if code < 0:  # killed by a signal: end the same way, so the kernel manager sees what the kernel saw
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code if code >= 0 else 1)


def main() -> None:
    drop_launcher_folder_from_path()
    arguments = sys.argv[1:]
    if arguments[:1] == [ZYGOTE_FLAG]:
        serve_zygote(arguments[1])
    elif arguments[:1] == [VIA_FLAG]:
        kernel_via_zygote(arguments[1], arguments[2:])
    else:
        run_kernel(arguments)


if __name__ == "__main__":
    main()
