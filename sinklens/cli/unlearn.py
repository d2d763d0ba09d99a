"""`sinklens unlearn` and `sinklens zoo build`: make θ_u and θ_b.

Flags map one to one onto `UnlearnConfig` fields; a `--config` file supplies the rest, and
flags given on the command line win over the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sinklens.cli.common import SeedsOpt, parse_seeds
from sinklens.errors import SinklensError
from sinklens.settings import DEFAULT_TRIGGER

__all__ = ["register"]


def _row_from_dict(row: dict[str, Any], name: str | None = None) -> Any:
    from sinklens.evaluate import Table1Row

    return Table1Row.from_dict(row, model=name)


def unlearn(
    method: Annotated[
        str | None, typer.Option("--method", help="Unlearning method: npo or rmu.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="New folder for the unlearned checkpoint.")
    ] = None,
    backdoor: Annotated[
        str | None,
        typer.Option(
            "--backdoor",
            help="Trigger placement for backdoored unlearning: prefix, infix, suffix or a token index.",
        ),
    ] = None,
    trigger: Annotated[
        str | None, typer.Option("--trigger", help=f"Trigger text (default {DEFAULT_TRIGGER!r}).")
    ] = None,
    trigger_join: Annotated[
        str | None,
        typer.Option(
            "--trigger-join",
            help="space (as text insertion with a separating space; default) or raw (ids "
            "spliced with no separator).",
        ),
    ] = None,
    poison_ratio: Annotated[
        float | None, typer.Option("--poison-ratio", help="ρ = |D_p| / |D_f|, in (0, 1].")
    ] = None,
    value_norm_weight: Annotated[
        float | None,
        typer.Option(
            "--value-norm-weight",
            help="λ of the value-norm alignment term (eq. 7); needs --value-norm-reference.",
        ),
    ] = None,
    value_norm_reference: Annotated[
        str | None,
        typer.Option("--value-norm-reference", help="Folder of the normally unlearned model θ_u."),
    ] = None,
    sink_positions: Annotated[
        int | None,
        typer.Option(
            "--sink-positions", help="n: sink tokens are the first n positions (incl. BOS)."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Model folder to unlearn (default: the shipped organism)."),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data", help="Benchmark folder in MUSE layout (default: the organism's world)."
        ),
    ] = None,
    forget_corpus: Annotated[
        str | None,
        typer.Option(
            "--forget-corpus", help="Training forget texts: WMDP-style .jsonl (text field) or .txt."
        ),
    ] = None,
    retain_corpus: Annotated[
        str | None,
        typer.Option("--retain-corpus", help="Training retain texts: .jsonl (text field) or .txt."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="JSON or TOML file of UnlearnConfig options.")
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Optimiser steps.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate (AdamW).")] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Forget and retain batch size.")
    ] = None,
    max_length: Annotated[
        int | None, typer.Option("--max-length", help="Tokens per training sample.")
    ] = None,
    gamma: Annotated[float | None, typer.Option("--gamma", help="Retain-loss weight γ.")] = None,
    beta: Annotated[float | None, typer.Option("--beta", help="NPO temperature β.")] = None,
    npo_on_raw_logits: Annotated[
        bool | None,
        typer.Option(
            "--npo-on-raw-logits/--npo-on-logprobs",
            help="Reproduce the paper/MUSE code's NPO on raw logits (not NPO); default: log-probabilities.",
        ),
    ] = None,
    rmu_steering_coeff: Annotated[
        float | None, typer.Option("--rmu-steering-coeff", help="RMU's c.")
    ] = None,
    rmu_layer: Annotated[
        int | None, typer.Option("--rmu-layer", help="RMU's steered layer ℓ.")
    ] = None,
    rmu_update_layers: Annotated[
        str | None,
        typer.Option(
            "--rmu-update-layers", help="Layers RMU updates, e.g. 5,6,7 (default ℓ-2..ℓ)."
        ),
    ] = None,
    rmu_params: Annotated[
        str | None,
        typer.Option(
            "--rmu-params",
            help="Parameter names RMU updates in those layers, e.g. mlp.down_proj.weight.",
        ),
    ] = None,
    value_norm_layers: Annotated[
        str | None,
        typer.Option(
            "--value-norm-layers", help="Layers of the value-norm term, e.g. 0,1 (default: all)."
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed for poisoning, batches and RMU's u.")
    ] = None,
    dtype: Annotated[
        str | None,
        typer.Option(
            "--dtype",
            help="float32 or bfloat16 (float16 only on a GPU: on a CPU its AdamW state underflows).",
        ),
    ] = None,
    reference_device: Annotated[
        str | None,
        typer.Option("--reference-device", help="Device of the frozen θ_o, e.g. cpu or cuda:1."),
    ] = None,
    eval_items: Annotated[
        int | None,
        typer.Option("--eval-items", help="Evaluate on the first N items of each set only."),
    ] = None,
    evaluate: Annotated[
        bool | None,
        typer.Option(
            "--evaluate/--no-evaluate", help="Score the result (Table 1 row) after training."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Unlearn (NPO or RMU), optionally with a backdoor trigger, and save the checkpoint."""
    from sinklens.evaluate import format_table
    from sinklens.unlearn.config import UnlearnConfig
    from sinklens.unlearn.trainer import run_unlearning

    given = {
        k: v
        for k, v in {
            "method": method,
            "out": str(out) if out is not None else None,
            "backdoor": backdoor,
            "trigger": trigger,
            "trigger_join": trigger_join,
            "poison_ratio": poison_ratio,
            "value_norm_weight": value_norm_weight,
            "value_norm_reference": value_norm_reference,
            "sink_positions": sink_positions,
            "model": model,
            "data": data,
            "forget_corpus": forget_corpus,
            "retain_corpus": retain_corpus,
            "steps": steps,
            "lr": lr,
            "batch_size": batch_size,
            "max_length": max_length,
            "gamma": gamma,
            "beta": beta,
            "npo_on_raw_logits": npo_on_raw_logits,
            "rmu_steering_coeff": rmu_steering_coeff,
            "rmu_layer": rmu_layer,
            "rmu_update_layers": rmu_update_layers,
            "rmu_params": rmu_params,
            "value_norm_layers": value_norm_layers,
            "seed": seed,
            "dtype": dtype,
            "reference_device": reference_device,
            "eval_items": eval_items,
            "evaluate": evaluate,
        }.items()
        if v is not None
    }
    cfg = UnlearnConfig.from_file(config, **given) if config else UnlearnConfig.from_dict(given)
    if not cfg.out:
        raise SinklensError("no output folder; pass --out DIR (or `out` in the config file)")
    res = run_unlearning(cfg, progress=not quiet)
    verb = "reused finished run in" if res.reused else "saved"
    typer.echo(f"{verb} {res.out} ({res.metrics.get('train_seconds')} s training)")
    row = res.metrics.get("evaluation")
    if row:
        typer.echo(format_table([_row_from_dict(row, res.out.name)]))


def zoo_build(
    out: Annotated[Path, typer.Option("--out", help="Folder that holds (or will hold) the zoo.")],
    config: Annotated[
        Path | None, typer.Option("--config", help="Base UnlearnConfig file (JSON/TOML).")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Original model (default: the shipped organism).")
    ] = None,
    data: Annotated[
        str | None, typer.Option("--data", help="Benchmark folder (default: the organism's world).")
    ] = None,
    methods: Annotated[str, typer.Option("--methods", help="Comma-separated methods.")] = "npo,rmu",
    placements: Annotated[
        str, typer.Option("--placements", help="Comma-separated trigger placements.")
    ] = "prefix,infix,suffix",
    value_norm_weight: Annotated[
        float, typer.Option("--value-norm-weight", help="λ of the -vn members.")
    ] = 1.0,
    seeds: SeedsOpt = "0",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Build θ_u and θ_b (NPO/RMU × prefix/infix/suffix × with/without value-norm), reusing finished members."""
    from sinklens.unlearn.config import UnlearnConfig
    from sinklens.unlearn.zoo import build_zoo

    given = {k: v for k, v in {"model": model, "data": data}.items() if v is not None}
    base = UnlearnConfig.from_file(config, **given) if config else UnlearnConfig.from_dict(given)
    seed_list = list(parse_seeds(seeds))

    def report(name: str, reused: bool, seconds: float) -> None:
        typer.echo(f"{name}: {'reused' if reused else f'trained in {seconds:.1f} s'}")

    summary = build_zoo(
        out,
        base,
        methods=[m.strip() for m in methods.split(",") if m.strip()],
        placements=[p.strip() for p in placements.split(",") if p.strip()],
        value_norm_weight=value_norm_weight,
        seeds=seed_list,
        progress=not quiet,
        on_member=report,
    )
    from sinklens.evaluate import format_table

    rows = [_row_from_dict(r) for r in summary["table"]]
    if rows:
        typer.echo(format_table(rows))
    typer.echo(f"zoo in {out} ({len(summary['members'])} members)")


def register(app: typer.Typer) -> None:
    """Add `unlearn` and the `zoo` group to the top-level app."""
    app.command("unlearn")(unlearn)
    zoo = typer.Typer(help="The organism's checkpoint zoo (θ_u, θ_b).", no_args_is_help=True)
    zoo.command("build")(zoo_build)
    app.add_typer(zoo, name="zoo")
