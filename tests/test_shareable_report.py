"""What a quick run leaves for a reader: a small folder, a clean terminal, a report that reads as a report.

Reuses the one quick run of the test session (tests/_quick_pipeline.py).
"""

from __future__ import annotations

import json
import re

import pytest

from _quick_pipeline import quick_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

#: A quick run's whole folder (13 notebooks, 13 HTML pages, charts, traces, results): plotly.js (4.8 MB) once.
QUICK_RUN_MAX_MB = 15


@pytest.fixture(scope="module")
def run():
    result = quick_run()
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_run_folder_is_small_and_ships_plotly_js_once(run):
    files = [p for p in run.run_dir.rglob("*") if p.is_file()]
    total_mb = sum(p.stat().st_size for p in files) / 1e6
    assert total_mb < QUICK_RUN_MAX_MB, f"quick run wrote {total_mb:.1f} MB"
    assert [p.relative_to(run.run_dir).as_posix() for p in files if p.name == "plotly.min.js"] == ["plotly.min.js"]
    for path in files:
        if path.suffix in (".html", ".ipynb"):
            assert path.stat().st_size < 2_000_000, path  # no embedded plotly.js copy
    for page in run.run_dir.rglob("*.html"):
        html = page.read_text(encoding="utf-8")  # links a reader may click are fine; nothing is fetched from a CDN
        assert not re.search(r'<(script|img|iframe)[^>]*\bsrc="(https?:)?//|<link[^>]*\bhref="(https?:)?//', html), page


def test_terminal_output_is_clean_and_ends_with_the_headline(run):
    terminal = run.stdout + run.stderr
    noisy = [line for line in terminal.splitlines()
             if re.search(r"^(ERROR|USDT)|gpuGetDeviceCount|without encryption", line.strip())]
    assert not noisy, noisy[:5]
    summary = run.stdout.split("Summary (details in report.html):", 1)
    assert len(summary) == 2, run.stdout[-2000:]
    table = summary[1]
    assert "latency p50 (95% CI)" in table and "recommended variant" in table
    for model in ("resnet50", "gpt2", "distilbert"):
        assert model in table


def test_report_shows_its_own_run_finished_with_summary_first_and_code_hidden(run):
    nb = json.loads((run.run_dir / "report.ipynb").read_text())
    text = "\n".join(str(output.get("data", {}).get("text/html", "")) + str(output.get("text", ""))
                     for cell in nb["cells"] for output in cell.get("outputs", []))
    runs_html = next(str(o["data"]["text/html"]) for c in nb["cells"] if "scope.runs_table()" in "".join(c["source"])
                     for o in c.get("outputs", []) if "text/html" in o.get("data", {}))
    assert "succeeded" in runs_html and "running" not in runs_html
    assert "(quick)" in text  # a smoke run is marked as such
    html = (run.run_dir / "report.html").read_text(encoding="utf-8")
    assert "ReportScope(" not in html and "import pandas" not in html  # code hidden in the shared page
    summary_at, runs_at = html.find("latency p50 (95% CI)"), html.find('id="Runs"')
    assert 0 < summary_at < runs_at  # the executive summary comes before the details
    manifest = json.loads((run.run_dir / "run.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["duration_s"] > 0
