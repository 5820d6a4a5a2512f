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
