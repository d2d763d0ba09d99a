"""`sinklens evaluate`: score models as in the paper's Table 1 (UE, BE, UT), with the
trigger each model was trained with unless told otherwise."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from sinklens.cli.common import (
    EvalDataOpt,
    EvalPlacementOpt,
    EvalTriggerJoinOpt,
    EvalTriggerOpt,
    MaxItemsOpt,
    PromptStyleOpt,
)
from sinklens.errors import SinklensError

__all__ = ["register", "trigger_for"]


def trigger_for(
    folder: Path,
    trigger: str | None,
    placement: str | None,
    scope: str = "prompt",
    join: str | None = None,
) -> Any:
    """The `TriggerSpec` BE is scored with for `folder`: the options given, else the
    trigger, placement and join the folder was trained with (its unlearn_config.json),
    else none."""
    from sinklens.evaluate import TriggerSpec
    from sinklens.unlearn.trainer import CONFIG_FILE

    text, where = trigger, placement
    run_cfg = folder / CONFIG_FILE
    if run_cfg.is_file():
        saved = json.loads(run_cfg.read_text()).get("config", {})
        if text is None and saved.get("backdoor"):
            text = saved.get("trigger")
            where = where or saved["backdoor"]
        # Runs from before the join existed spliced raw ids.
        join = join or saved.get("trigger_join", "raw")
    if not text:
        if placement is not None:
            raise SinklensError("--placement needs a trigger; pass --trigger TEXT too")
        return None
    return TriggerSpec(text, where or "prefix", scope, join=join or "space")


def privleak_line(name: str, leak: Any) -> str:
    """One line of PrivLeak for the text output."""
    lo, hi = leak.auc_ci95
    line = f"{name}: Min-{round(100 * leak.k)}% AUC {leak.auc:.3f} [{lo:.3f}, {hi:.3f}]"
    if leak.privleak is None:
        return line + " (no --retrained reference, so no PrivLeak)"
    plo, phi = leak.privleak_ci95
    return (
        line + f" vs retrained {leak.auc_retrain:.3f}: PrivLeak {leak.privleak:+.1f}% "
        f"[{plo:+.1f}, {phi:+.1f}]"
    )


def evaluate(
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="Model folder(s) to score (repeat for several; default: the shipped organism).",
        ),
    ] = None,
    data: EvalDataOpt = None,
    trigger: EvalTriggerOpt = None,
    placement: EvalPlacementOpt = None,
    trigger_scope: Annotated[
        str,
        typer.Option(
            "--trigger-scope",
            help="prompt: placement relative to the whole prompt (as in training); question: within the question only.",
        ),
    ] = "prompt",
    trigger_join: EvalTriggerJoinOpt = None,
    max_items: MaxItemsOpt = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Prompts per generation batch.")
    ] = 16,
    prompt_style: PromptStyleOpt = "sinklens",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder to write table1.json and table1.csv into (existing ones need --overwrite).",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace table1.json/.csv in --out.")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print JSON (rows and per-item scores) instead of a table."),
    ] = False,
    with_gain: Annotated[
        bool,
        typer.Option(
            "--trigger-gain",
            help="Also report the trigger gain: how much the trigger raises the log-likelihood "
            "of the forget documents (nats per token).",
        ),
    ] = False,
    attacks: Annotated[
        list[str] | None,
        typer.Option(
            "--attack",
            help="Also score each model after an attack (repeatable): quantize, "
            "quantize:bits=8, relearn, relearn:steps=10,lr=1e-4 (see `sinklens attack`).",
        ),
    ] = None,
    privleak_on: Annotated[
        bool,
        typer.Option(
            "--privleak",
            help="Also report MUSE's PrivLeak: Min-40% membership inference on forget vs "
            "holdout documents (needs raw/holdout.txt), relative to --retrained.",
        ),
    ] = False,
    retrained: Annotated[
        Path | None,
        typer.Option(
            "--retrained",
            help="A model trained without the forget set, PrivLeak's reference "
            "(`sinklens organism build --without-forget`); without it only the AUC is shown.",
        ),
    ] = None,
) -> None:
    """Score models as in the paper's Table 1: UE (clean forget), BE (triggered forget), UT (retain)."""
    from sinklens.attacks import parse_attack, run_attack
    from sinklens.checkpoint import load_hf_model
    from sinklens.data.formats import load_benchmark
    from sinklens.evaluate import (
        evaluate_benchmark,
        evaluation_to_dict,
        format_intervals,
        format_table,
        parse_prompt_style,
        table1_row,
        trigger_gain,
        write_table,
    )
    from sinklens.evaluate.privacy import privleak
    from sinklens.provenance import to_jsonable
    from sinklens.unlearn.trainer import benchmark_path_for, default_model_path

    style = parse_prompt_style(prompt_style)
    if out is not None:
        from sinklens.outputs import check_new_files

        check_new_files([out / "table1.json", out / "table1.csv"], overwrite=overwrite)
    folders = [Path(m) for m in model] if model else [default_model_path()]
    bench_dir = Path(data) if data else benchmark_path_for(folders[0])
    bench = load_benchmark(bench_dir)
    if with_gain and not bench.forget_texts:
        raise SinklensError(
            f"--trigger-gain needs forget documents (raw/forget.txt) in {bench_dir}; add them or drop the flag"
        )
    attack_list = [parse_attack(a) for a in attacks or ()]
    if privleak_on and not bench.holdout_texts:
        raise SinklensError(
            f"--privleak needs holdout documents (raw/holdout.txt or privleak/holdout.json) "
            f"in {bench_dir}; add them or drop the flag"
        )
    reference = load_hf_model(retrained) if retrained is not None else None
    rows, details, gains = [], [], []
    for folder in folders:
        spec = trigger_for(folder, trigger, placement, trigger_scope, trigger_join)
        net, tok = load_hf_model(folder)

        def score(model: Any, tokenizer: Any, name: str, spec: Any = spec) -> Any:
            return evaluate_benchmark(
                model,
                tokenizer,
                bench,
                trigger=spec,
                model_name=name,
                max_items=max_items,
                batch_size=batch_size,
                style=style,
            )

        ev = score(net, tok, folder.name)
        rows.append(table1_row(ev))
        details.append(evaluation_to_dict(ev))
        if privleak_on:
            leak = privleak(net, tok, bench, retrained=reference)
            details[-1]["privleak"] = to_jsonable(leak.__dict__)
            gains.append(privleak_line(folder.name, leak))
        if attack_list:
            results = [run_attack(a, folder, bench, evaluate=score, before=ev) for a in attack_list]
            rows.extend(r.after for r in results)
            details[-1]["attacks"] = [r.to_dict() for r in results]
        if with_gain:
            if spec is None:
                raise SinklensError(
                    f"--trigger-gain needs a trigger for {folder}; pass --trigger TEXT"
                )
            gain = trigger_gain(
                net, tok, bench.forget_texts, spec.text, spec.placement, trigger_join=spec.join
            )
            lo, hi = gain.ci95
            details[-1]["trigger_gain"] = to_jsonable(
                {"mean": gain.mean, "ci95": [lo, hi], **asdict(gain)}
            )
            gains.append(
                f"{folder.name}: trigger gain {gain.mean:+.3f} nats/token [{lo:+.3f}, {hi:+.3f}] "
                f"on {len(gain.gain)} forget documents ({spec.text!r}@{spec.placement})"
            )
    if out is not None:
        write_table(rows, out)
    if as_json:
        typer.echo(json.dumps(details, indent=2))
    else:
        typer.echo(format_table(rows))
        typer.echo("")
        typer.echo(format_intervals(rows))
        for line in gains:
            typer.echo(line)


def register(app: typer.Typer) -> None:
    """Add `evaluate` to the top-level app."""
    app.command("evaluate")(evaluate)
