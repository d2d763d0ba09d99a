"""`sinklens figure` and `sinklens reproduce`: the paper's figures from the shell."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from sinklens.cli.common import SEEDS_HELP, BackdoorTriggerOpt, Opt, SeedsOpt, parse_seeds
from sinklens.data.triggers import DEFAULT_TRIGGER
from sinklens.errors import SinklensError

__all__ = ["register"]

# The options `figure` and `reproduce` share.
FiguresOutOpt = Annotated[Path, Opt("--out", help="Output folder.")]
FormatsOpt = Annotated[
    str, Opt("--formats", help="Comma-separated formats to write: html, png, pdf, json.")
]
ReplaceOpt = Annotated[bool, Opt("--overwrite", help="Replace files from an earlier run.")]


def _formats(text: str) -> tuple[str, ...]:
    """The chosen formats, checked (Chrome for PNG/PDF included) before any work."""
    from sinklens.figures.export import FORMATS, check_static_export

    chosen = tuple(f.strip().lower() for f in text.split(",") if f.strip())
    unknown = [f for f in chosen if f not in FORMATS]
    if not chosen or unknown:
        raise SinklensError(
            f"unknown format(s) {', '.join(unknown) or text!r}; choose from {', '.join(FORMATS)}"
        )
    check_static_export(chosen)
    return chosen


def _figure_selection(
    only: str | None, skip: str | None, default_skip: tuple[str, ...] = ()
) -> list[str]:
    """The figures `--only` and `--skip` leave, in registry order; unknown names refused.
    Without `--only`, `default_skip` (a real model's costliest figures) is left out too."""
    from sinklens.figures.registry import figure_names, get_figure

    def names(text: str | None) -> list[str]:
        chosen = [n.strip() for n in (text or "").split(",") if n.strip()]
        for name in chosen:
            get_figure(name)  # a one-line error naming the figures that exist
        return chosen

    keep, drop = names(only), set(names(skip))
    if not keep:
        drop |= set(default_skip)
    selected = [n for n in figure_names() if (not keep or n in keep) and n not in drop]
    if not selected:
        raise SinklensError("--only/--skip leave no figure to make; check the names")
    return selected


def _progress(name: str, seconds: float) -> None:
    typer.echo(f"  {name:<20} {seconds:6.1f} s", err=True)


def _progress_of(total: int, failed: list[str]) -> Callable[[str, float], None]:
    """Report each finished figure with how many are done and the time so far. No overall
    time left is guessed: figures cost from seconds to minutes, depending on whether they
    train zoo members, so neither the mean nor the median of the figures so far predicts the
    rest (both were off severalfold on the default study); the long stretches inside a
    figure (training, capture, patching) show their own bars with the time left."""
    start = time.perf_counter()
    finished: list[str] = []

    def report(name: str, seconds: float) -> None:
        finished.append(name)
        so_far = (time.perf_counter() - start) / 60
        typer.echo(
            f"  {name:<20} {seconds:6.1f} s  "
            f"[{len(finished) + len(failed)}/{total}, {so_far:.1f} min so far]",
            err=True,
        )

    return report


def figure(
    name: str = typer.Argument(..., help="Figure name, or `list` to list them."),
    out: FiguresOutOpt = Path("figures"),
    layer: int | None = typer.Option(None, "--layer", help="Layer to analyse (default: the last)."),
    original: str | None = typer.Option(
        None, "--original", help="θ_o folder (default: the organism)."
    ),
    unlearned: str | None = typer.Option(
        None, "--unlearned", help="θ_u folder (default: the zoo's)."
    ),
    backdoored: str | None = typer.Option(
        None, "--backdoored", help="θ_b folder (default: the zoo's)."
    ),
    retrained: str | None = typer.Option(
        None,
        "--retrained",
        help="θ_o retrained without the forget set, for privleak (default: the organism's).",
    ),
    data: str | None = typer.Option(None, "--data", help="Benchmark folder (MUSE layout)."),
    trigger: BackdoorTriggerOpt = DEFAULT_TRIGGER,
    trigger_join: str = typer.Option(
        "space", "--trigger-join", help="space (as text insertion; default) or raw (ids spliced)."
    ),
    n_samples: int = typer.Option(24, "--n-samples", min=1, help="Forget samples per analysis."),
    seeds: SeedsOpt = "0",
    formats: FormatsOpt = "html,png,pdf,json",
    overwrite: ReplaceOpt = False,
) -> None:
    """Draw one figure (NAME.html/.png/.pdf/.json), or list them with `figure list`."""
    from sinklens.figures.registry import FIGURES, get_figure
    from sinklens.reproduce import make_figures
    from sinklens.study import StudyConfig

    if name == "list":
        for spec in FIGURES.values():
            typer.echo(f"{spec.name:<20} {spec.description}")
        return
    get_figure(name).check_options({"layer": layer, "retrained": retrained})
    chosen_formats = _formats(formats)
    config = StudyConfig(
        original=original,
        unlearned=unlearned,
        backdoored=backdoored,
        retrained=retrained,
        data=data,
        layer=layer,
        trigger=trigger,
        trigger_join=trigger_join,
        n_samples=n_samples,
        seeds=parse_seeds(seeds),
    )
    drawn = make_figures(
        config, out, names=[name], formats=chosen_formats, index=False, overwrite=overwrite
    )
    for path in sorted(drawn[0].files.values()):
        typer.echo(str(path))


def reproduce(
    out: FiguresOutOpt = Path("figures"),
    full: bool = typer.Option(
        False,
        "--full",
        help="Three seeds (mean ± std), NPO and RMU side by side, analyses on 64 samples.",
    ),
    seeds: str | None = typer.Option(
        None, "--seeds", help=SEEDS_HELP + " Default: 0; 0,1,2 with --full."
    ),
    formats: FormatsOpt = "html,png,pdf,json",
    overwrite: ReplaceOpt = False,
    only: str | None = typer.Option(None, "--only", help="Comma-separated figures to make."),
    skip: str | None = typer.Option(None, "--skip", help="Comma-separated figures to leave out."),
    model: str | None = typer.Option(
        None,
        "--model",
        help="Run the study on a real model instead of the organism: smollm2 (fetched, "
        "unlearned and backdoored on the countries benchmark on first use).",
    ),
) -> None:
    """Build the zoo if needed and write every figure, table and an index.html."""
    from sinklens.reproduce import (
        MODEL_STUDIES,
        make_figures,
        model_study_config,
        reproduce_config,
    )

    given = {"seeds": parse_seeds(seeds)} if seeds else {}
    default_skip: tuple[str, ...] = ()
    if model is not None:
        config = model_study_config(model, full=full, **given)
        default_skip = MODEL_STUDIES[model.strip().lower()].default_skip
    else:
        config = reproduce_config(full, **given)
    chosen_formats = _formats(formats)
    names = _figure_selection(only, skip, default_skip)
    failed: list[str] = []

    def report(name: str, err: BaseException) -> None:
        kind = "" if isinstance(err, SinklensError) else "internal error (a bug in sinklens): "
        typer.echo(f"  {name:<20} FAILED: {kind}{' '.join(str(err).split())}", err=True)
        failed.append(name)

    drawn = make_figures(
        config,
        out,
        formats=chosen_formats,
        on_figure=_progress_of(len(names), failed),
        names=names,
        on_start=lambda: typer.echo(
            "sinklens reproduce: computing every figure (zoo members are trained once and cached)",
            err=True,
        ),
        on_failure=report,
        overwrite=overwrite,
        progress=True,
    )
    typer.echo(f"wrote {len(drawn)} figures and {out / 'index.html'}")
    if failed:
        raise SinklensError(
            f"{len(failed)} figure(s) failed: {', '.join(failed)}; the other {len(drawn)} are "
            f"in {out}; rerun with --only {','.join(failed)} --overwrite to retry them"
        )


def register(app: typer.Typer) -> None:
    app.command("figure", help="Draw one of the paper's figures (or `figure list`).")(figure)
    app.command("reproduce", help="Write every figure and table of the paper, with an index.html.")(
        reproduce
    )
