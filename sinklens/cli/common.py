"""Pieces shared by the subcommands: the checkpoint options whose help reads the same
everywhere, --seeds parsing, zoo member lookup and writing a JSON result to --out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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


def zoo_member(zoo: Path, member: str, role: str) -> Path:
    """`zoo / member`, which must be a folder; the error names the `--role` way out."""
    path = zoo / member
    if not path.is_dir():
        raise SinklensError(
            f"zoo {zoo} has no member {member}; pass --{role} DIR or build it with `sinklens zoo build`"
        )
    return path


def write_json(out: Path | None, text: str) -> None:
    """Write `text` and a newline to `out` (parents created); nothing when `out` is None."""
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")


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
