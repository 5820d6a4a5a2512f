"""The interactive explorer in a real JupyterLab, driven by Playwright with the system Chromium.

The test starts JupyterLab on localhost (fresh config, runtime and workspace
folders, a random token), opens a notebook that calls ``explorer.explore`` on a
small frame, runs it, then changes the controls and asserts that the ONE chart
in the widget's output area is redrawn in place (axis title and traces follow
the controls). Calling ``explore`` without a frontend cannot show this: the bug
it guards against was a redraw that JupyterLab routed nowhere.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = next((path for path in (shutil.which("chromium"), shutil.which("chromium-browser"))
                 if path and Path(path).is_file()), None)
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - declared in the dev extra
    sync_playwright = None

pytestmark = [
    pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(420),
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium browser installed (Debian package 'chromium')"),
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install -e '.[dev]')"),
]

NOTEBOOK_CODE = """\
import pandas as pd
from infopt.report import explorer, plots

plots.use_notebook_renderer()
rows = [{"model": model, "device": "cpu", "variant": "eager-fp32", "batch_size": batch, "status": "ok",
         "latency_p50_ms": scale * batch, "throughput_items_per_s": 1000 * batch / (scale * batch + 1),
         "peak_memory_mb": 100 + scale * batch}
        for model, scale in (("alpha", 1.0), ("beta", 3.0)) for batch in (1, 2, 4)]
plots.show(plots.throughput(pd.DataFrame(rows), title="stored as Plotly JSON only"))
box = explorer.explore(pd.DataFrame(rows))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on localhost serving a folder with the explorer notebook; yields its URL."""
    root = tmp_path_factory.mktemp("lab")
    notebook = {"cells": [{"cell_type": "code", "execution_count": None, "id": "explore", "metadata": {},
                           "outputs": [], "source": NOTEBOOK_CODE}],
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
                "nbformat": 4, "nbformat_minor": 5}
    (root / "explore.ipynb").write_text(json.dumps(notebook))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(root / ".config"), "JUPYTER_RUNTIME_DIR": str(root / ".runtime"),
           "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).resolve().parent.parent),
                                                     os.environ.get("PYTHONPATH", "")) if p)}
    log = open(root / "lab.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0",
         f"--LabApp.workspaces_dir={root / '.workspaces'}", "--LabApp.news_url=",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(root))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"JupyterLab did not start:\n{(root / 'lab.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield f"{base}/lab/tree/explore.ipynb?token={token}", root
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_explorer_controls_redraw_the_chart_in_place(lab, tmp_path):
    url, root = lab
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(  # a fresh user-data-dir
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu"], viewport={"width": 1400, "height": 1000})
        try:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_selector(".jp-Notebook .jp-Cell .cm-content", timeout=120_000)
            # the kernel must be connected, or Shift+Enter only moves the cursor
            page.locator(".jp-StatusBar-Widget", has_text="| Idle").first.wait_for(timeout=120_000)
            page.click(".jp-Notebook .jp-Cell .cm-content")
            page.keyboard.press("Shift+Enter")

            output = page.locator(".jp-Notebook .jp-OutputArea-output .widget-output")
            charts = page.locator(".jp-Notebook .js-plotly-plot")  # the plain chart + the explorer's
            try:
                output.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
            except Exception:
                page.screenshot(path=str(root / "failure.png"))
                (root / "failure.html").write_text(page.content())
                raise AssertionError(f"no chart in the explorer's output; page saved in {root}") from None

            def y_title() -> str:
                return output.locator(".js-plotly-plot .ytitle").text_content()

            def wait_for(predicate, what: str) -> None:
                deadline = time.monotonic() + 60
                while not predicate():
                    if time.monotonic() > deadline:
                        raise AssertionError(f"the chart did not update: {what}")
                    page.wait_for_timeout(250)

            assert y_title() == "latency_p50_ms"
            # the notebook renderer's JSON-only output is drawn by JupyterLab (jupyterlab-plotly)
            plain = page.locator(".jp-Notebook .js-plotly-plot .gtitle", has_text="stored as Plotly JSON only")
            plain.first.wait_for(timeout=30_000)
            assert plain.count() == 1
            assert charts.count() == 2
            legend = output.locator(".js-plotly-plot .legendtext")
            assert sorted(legend.all_text_contents()) == ["alpha", "beta"]

            metric = page.locator(".widget-dropdown", has_text="metric").locator("select")
            metric.select_option("throughput_items_per_s")
            wait_for(lambda: y_title() == "throughput_items_per_s", "metric")
            assert charts.count() == 2 and output.locator(".js-plotly-plot").count() == 1  # in place, not appended

            model = page.locator(".widget-dropdown", has_text="model").locator("select")
            model.select_option("beta")
            # one series left: the legend goes, and the trace holds beta's three batch sizes
            wait_for(lambda: output.locator(".js-plotly-plot .legendtext").count() == 0
                     and output.locator(".js-plotly-plot .scatterlayer .point").count() == 3, "model")

            sizes = page.locator(".widget-select-multiple", has_text="batch sizes").locator("select")
            sizes.select_option(["1", "4"])
            wait_for(lambda: output.locator(".js-plotly-plot .scatterlayer .point").count() == 2, "batch sizes")
            ticks = output.locator(".js-plotly-plot .xtick text").all_text_contents()
            assert ticks == ["1", "4"]  # only the measured batch sizes, no 1.5 / 2.5 ticks
            assert charts.count() == 2
        finally:
            browser.close()
