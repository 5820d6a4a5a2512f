"""report.html opened by headless Chromium from a file:// URL with networking off: the Plotly charts render."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from _quick_pipeline import quick_run

CHROMIUM = next((path for path in (shutil.which("chromium"), shutil.which("chromium-browser"),
                                   "/usr/bin/chromium") if path and Path(path).is_file()), None)

pytestmark = [
    pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(900),
    pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium (Debian package 'chromium') is not installed"),
]

# Offline: every host name fails to resolve and any request that still tries goes to a dead proxy.
OFFLINE_FLAGS = ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost", "--proxy-server=127.0.0.1:9",
                 "--proxy-bypass-list=<-loopback>"]


def chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
         *OFFLINE_FLAGS, "--virtual-time-budget=20000", *extra, url],
        capture_output=True, text=True, timeout=180)


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA PNG with the standard library: (width, height, rows of raw pixel bytes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, idat, header = 8, b"", None
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        offset += 12 + length
    width, height, depth, color_type = header[:4]
    assert depth == 8 and color_type in (2, 6)
    channels = 3 if color_type == 2 else 4
    stride = width * channels
    raw = zlib.decompress(idat)
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, up_left = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else up_left)) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, channels, rows


def colours(path: Path) -> dict[bytes, int]:
    """How many (sampled) pixels have each RGB colour."""
    width, channels, rows = png_pixels(path)
    counts: dict[bytes, int] = {}
    for row in rows[::2]:
        for i in range(0, width * channels, channels * 2):
            key = row[i:i + 3]
            counts[key] = counts.get(key, 0) + 1
    return counts


@pytest.fixture(scope="module")
def report_html():
    run = quick_run()
    assert run.returncode == 0, run.stderr[-3000:]
    return run.run_dir / "report.html"


def test_report_charts_render_offline(report_html, tmp_path):
    page = report_html.read_text()
    charts = len(re.findall(r'<div\b[^>]*class="plotly-graph-div"[^>]*>', page))
    assert charts >= 6
    dom = chromium(report_html.as_uri(), tmp_path / "profile", "--dump-dom").stdout
    # Plotly marks a div it has drawn with js-plotly-plot and fills it with <svg class="main-svg"> layers
    drawn = len(re.findall(r'<div\b[^>]*class="plotly-graph-div js-plotly-plot"[^>]*>', dom))
    assert drawn == charts, f"{drawn} of {charts} charts rendered"
    assert dom.count('class="main-svg"') >= 2 * charts
    assert dom.count('class="scatterlayer') >= charts or dom.count("class=\"trace") >= charts


def test_report_screenshot_is_not_blank(report_html, tmp_path):
    shot, blank = tmp_path / "report.png", tmp_path / "blank.png"
    (tmp_path / "blank.html").write_text("<html><body></body></html>")
    chromium(report_html.as_uri(), tmp_path / "p1", f"--screenshot={shot}", "--window-size=1280,2400")
    chromium((tmp_path / "blank.html").as_uri(), tmp_path / "p2", f"--screenshot={blank}", "--window-size=1280,2400")
    assert shot.is_file() and blank.is_file()
    assert len(colours(blank)) <= 2
    painted = colours(shot)
    assert len(painted) > 50  # text, axes, traces, anti-aliasing
    # Plotly's first trace colour (#636efa) is painted: a chart line was drawn, not only tables and text
    assert painted.get(bytes([0x63, 0x6E, 0xFA]), 0) > 20


def test_model_pages_and_chart_files_render_offline_from_the_one_plotly_js(report_html, tmp_path):
    run_dir = report_html.parent
    for page in (run_dir / "cpu" / "resnet50" / "benchmark.html", run_dir / "cpu" / "gpt2" / "charts" / "throughput.html"):
        html = page.read_text()
        assert re.findall(r'<script[^>]*src="([^"]*)"', html)[0].endswith("plotly.min.js")
        charts = len(re.findall(r'<div\b[^>]*class="plotly-graph-div"[^>]*>', html))
        dom = chromium(page.as_uri(), tmp_path / page.stem, "--dump-dom").stdout
        drawn = len(re.findall(r'<div\b[^>]*class="plotly-graph-div js-plotly-plot"[^>]*>', dom))
        assert charts >= 1 and drawn == charts, f"{page}: {drawn} of {charts} charts rendered"
