"""The runner's kernel (infopt.run.kernel_launcher): a working ipykernel that skips the interpreter's teardown."""

import asyncio
import sys

from infopt.run.execute import kernel_manager_class
from infopt.run.kernel_launcher import exit_status


async def _run_in_kernel(code: str) -> tuple[dict, int | None]:
    manager = kernel_manager_class()()
    await manager.start_kernel()
    client = manager.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        outputs = {}

        def keep(message):
            if message["msg_type"] == "stream":
                outputs[message["content"]["name"]] = outputs.get(message["content"]["name"], "") + \
                    message["content"]["text"]
        reply = await client.execute_interactive(code, output_hook=keep, timeout=60)
        outputs["status"] = reply["content"]["status"]
    finally:
        client.stop_channels()
        process = manager.provisioner.process
        await manager.shutdown_kernel(now=False)
    return outputs, process.returncode if process is not None else None


def test_the_kernel_runs_code_keeps_its_folder_off_the_path_and_exits_cleanly():
    code = ("import sys, pathlib\n"
            "print(any(pathlib.Path(p or '.').resolve().name == 'run' and "
            "(pathlib.Path(p) / 'kernel_launcher.py').is_file() for p in sys.path))\n"
            "print(sys.executable)")
    outputs, returncode = asyncio.run(_run_in_kernel(code))
    assert outputs["status"] == "ok"
    printed = outputs["stdout"].split()
    assert printed == ["False", sys.executable]  # this interpreter; infopt/run's modules are not top-level
    assert returncode == 0  # acknowledged shutdown, atexit handlers run, then os._exit(0)


def test_exit_status_follows_sys_exit():
    assert exit_status(None) == 0 and exit_status(3) == 3 and exit_status("a message") == 1


# ---- kernels forked from the zygote ------------------------------------------------------------------------------

import os  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

from infopt.run.execute import kernel_zygote  # noqa: E402
from infopt.run.kernel_launcher import zygote_supported  # noqa: E402

pytestmark_zygote = pytest.mark.skipif(not zygote_supported(), reason="the zygote needs fork, pidfds and fd passing")


@pytest.fixture(scope="module")
def started_zygote():
    with kernel_zygote() as started:
        assert started is not None, "the zygote did not start"
        yield started


@pytest.fixture(scope="module")
def zygote(started_zygote):
    return started_zygote.socket


async def _forked_kernel_session(zygote, steps):
    """Start a kernel from the zygote, run ``steps(manager, client)``, shut it down; returns what steps returned
    and the stand-in's exit status."""
    manager = kernel_manager_class(None, zygote)()
    await manager.start_kernel()
    client = manager.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        result = await steps(manager, client)
    finally:
        client.stop_channels()
        process = manager.provisioner.process
        if await manager.is_alive():
            await manager.shutdown_kernel(now=False)
    return result, process.returncode


async def _run(client, code):
    printed = []
    reply = await client.execute_interactive(
        code, timeout=60, output_hook=lambda m: printed.append(m["content"]["text"]) if m["msg_type"] == "stream"
        and m["content"]["name"] == "stdout" else None)
    return reply["content"], "".join(printed)


@pytestmark_zygote
def test_a_forked_kernel_starts_with_the_libraries_imported_in_its_own_process_and_exits_cleanly(zygote):
    code = "import sys, os\nprint('torch' in sys.modules, 'infopt.notebook' in sys.modules, os.getpid(), os.getppid())"

    async def steps(manager, client):
        return (await _run(client, code))[1].split()

    (first, status_first), (second, status_second) = [asyncio.run(_forked_kernel_session(zygote, steps))
                                                      for _ in range(2)]
    assert first[:2] == ["True", "True"] and second[:2] == ["True", "True"]  # preloaded, not imported by the cell
    assert first[2] != second[2]  # a fresh process per kernel: no state carried from one notebook to the next
    assert int(first[2]) != os.getpid() and int(first[3]) != os.getpid()  # forked by the zygote, not this process
    assert status_first == 0 and status_second == 0


@pytestmark_zygote
def test_an_interrupt_reaches_the_forked_kernel_and_a_killed_stand_in_takes_its_kernel_along(zygote):
    async def steps(manager, client):
        pid = int((await _run(client, "import os; print(os.getpid())"))[1])
        client.execute("import time; time.sleep(60)")
        time.sleep(1.0)
        await manager.interrupt_kernel()  # SIGINT to the stand-in, forwarded to the kernel
        reply = await client.get_shell_msg(timeout=30)
        interrupted = reply["content"].get("ename")
        manager.provisioner.process.kill()  # SIGKILL to the stand-in: its supervisor kills the kernel
        manager.provisioner.process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return interrupted, True
            time.sleep(0.1)
        return interrupted, False

    (interrupted, kernel_gone), status = asyncio.run(_forked_kernel_session(zygote, steps))
    assert interrupted == "KeyboardInterrupt"
    assert kernel_gone
    assert status == -signal.SIGKILL


@pytestmark_zygote
def test_a_kernel_whose_import_time_environment_differs_starts_plain(zygote, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # read by OpenMP when torch loads: the zygote's torch has its own

    async def steps(manager, client):
        return (await _run(client, "import sys, os\nprint('torch' in sys.modules, os.environ['OMP_NUM_THREADS'])"))[1]

    printed, status = asyncio.run(_forked_kernel_session(zygote, steps))
    assert printed.split() == ["False", "1"]
    assert status == 0


@pytestmark_zygote
def test_a_forked_kernel_holds_the_zygotes_library_pages_so_its_rss_reads_as_a_plain_kernels(started_zygote):
    """fork copies no page-table entries of file-backed mappings: unmapped, a fork's RSS would leave out most of the
    libraries the zygote loaded (measured: 358 of 628 MB); the RSS notebooks fork only from a zygote that maps them."""
    from infopt.run.execute import RSS_NOTEBOOKS

    if not started_zygote.maps_library_pages:
        assert not any(started_zygote.serves(notebook) for notebook in RSS_NOTEBOOKS)
        pytest.skip("this Linux lacks MADV_POPULATE_READ (5.14+): the RSS notebooks start plain")
    assert all(started_zygote.serves(notebook) for notebook in ("benchmark", "memory", "optimize", "report"))
    code = ("import os, psutil\nme = psutil.Process()\nzygote = psutil.Process(os.getppid()).parent()\n"
            "print(me.memory_info().rss, zygote.memory_info().rss, zygote.cmdline()[-2])")

    async def steps(manager, client):
        return (await _run(client, code))[1].split()

    (kernel_rss, zygote_rss, flag), status = asyncio.run(_forked_kernel_session(started_zygote.socket, steps))
    assert flag == "--zygote" and status == 0
    assert int(kernel_rss) >= 0.95 * int(zygote_rss)
