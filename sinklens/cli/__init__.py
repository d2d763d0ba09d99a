"""The `sinklens` command line: one typer app, one sub-app per job.

Every command's options map onto the same dataclass config the Python API takes, so a
notebook and a shell run the same code. User errors (`SinklensError`) and usage errors
become one line on stderr and exit code 2; an interrupt exits 130; anything else says it
is a bug of ours (or the machine's: memory, disk). `--debug` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import sys
import warnings

import typer

from sinklens import __version__
from sinklens.errors import SinklensError

app = typer.Typer(
    name="sinklens",
    help="Attention sinks in (backdoored) unlearned language models: analyses and figures.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"debug": False}


def _version_callback(value: bool | None) -> None:
    if value:
        typer.echo(f"sinklens {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool | None = typer.Option(
        False,
        "--version",
        callback=_version_callback,
        is_eager=True,
        help="Print the version and exit.",
    ),
    debug: bool | None = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
) -> None:
    """Attention sinks in (backdoored) unlearned language models: analyses and figures."""
    _state["debug"] = bool(debug)


# Each module owns one job's commands and exposes `register(app)`.
_COMMAND_MODULES = (
    "organism",
    "model",
    "unlearn",
    "evaluate",
    "attack",
    "defend",
    "analyze",
    "patch",
    "figure",
)


def _register_subcommands() -> None:
    # Imported lazily so that `sinklens --version` does not pay for torch.
    import importlib

    for name in _COMMAND_MODULES:
        importlib.import_module(f"sinklens.cli.{name}").register(app)


def _click_exception_types() -> tuple[type[Exception], ...]:
    # typer >= 0.25 raises the exceptions of its own vendored copy of click.
    import click

    types: list[type[Exception]] = [click.exceptions.ClickException]
    with contextlib.suppress(ImportError):
        from typer._click.exceptions import ClickException

        types.append(ClickException)
    return tuple(types)


def _usage_error_line(err: Exception) -> str:
    """A click usage error as one line, in click's words, naming the command's --help."""
    message = err.format_message() if hasattr(err, "format_message") else str(err)
    ctx = getattr(err, "ctx", None)
    path = getattr(ctx, "command_path", None) or "sinklens"
    return f"error: {' '.join(message.split())} (see '{path} --help')"


INTERRUPTED = 130
_BUG_REPORT = "the sinklens issue tracker"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    _register_subcommands()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        code = app(args=argv, standalone_mode=False)
    except SinklensError as err:
        if debug:
            raise
        typer.echo(f"error: {err}", err=True)
        return 2
    except typer.Exit as exit_:
        code = exit_.exit_code
    except (typer.Abort, KeyboardInterrupt):
        code = INTERRUPTED
    except Exception as err:
        if debug:
            raise
        if isinstance(err, _click_exception_types()):
            typer.echo(_usage_error_line(err), err=True)
            return int(getattr(err, "exit_code", 2))
        typer.echo(_unexpected_error_line(err), err=True)
        return 1
    # typer turns Ctrl-C into a returned 130; commands return nothing else.
    if code == INTERRUPTED:
        typer.echo(
            "error: interrupted; finished results and cache entries are kept, and running "
            "the same command again resumes from them",
            err=True,
        )
        return INTERRUPTED
    return code if isinstance(code, int) else 0


def _one_line_warning(message: Warning | str, *_: object, **__: object) -> None:
    """Warnings as one line on stderr, like errors (the file and source line only with
    --debug)."""
    typer.echo(f"warning: {' '.join(str(message).split())}", err=True)


def _unexpected_error_line(err: BaseException) -> str:
    """One line for an exception that is not a user error: the environment's (out of
    memory, disk, permissions) said as such, anything else labelled a bug of ours."""
    text = " ".join(str(err).split())
    if isinstance(err, MemoryError):
        return "error: out of memory; use fewer samples, a smaller --batch-size or a smaller model"
    if isinstance(err, OSError) and err.strerror:
        where = f": {err.filename}" if err.filename else ""
        return f"error: {err.strerror}{where}; free the space or fix the permissions and rerun"
    return (
        f"error: internal error (a bug in sinklens, not in your input): {type(err).__name__}: "
        f"{text}; rerun with --debug for the traceback and report it to {_BUG_REPORT}"
    )


def entry() -> None:
    """The console script (and `python -m sinklens.cli`): `main`, with warnings printed
    as one line each (the file and source line only with --debug). In-process callers of
    `main` (tests, notebooks) keep Python's own warning handling."""
    if "--debug" not in sys.argv[1:]:
        warnings.showwarning = _one_line_warning
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
