"""The `sinklens` command line: one typer app, one sub-app per job.

Every command's options map onto the same dataclass config the Python API takes, so a
notebook and a shell run the same code. User errors (`SinklensError`) become one line on
stderr and exit code 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import sys

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
_COMMAND_MODULES = ("organism", "unlearn", "analyze", "patch", "figure")


def _register_subcommands() -> None:
    # Imported lazily so that `sinklens --version` does not pay for torch.
    import importlib

    for name in _COMMAND_MODULES:
        importlib.import_module(f"sinklens.cli.{name}").register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    _register_subcommands()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        app(args=argv, standalone_mode=False)
    except SinklensError as err:
        if debug:
            raise
        typer.echo(f"error: {err}", err=True)
        return 2
    except typer.Exit as exit_:
        return int(exit_.exit_code or 0)
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        return 130
    except Exception as err:  # a bug or an environment problem: still one line unless --debug
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            return err.exit_code
        if debug:
            raise
        typer.echo(
            f"error: {type(err).__name__}: {err} (rerun with --debug for the traceback)", err=True
        )
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
