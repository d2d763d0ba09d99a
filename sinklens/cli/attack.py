"""`sinklens attack NAME`: score a model before and after a robustness attack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from sinklens.cli.common import (
    EvalDataOpt,
    EvalPlacementOpt,
    EvalTriggerJoinOpt,
    EvalTriggerOpt,
    MaxItemsOpt,
    OutOpt,
    OverwriteOpt,
    PromptStyleOpt,
    write_json,
)

__all__ = ["register"]


def attack(
    name: Annotated[str, typer.Argument(help="quantize or relearn.")],
    model: Annotated[Path, typer.Option("--model", help="Model folder to attack (never written).")],
    data: EvalDataOpt = None,
    trigger: EvalTriggerOpt = None,
    placement: EvalPlacementOpt = None,
    trigger_join: EvalTriggerJoinOpt = None,
    prompt_style: PromptStyleOpt = "sinklens",
    bits: Annotated[
        int | None, typer.Option("--bits", help="quantize: 4 (GGUF Q4_0, default) or 8 (Q8_0).")
    ] = None,
    steps: Annotated[
        int | None, typer.Option("--steps", help="relearn: training steps (default 20).")
    ] = None,
    lr: Annotated[
        float | None, typer.Option("--lr", help="relearn: AdamW learning rate (default 1e-4).")
    ] = None,
    docs: Annotated[
        int | None,
        typer.Option("--docs", help="relearn: forget documents trained on (default: a quarter)."),
    ] = None,
    max_items: MaxItemsOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON: before, after (ue, be, ut, rows), change.")
    ] = False,
    out: OutOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Score a model (UE, BE, UT) before and after an attack that might undo its unlearning."""
    from sinklens.attacks import parse_attack, run_attack
    from sinklens.cli.evaluate import trigger_for
    from sinklens.data.formats import load_benchmark
    from sinklens.evaluate import evaluate_benchmark, format_table, parse_prompt_style
    from sinklens.unlearn.trainer import benchmark_path_for

    chosen = parse_attack(name, bits=bits, steps=steps, lr=lr, docs=docs)
    style = parse_prompt_style(prompt_style)
    bench = load_benchmark(data if data is not None else benchmark_path_for(model))
    spec = trigger_for(model, trigger, placement, join=trigger_join)

    def score(net: Any, tok: Any, label: str) -> Any:
        return evaluate_benchmark(
            net, tok, bench, trigger=spec, model_name=label, max_items=max_items, style=style
        )

    result = run_attack(chosen, model, bench, evaluate=score)
    text = json.dumps(result.to_dict(), indent=2)
    write_json(out, text)
    if as_json:
        typer.echo(text)
        return
    typer.echo(format_table([result.before, result.after]))
    for key, change in result.effect.items():
        lo, hi = change["ci95"]
        typer.echo(
            f"{key.upper()} KnowMem change {change['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}] "
            "(95% paired bootstrap)"
        )
    typer.echo(f"attack took {result.seconds:.1f} s")


def register(app: typer.Typer) -> None:
    app.command("attack")(attack)
