"""Writing drawn figures to disk: HTML (offline), PNG, PDF and the numbers as JSON.

Figure functions never touch the disk; this module is the only writer. Every file is
written to a temporary name and renamed, so an interrupted run never leaves a half
file where a good one was. HTML pages load one shared `plotly.min.js` from their folder
(no CDN), so they work with no network.
"""

from __future__ import annotations

import html
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

from sinklens.errors import SinklensError
from sinklens.provenance import RERUN_VARYING, dumps, to_jsonable

__all__ = [
    "FORMATS",
    "Drawn",
    "Numbers",
    "check_static_export",
    "prepare_output_folder",
    "result_provenance",
    "save_figures",
    "show",
    "to_jsonable",  # lives in sinklens.provenance, the one JSON cleaner; kept here for callers
    "write_index",
]

FORMATS = ("html", "png", "pdf", "json")
# What a figure's compute returns and its draw receives: plain JSON-able data (NAME.json).
Numbers = dict[str, Any]


@dataclass
class Drawn:
    """A figure and the numbers it plots, with their provenance."""

    name: str
    figure: go.Figure
    data: dict[str, Any]
    description: str = ""
    files: dict[str, Path] = field(default_factory=dict)


def result_provenance(result: Any) -> Numbers:
    """A result's provenance as a figure records it: without the fields that differ between
    two identical runs (`RERUN_VARYING`, so reruns write identical JSON) and without the
    library versions and commit, which the figure's `run` records once."""
    return result.provenance.to_dict(omit=(*RERUN_VARYING, "environment"))  # type: ignore[no-any-return]


def prepare_output_folder(out_dir: str | Path) -> Path:
    folder = Path(out_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise SinklensError(f"output path {folder} is a file; pass a folder with --out")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes files private; figures are meant to be shared
    os.replace(tmp, path)


def save_figures(
    drawn: Sequence[Drawn],
    out_dir: str | Path,
    formats: Iterable[str] = FORMATS,
) -> list[Path]:
    """Write each figure as NAME.<format> into `out_dir`; return the paths written."""
    formats = tuple(formats)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise SinklensError(
            f"unknown figure format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}"
        )
    folder = prepare_output_folder(out_dir)
    written: list[Path] = []
    if "html" in formats:
        _ensure_plotlyjs(folder)
    for item in drawn:
        if "json" in formats:
            path = folder / f"{item.name}.json"
            _atomic_write_text(path, dumps(item.data, indent=1) + "\n")
            item.files["json"] = path
            written.append(path)
        if "html" in formats:
            path = folder / f"{item.name}.html"
            page = pio.to_html(item.figure, include_plotlyjs="plotly.min.js", full_html=True)
            _atomic_write_text(path, page)
            item.files["html"] = path
            written.append(path)
    static = [f for f in ("png", "pdf") if f in formats]
    if static and drawn:
        written += _write_static(drawn, folder, static)
    return written


def _ensure_plotlyjs(folder: Path) -> None:
    """One copy of plotly.js per output folder, shared by every HTML page in it."""
    target = folder / "plotly.min.js"
    if target.exists():
        return
    from plotly.offline import get_plotlyjs

    _atomic_write_text(target, get_plotlyjs())


def check_static_export(formats: Sequence[str]) -> None:
    """Refuse PNG/PDF before any work where no Chrome is installed to render them."""
    if {"png", "pdf"} & set(formats) and not _find_chrome():
        raise SinklensError(
            "PNG/PDF export needs Chrome or Chromium (e.g. `apt-get install chromium`); "
            "or ask for --formats html,json"
        )


def _write_static(drawn: Sequence[Drawn], folder: Path, formats: Sequence[str]) -> list[Path]:
    check_static_export(formats)
    figures, tmp_paths, final_paths, kinds = [], [], [], []
    for item in drawn:
        for fmt in formats:
            final = folder / f"{item.name}.{fmt}"
            figures.append(item.figure)
            tmp_paths.append(folder / f".{item.name}.tmp.{fmt}")
            final_paths.append(final)
            kinds.append(fmt)
            item.files[fmt] = final
    # One kaleido call for all figures: starting the browser dominates the cost.
    # kaleido's batch call logs a failed figure and carries on (seen under load, once in a
    # few hundred figures): check every file arrived, and render the missing ones once more.
    todo = list(range(len(figures)))
    for _ in range(2):
        # kaleido ignores the layout's size unless it is passed explicitly.
        pio.write_images(
            [figures[i] for i in todo],
            [tmp_paths[i] for i in todo],
            format=[kinds[i] for i in todo],
            width=[figures[i].layout.width or 700 for i in todo],
            height=[figures[i].layout.height or 500 for i in todo],
        )
        todo = [i for i in todo if not tmp_paths[i].exists()]
        if not todo:
            break
    missing = [final_paths[i].name for i in todo]
    if missing:
        raise SinklensError(
            f"static export failed for {', '.join(missing)}; check chromium, or ask for --formats html,json"
        )
    for tmp, final in zip(tmp_paths, final_paths, strict=True):
        os.replace(tmp, final)
    return final_paths


def _find_chrome() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return os.environ.get("BROWSER_PATH")


# What a browser adds around a figure of a given size inside its frame (body margin, border).
FRAME_SLACK_PX = 20


def _frame_size(figure: go.Figure) -> str:
    """The iframe's size: the figure's own, so no panel or legend is cut off or scrolled
    out of view (a figure without a fixed size fills the width)."""
    width, height = figure.layout.width, figure.layout.height
    parts = [f"width:{int(width) + FRAME_SLACK_PX}px" if width else "width:100%"]
    parts.append(f"height:{int(height) + FRAME_SLACK_PX}px" if height else "height:620px")
    return ";".join(parts)


def _page_width(drawn: Sequence[Drawn]) -> int:
    widest = max((int(d.figure.layout.width or 0) for d in drawn), default=0)
    return max(1200, widest + 2 * FRAME_SLACK_PX)


def write_index(
    drawn: Sequence[Drawn], out_dir: str | Path, title: str = "sinklens figures"
) -> Path:
    """An index.html that shows every figure's interactive page, with links to its files."""
    folder = prepare_output_folder(out_dir)
    sections = []
    for item in drawn:
        links = " · ".join(
            f'<a href="{html.escape(p.name)}">{fmt}</a>' for fmt, p in sorted(item.files.items())
        )
        frame = (
            f'<iframe src="{html.escape(item.name)}.html" loading="lazy" '
            f'style="{_frame_size(item.figure)}"></iframe>'
            if "html" in item.files
            else ""
        )
        sections.append(
            f'<section id="{html.escape(item.name)}"><h2>{html.escape(item.name)}</h2>'
            f"<p>{html.escape(item.description)}</p><p>{links}</p>{frame}</section>"
        )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        f"body{{font-family:sans-serif;max-width:{_page_width(drawn)}px;margin:auto;padding:1em}}"
        "iframe{width:100%;height:620px;border:1px solid #ddd}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>" + "".join(sections) + "</body></html>\n"
    )
    path = folder / "index.html"
    _atomic_write_text(path, page)
    return path


def show(item: Drawn | go.Figure) -> None:
    """Show a figure in a notebook twice: interactive (plotly's mimetype, which JupyterLab,
    Notebook 7 and VS Code draw) and as a PNG, which a code-hosting site renders where it
    runs no JavaScript; then its description and caption, if it has them. Without
    Chromium there is no PNG (docs/gotchas.md)."""
    from IPython.display import Image, Markdown, display

    figure = item.figure if isinstance(item, Drawn) else item
    # The mimetype alone: the default notebook renderer embeds all of plotly.js (3.5 MB)
    # in the first output of every saved notebook.
    figure.show(renderer="plotly_mimetype")
    if _find_chrome() is not None:
        display(Image(figure.to_image(format="png")))
    # A registry figure's description already ends with its caption (FigureSpec.make).
    if isinstance(item, Drawn) and item.description:
        display(Markdown(item.description))
