"""A real browser opens the HTML figures and the index: plots render, nothing errors.

Uses Debian's chromium (CI installs it), fully offline: the pages load plotly.js from
their own folder.
"""

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from sinklens.figures import draw
from sinklens.figures.export import Drawn, save_figures, write_index

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (CI installs it)"),
]


def run_chromium(tmp_path, *args):
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=8000",
    ]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def written(tmp_path):
    drawn = [
        Drawn(
            "heat",
            draw.heatmap_figure(np.arange(12).reshape(3, 4), title="t", x_title="h", y_title="l"),
            {},
        ),
        Drawn("curves", draw.curves_figure({"p": {"a": [1, 2, 3]}}, title="c"), {}),
    ]
    out = tmp_path / "figs"
    save_figures(drawn, out, formats=("html", "json"))
    write_index(drawn, out)
    return out


def console_errors(stderr: str) -> list[str]:
    return [
        line
        for line in stderr.splitlines()
        if "CONSOLE" in line and ("Error" in line or "Uncaught" in line)
    ]


def test_figure_page_renders_offline(written, tmp_path):
    proc = run_chromium(tmp_path, "--dump-dom", (written / "heat.html").as_uri())
    assert "main-svg" in proc.stdout, "plotly did not draw the figure"
    assert not console_errors(proc.stderr)


def test_index_screenshot_is_not_blank(written, tmp_path):
    shot = tmp_path / "index.png"
    proc = run_chromium(
        tmp_path,
        f"--screenshot={shot}",
        "--window-size=1200,1400",
        (written / "index.html").as_uri(),
    )
    assert shot.is_file(), proc.stderr[-500:]
    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "the screenshot is (nearly) blank"
    assert not console_errors(proc.stderr)
