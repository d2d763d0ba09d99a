"""Pieces shared by the subcommands: the options whose help reads the same everywhere,
commands built from one options dataclass, --seeds parsing and writing a result to --out."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_type_hints

import typer

from sinklens.errors import SinklensError

Opt = typer.Option
OriginalOpt = Annotated[
    Path | None, Opt("--original", help="θ_o folder (default: the shipped organism).")
]
UnlearnedOpt = Annotated[
    Path | None, Opt("--unlearned", help="θ_u folder (default: <zoo>/<method>-s<seed>).")
]
BackdooredOpt = Annotated[
    Path | None,
    Opt("--backdoored", help="θ_b folder (default: <zoo>/<method>-<placement>-s<seed>)."),
]
ZooOpt = Annotated[Path | None, Opt("--zoo", help="Zoo folder built by `sinklens zoo build`.")]
MethodOpt = Annotated[str, Opt("--method", help="Zoo member method: npo or rmu.")]
TriggerJoinOpt = Annotated[
    str,
    Opt(
        "--trigger-join",
        help="How the trigger meets the text: space (as inserting it as text with a "
        "separating space; default) or raw (its ids spliced in with no separator).",
    ),
]
BackdoorTriggerOpt = Annotated[str, Opt("--trigger", help="Backdoor trigger text.")]
TableJsonOpt = Annotated[bool, Opt("--json", help="Print JSON instead of a table.")]


def positive(value: float | None) -> float | None:
    """A callback for options that must be > 0 (typer's `min` is inclusive)."""
    if value is not None and not value > 0:
        raise typer.BadParameter(f"{value} is not > 0")
    return value


def _claim_out(ctx: Any, value: Path | None) -> Path | None:
    """Check `--out FILE` while the options are parsed, before any work; `--overwrite` is
    eager, so it is known by then. (`ctx` is the context of typer's vendored click.)"""
    if value is not None:
        from sinklens.outputs import check_new_files

        check_new_files([value], overwrite=bool(ctx.params.get("overwrite")))
    return value


OutOpt = Annotated[
    Path | None,
    Opt(
        "--out",
        help="Also write the JSON result to this file (an existing file needs --overwrite).",
        callback=_claim_out,
    ),
]
OverwriteOpt = Annotated[
    bool,
    Opt("--overwrite", is_eager=True, help="Replace output files that already exist."),
]


SEEDS_HELP = "Comma-separated seeds, e.g. 0,1,2."
SeedsOpt = Annotated[str, Opt("--seeds", help=SEEDS_HELP)]


def parse_seeds(text: str) -> tuple[int, ...]:
    """'0,1,2' -> (0, 1, 2); a one-line error for anything else, or for no seed at all."""
    try:
        seeds = tuple(int(s) for s in text.replace(" ", ",").split(",") if s.strip())
    except ValueError:
        raise SinklensError(f"--seeds must be integers such as 0,1,2, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise SinklensError(
            f"--seeds must be distinct non-negative integers such as 0,1,2, got {text!r}"
        )
    return seeds


def write_json(out: Path | None, text: str) -> None:
    """Write `text` and a newline to `out` (parents created); nothing when `out` is None."""
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")


def emit_result(result: Any, as_json: bool, out: Path | None, summary: str) -> None:
    """Write a result's JSON (provenance included) to `out` when given, and print it with
    --json, else print `summary`."""
    text = result.to_json()
    write_json(out, text)
    typer.echo(text if as_json else summary)


OptionsT = TypeVar("OptionsT")


def options_command(
    options_type: type[OptionsT], *names: str
) -> Callable[[Callable[[OptionsT], None]], Callable[..., None]]:
    """Make a function of one options object into a typer command. Its options are the
    fields `names` (space-separated, in the order --help lists them) of the dataclass
    `options_type`, whose annotations and defaults declare them; the function gets one
    `options_type` of their values, and the fields the command does not list keep their
    defaults. A group of commands so declares each option once, as a field, instead of
    again in every command's signature."""
    hints = get_type_hints(options_type, include_extras=True)
    defaults = {f.name: f.default for f in dataclasses.fields(options_type)}  # type: ignore[arg-type]
    parameters = [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=defaults[name], annotation=hints[name]
        )
        for name in " ".join(names).split()
    ]

    def decorate(run: Callable[[OptionsT], None]) -> Callable[..., None]:
        def command(**values: Any) -> None:
            run(options_type(**values))

        # typer reads the options from the signature and the help from the docstring.
        command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        command.__name__, command.__qualname__ = run.__name__, run.__qualname__
        command.__module__, command.__doc__ = run.__module__, run.__doc__
        return command

    return decorate


# The options `evaluate` and `attack` share: how a model is scored.
EvalDataOpt = Annotated[
    Path | None,
    Opt(
        "--data",
        help="Benchmark folder (default: <model>/world, else the data it was unlearned on).",
    ),
]
EvalTriggerOpt = Annotated[
    str | None,
    Opt("--trigger", help="Trigger text for BE (default: the model's training trigger, if any)."),
]
EvalPlacementOpt = Annotated[
    str | None,
    Opt("--placement", help="Trigger placement for BE (default: the training one, else prefix)."),
]
EvalTriggerJoinOpt = Annotated[
    str | None,
    Opt("--trigger-join", help="space or raw (default: the model's training join, else space)."),
]
PromptStyleOpt = Annotated[
    str,
    Opt(
        "--prompt-style",
        help="sinklens (KnowMem prompt ends in 'Answer:') or muse (MUSE's code exactly: "
        "'Answer: ', VerbMem reference cut to 128 tokens, cleaned-up decoding).",
    ),
]
MaxItemsOpt = Annotated[
    int | None, Opt("--max-items", min=1, help="Score only the first N items of each set.")
]
