"""Stand-in notebooks for runner tests: the runner's parameters, no torch import, seconds per kernel.

``make_stub_notebooks(folder)`` writes a benchmark notebook (writes ``<model>_stub.json``; fails for the model
named in :data:`FAIL_ENV`; sleeps per :data:`SLEEP_ENV`) and a report notebook that lists what it saw.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

FAIL_ENV = "INFOPT_TEST_FAIL_MODEL"
SLEEP_ENV = "INFOPT_TEST_SLEEP"  # "<model>=<seconds>": that model's notebook sleeps in its second cell

MODEL_PARAMS = '''\
model: str = "resnet50"  # model
device: str = "cpu"  # device
size: str = "full"  # size
quick: bool = False  # quick
output_dir: str = ""  # output folder
overwrite: bool = False  # overwrite
interactive: bool = False  # widgets
batch_sizes: list = [1]  # batch sizes
seq_len: int = 128  # tokens
prompt_lengths: list = [32]  # prompts
no_cache_prompt_lengths: list = [32]  # prompts without cache
new_tokens: int = 8  # generated tokens
max_time_s: float = 15.0  # time cap'''

MODEL_BODY = '''\
import os, sys, json, pathlib
out = pathlib.Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
if os.environ.get("%s") == model:
    raise RuntimeError(f"injected failure for {model}")
target = out / f"{model}_stub.json"
if target.exists() and not overwrite:
    raise FileExistsError(target)
target.write_text(json.dumps({"executable": sys.executable, "batch_sizes": batch_sizes}))''' % FAIL_ENV

SLEEP_BODY = '''\
import os, pathlib, time
name, _, seconds = os.environ.get("%s", "=").partition("=")
if name == model and seconds.startswith("until:"):  # wait for the test to create a file (at most 5 minutes)
    deadline = time.monotonic() + 300
    while not pathlib.Path(seconds[6:]).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
elif name == model:
    time.sleep(float(seconds))''' % SLEEP_ENV

REPORT_PARAMS = '''\
results_dir: str = "../results"  # results
output_dir: str = ""  # output
run_name: str = ""  # run
interactive: bool = False  # widgets'''

REPORT_BODY = '''\
import pathlib
found = sorted(p.name for p in pathlib.Path(output_dir).rglob("*_stub.json"))
pathlib.Path(output_dir, "report_saw.txt").write_text("\\n".join(found))'''


def _notebook(path: Path, params: str, *bodies: str) -> None:
    cell = new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[cell, *map(new_code_cell, bodies)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


def make_stub_notebooks(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _notebook(folder / "benchmark.ipynb", MODEL_PARAMS, SLEEP_BODY, MODEL_BODY)
    _notebook(folder / "report.ipynb", REPORT_PARAMS, REPORT_BODY)
    return folder
