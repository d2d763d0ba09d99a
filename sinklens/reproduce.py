"""`sinklens reproduce`: every figure and table of the paper from one command.

Builds the organism's zoo members it needs (reused when cached), runs every analysis,
writes NAME.{html,png,pdf,json} for each figure and an index.html that shows them all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from sinklens.figures.export import FORMATS, Drawn, prepare_output_folder, save_figures, write_index
from sinklens.figures.paper import figure_names, get_figure
from sinklens.study import Study, StudyConfig


def make_figures(
    config: StudyConfig,
    out: str | Path,
    *,
    names: Sequence[str] | None = None,
    formats: Iterable[str] = FORMATS,
    on_figure: Callable[[str, float], None] | None = None,
    index: bool = True,
) -> list[Drawn]:
    """Compute, draw and write the named figures (default: all) into `out`."""
    specs = [get_figure(name) for name in (names or figure_names())]
    folder = prepare_output_folder(out)
    study = Study(config)
    drawn = []
    for spec in specs:
        start = time.perf_counter()
        drawn.append(spec.make(study))
        if on_figure is not None:
            on_figure(spec.name, time.perf_counter() - start)
    save_figures(drawn, folder, formats)
    if index:
        write_index(drawn, folder, title="sinklens: Forgetting to Forget, reproduced")
    return drawn


FULL_SEEDS = (0, 1, 2)


def reproduce_config(full: bool = False, **overrides: object) -> StudyConfig:
    """The default study (seed 0, the chosen method), or `--full`: three seeds (figures
    show the mean and its spread over seeds), NPO and RMU side by side, and every
    analysis on 64 samples instead of 24. Explicit `overrides` win."""
    if full:
        overrides.setdefault("n_samples", 64)
        overrides.setdefault("seeds", FULL_SEEDS)
    return StudyConfig(full=full, **overrides)  # type: ignore[arg-type]
