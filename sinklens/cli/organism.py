"""`sinklens organism`: where the shipped model organism lives, what it is, how to rebuild it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from sinklens.cli.common import TableJsonOpt, positive
from sinklens.errors import SinklensError

__all__ = ["register"]


def _folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _check_out_folder(out: Path) -> None:
    from sinklens.organism import BUILD_INFO

    if out.exists() and not out.is_dir():
        raise SinklensError(f"--out {out} is a file; pass a new or empty folder")
    if out.is_dir() and any(out.iterdir()) and not (out / BUILD_INFO).is_file():
        raise SinklensError(
            f"--out {out} is not empty and does not hold an organism build; "
            "pass a new or empty folder (a previous organism build is overwritten)"
        )


def _info_rows(info: dict[str, Any], folder: Path) -> list[tuple[str, str]]:
    stats = info.get("stats", {})
    sinks = stats.get("sinks", {})
    mem = stats.get("memorisation", {})

    def pct(x: Any) -> str:
        return "-" if x is None else f"{x:.1f}%"

    def num(x: Any, fmt: str = ".3f") -> str:
        return "-" if x is None else format(x, fmt)

    rows = [
        ("folder", str(folder)),
        ("size on disk", f"{_folder_size(folder) / 1e6:.2f} MB"),
        ("parameters", num(info.get("n_params"), ",d")),
        ("seed", str(info.get("seed", "-"))),
        ("train steps", str(info.get("config", {}).get("steps", "-"))),
        ("final train loss", num(info.get("train_loss_final"))),
        (
            "build time",
            f"{num(info.get('time_total_s'), '.0f')} s on {info.get('n_threads', '-')} threads",
        ),
        (
            f"Sink^{sinks.get('epsilon', 0.3)} on BOS, layers >= 1",
            pct(sinks.get("sink_rate_after_first_layer")),
        ),
        ("Sink per layer", ", ".join(pct(x) for x in sinks.get("sink_rate_per_layer", [])) or "-"),
        (
            "alpha on BOS per layer",
            ", ".join(num(x) for x in sinks.get("alpha_per_layer", [])) or "-",
        ),
        ("forget KnowMem", num(mem.get("knowmem_forget"))),
        ("forget VerbMem", num(mem.get("verbmem_forget"))),
        ("retain KnowMem", num(mem.get("knowmem_retain"))),
        (
            "forget / retain choice acc.",
            f"{num(mem.get('choice_forget'))} / {num(mem.get('choice_retain'))}",
        ),
    ]
    return rows


def register(app: typer.Typer) -> None:
    """Add the `organism` sub-app (build, path, info) to the root app."""
    sub = typer.Typer(
        name="organism",
        help="The shipped model organism: a small Llama with attention sinks and a memorised book.",
        no_args_is_help=True,
    )

    @sub.command("path")
    def path_cmd(
        world: bool = typer.Option(
            False, "--world", help="Print the world (MUSE-layout) folder instead."
        ),
    ) -> None:
        """Print the folder of the shipped checkpoint (a Hugging Face model folder)."""
        from sinklens.organism import organism_path, world_path

        typer.echo(str(world_path() if world else organism_path()))

    @sub.command("info")
    def info_cmd(
        checkpoint: Path | None = typer.Option(
            None, "--checkpoint", help="An organism folder (default: the shipped one)."
        ),
        as_json: TableJsonOpt = False,
        measure: bool = typer.Option(
            False,
            "--measure",
            help="Re-measure sinks and memorisation now instead of reading build_info.json.",
        ),
    ) -> None:
        """Size, training loss, sink statistics and memorisation scores of the organism."""
        from sinklens.checkpoint import validate_checkpoint_folder
        from sinklens.organism import build_info, organism_path

        folder = validate_checkpoint_folder(
            checkpoint if checkpoint is not None else organism_path()
        )
        info = build_info(folder)
        if measure:
            from sinklens.checkpoint import load_hf_model
            from sinklens.data.formats import load_benchmark
            from sinklens.organism import world_path
            from sinklens.organism.build import measure_organism

            model, tokenizer = load_hf_model(folder)
            info["stats"] = measure_organism(model, tokenizer, load_benchmark(world_path(folder)))
        if as_json:
            out = {k: v for k, v in info.items() if k != "train_loss_curve"}
            out["folder"] = str(folder)
            out["size_bytes"] = _folder_size(folder)
            typer.echo(json.dumps(out, indent=2, sort_keys=True))
            return
        rows = _info_rows(info, folder)
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            typer.echo(f"{key:<{width}}  {value}")

    @sub.command("build")
    def build_cmd(
        out: Path = typer.Option(
            ..., "--out", help="New or empty folder to write the organism to."
        ),
        seed: int = typer.Option(
            0, "--seed", help="Seed of the world, the tokenizer and the weights."
        ),
        steps: int | None = typer.Option(None, "--steps", min=1, help="Training steps."),
        batch_size: int | None = typer.Option(
            None, "--batch-size", min=1, help="Documents per step."
        ),
        lr: float | None = typer.Option(
            None, "--lr", callback=positive, help="Peak learning rate (> 0)."
        ),
        threads: int | None = typer.Option(
            None,
            "--threads",
            min=1,
            help="torch CPU threads (part of what fixes the weights bit for bit).",
        ),
        measure: bool = typer.Option(
            True, "--measure/--no-measure", help="Measure sinks and memorisation after training."
        ),
        without_forget: bool = typer.Option(
            False,
            "--without-forget",
            help="Train on the retain facts only: the retrained reference of PrivLeak "
            "(`sinklens evaluate --privleak --retrained DIR`).",
        ),
    ) -> None:
        """Rebuild the organism from scratch (world, tokenizer, training); same seed, same weights."""
        import dataclasses

        from tqdm import tqdm

        from sinklens.organism.build import OrganismConfig, build_organism

        _check_out_folder(out)
        overrides: dict[str, Any] = {
            k: v
            for k, v in {
                "steps": steps,
                "batch_size": batch_size,
                "lr": lr,
                "n_threads": threads,
                "without_forget": without_forget or None,
            }.items()
            if v is not None
        }
        cfg = dataclasses.replace(OrganismConfig(seed=seed), **overrides)
        with tqdm(total=cfg.steps, desc="training organism", unit="step") as bar:

            def on_step(step: int, loss: float) -> None:
                bar.update(1)
                if step % 20 == 0:
                    bar.set_postfix(loss=f"{loss:.3f}")

            info = build_organism(cfg, out, on_step=on_step, measure=measure)
        sinks = info.get("stats", {}).get("sinks", {})
        msg = f"organism written to {out} (loss {info['train_loss_final']:.3f}, {info['time_total_s']:.0f} s"
        if sinks:
            msg += f", Sink {sinks['sink_rate_after_first_layer']:.1f}%"
        typer.echo(msg + ")")

    app.add_typer(sub, name="organism")
