"""A real browser opens the HTML figures and the index: plots render, nothing errors.

Uses Debian's chromium (CI installs it), fully offline: the pages load plotly.js from
their own folder.
"""

import shutil
import subprocess
from pathlib import Path

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


# Appended to a figure's page: once plotly has drawn, list every subplot, legend, title,
# axis title, colour bar, table and annotation whose box leaves the figure's frame (the
# figure's own div, which the index's iframe is sized to).
LAYOUT_CHECK = """
<script>
window.addEventListener("load", () => setTimeout(() => {
  const div = document.querySelector(".plotly-graph-div");
  const frame = div.getBoundingClientRect();
  const parts = [".cartesianlayer .subplot", ".legend", ".g-gtitle", ".g-xtitle",
                 ".g-ytitle", ".colorbar", ".table", ".annotation"];
  const seen = {}, outside = [];
  for (const sel of parts) {
    for (const el of div.querySelectorAll(sel)) {
      const r = el.getBoundingClientRect();
      if (r.width === 0 && r.height === 0) continue;
      seen[sel] = (seen[sel] || 0) + 1;
      if (r.left < frame.left - 1 || r.top < frame.top - 1 ||
          r.right > frame.right + 1 || r.bottom > frame.bottom + 1) {
        outside.push(sel + " " + [r.left, r.top, r.right, r.bottom].map(Math.round).join(","));
      }
    }
  }
  const pre = document.createElement("pre");
  pre.id = "layout-check";
  pre.textContent = "LAYOUT " + JSON.stringify({seen: seen, outside: outside});
  document.body.appendChild(pre);
}, 1000));
</script>
"""


def _committed_figures():
    from sinklens.figures.registry import FIGURES

    folder = Path(__file__).resolve().parents[2] / "figures"
    return [(name, folder / f"{name}.json") for name in FIGURES]


@pytest.mark.parametrize(("name", "numbers"), _committed_figures(), ids=lambda x: str(x))
def test_every_committed_figure_fits_its_frame(name, numbers, tmp_path):
    """Each figure, drawn at its default size from its committed numbers, shows every
    subplot, legend and title inside the frame the index gives it."""
    import json
    import re

    from sinklens.figures.registry import get_figure

    figure = draw.with_subscripts(
        draw.fit_title(get_figure(name).draw(json.loads(numbers.read_text())))
    )
    drawn = Drawn(name, figure, {})
    save_figures([drawn], tmp_path / "figs", formats=("html",))
    write_index([drawn], tmp_path / "figs")
    page = tmp_path / "figs" / f"{name}.html"
    page.write_text(page.read_text().replace("</body>", LAYOUT_CHECK + "</body>"))
    # The index's frame for this figure (style="width:…px;height:…px") holds all of it.
    index = (tmp_path / "figs" / "index.html").read_text()
    width, height = map(int, re.search(r"width:(\d+)px;height:(\d+)px", index).groups())
    assert width >= figure.layout.width and height >= figure.layout.height
    # Headless chromium's window size includes its own frame: leave room for it, so that
    # the page's viewport clips nothing and only the figure's own frame is checked.
    window = f"--window-size={width + 200},{height + 300}"
    proc = run_chromium(tmp_path, window, "--dump-dom", page.as_uri())
    found = re.search(r"LAYOUT (\{.*\})", proc.stdout)
    assert found, proc.stderr[-800:]
    layout = json.loads(found.group(1).replace("&quot;", '"'))
    assert layout["outside"] == [], f"{name}: parts outside the frame: {layout['outside']}"
    assert layout["seen"].get(".cartesianlayer .subplot") or layout["seen"].get(".table"), layout
    if any(getattr(t, "showlegend", None) is not False and t.name for t in figure.data):
        assert layout["seen"].get(".legend"), f"{name}: no legend drawn"
    assert not console_errors(proc.stderr)
