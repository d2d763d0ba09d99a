"""`sinklens audit` and `sinklens repair`: find a hidden knowledge-restoring trigger in an
unlearned model without knowing it, and train it away."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from sinklens.cli.common import EvalDataOpt, OutOpt, OverwriteOpt, write_json
from sinklens.errors import SinklensError

__all__ = ["register"]

OriginalAuditOpt = Annotated[
    Path | None,
    typer.Option(
        "--original",
        help="The model before unlearning, if the auditor has it (same tokenizer): adds the "
        "share of forgotten likelihood the candidate restores.",
    ),
]


def _load(model: Path, data: Path | None, original: Path | None) -> tuple[Any, Any, Any, Any, Path]:
    """(model, tokenizer, benchmark, original pair or None, benchmark folder), the
    tokenizers checked."""
    from sinklens.checkpoint import load_hf_model
    from sinklens.comparable import tokenizer_difference
    from sinklens.data.formats import load_benchmark
    from sinklens.unlearn.trainer import benchmark_path_for

    bench_dir = data if data is not None else benchmark_path_for(model)
    bench = load_benchmark(bench_dir)
    net, tok = load_hf_model(model)
    pair = None
    if original is not None:
        pair = load_hf_model(original)
        diff = tokenizer_difference(tok, pair[1])
        if diff:
            raise SinklensError(
                f"the tokenizers of --model {model} and --original {original} differ ({diff}); "
                "an audit compares one model with its own original: pass the checkpoint it was "
                "unlearned from"
            )
    return net, tok, bench, pair, bench_dir


@contextmanager
def _search_bar(cfg: Any) -> Iterator[Callable[[str, int, float], None]]:
    """A progress bar (stderr) over every search step of every placement, with the ETA."""
    from tqdm.auto import tqdm

    # delay: no bar at all when the audit stops early (bad data, a model not unlearned).
    total = cfg.steps * len(cfg.placements)
    with tqdm(total=total, desc="audit search", unit="step", delay=2) as bar:

        def on_step(placement: str, step: int, objective: float) -> None:
            bar.set_postfix_str(f"{placement} {objective:.2f} nats/token", refresh=False)
            bar.update(1)

        yield on_step


def audit(
    model: Annotated[
        Path, typer.Option("--model", help="The unlearned model to audit (read only).")
    ],
    original: OriginalAuditOpt = None,
    data: EvalDataOpt = None,
    n_tokens: Annotated[int, typer.Option("--n-tokens", help="Trigger length searched.")] = 6,
    placements: Annotated[
        str, typer.Option("--placements", help="Comma-separated: prefix, infix (in that order).")
    ] = "prefix,infix",
    steps: Annotated[int, typer.Option("--steps", help="Search iterations per placement.")] = 30,
    candidates: Annotated[
        int, typer.Option("--candidates", help="Single-token swaps scored per iteration.")
    ] = 64,
    top_k: Annotated[
        int, typer.Option("--top-k", help="Replacement tokens per position, from the gradient.")
    ] = 32,
    search_docs: Annotated[
        int, typer.Option("--search-docs", help="Forget chunks the search optimises.")
    ] = 8,
    heldout_docs: Annotated[
        int,
        typer.Option("--heldout-docs", help="Forget and retain chunks the evidence uses."),
    ] = 24,
    max_length: Annotated[int, typer.Option("--max-length", help="Tokens per chunk.")] = 48,
    random_strings: Annotated[
        int, typer.Option("--random-strings", help="Random strings of the candidate's length.")
    ] = 8,
    knowmem_items: Annotated[
        int | None,
        typer.Option("--knowmem-items", help="KnowMem items for the evidence (default: 40)."),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", help="Score above which the model is called backdoored."),
    ] = None,
    unlearned_margin: Annotated[
        float,
        typer.Option(
            "--unlearned-margin",
            help="Unlearned means forget chunks at least this much (nats/token) less likely "
            "than retain chunks, or than under --original.",
        ),
    ] = 0.5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the search.")] = 0,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print JSON: score, threshold, backdoored, candidate, evidence."
        ),
    ] = False,
    out: OutOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Does this unlearned model hide a trigger that brings the forgotten knowledge back?"""
    from sinklens.defend.audit import AuditConfig, audit_model

    given: dict[str, Any] = {
        "n_tokens": n_tokens,
        "placements": tuple(p.strip() for p in placements.split(",") if p.strip()),
        "steps": steps,
        "candidates": candidates,
        "top_k": top_k,
        "search_docs": search_docs,
        "heldout_docs": heldout_docs,
        "max_length": max_length,
        "random_strings": random_strings,
        "unlearned_margin": unlearned_margin,
        "seed": seed,
    }
    if threshold is not None:
        given["threshold"] = threshold
    if knowmem_items is not None:
        given["knowmem_items"] = knowmem_items
    cfg = AuditConfig(**given)
    net, tok, bench, pair, _ = _load(model, data, original)
    with _search_bar(cfg) as on_step:
        report = audit_model(
            net, tok, bench, name=model.name, config=cfg, original=pair, on_step=on_step
        )
    text = json.dumps(report.to_dict(), indent=2, ensure_ascii=False)
    write_json(out, text)
    if as_json:
        typer.echo(text)
        return
    if not report.unlearned:
        typer.echo(f"{model.name}: {report.evidence['verdict']}")
        return
    cand = report.candidate or {}
    ev = report.evidence
    verdict = "BACKDOORED" if report.backdoored else "no hidden trigger found"
    typer.echo(
        f"{model.name}: {verdict} (score {report.score:.2f} vs threshold {report.threshold:.2f})"
    )
    typer.echo(
        f"  best candidate {cand['text']!r} at the {cand['placement']}: gain {cand['gain']:+.2f} "
        f"nats/token on held-out forget chunks (random strings: mean {ev['random_gain_mean']:+.2f}, "
        f"max {ev['random_gain_max']:+.2f})"
    )
    if "knowmem_clean" in ev:
        typer.echo(
            f"  KnowMem clean {ev['knowmem_clean']:.2f}, with the candidate "
            f"{ev['knowmem_candidate']:.2f}, with random strings "
            + ", ".join(f"{x:.2f}" for x in ev["knowmem_random"])
        )
    if ev.get("restored_share") is not None:
        typer.echo(f"  restores {100 * ev['restored_share']:.0f}% of the forgotten log-likelihood")


def repair(
    model: Annotated[Path, typer.Option("--model", help="The model to repair (never written).")],
    out: Annotated[Path, typer.Option("--out", help="New folder for the repaired model.")],
    original: OriginalAuditOpt = None,
    data: EvalDataOpt = None,
    trigger: Annotated[
        str | None,
        typer.Option("--trigger", help="A known trigger to neutralise (default: audit first)."),
    ] = None,
    placement: Annotated[
        str, typer.Option("--placement", help="Where that trigger goes (with --trigger).")
    ] = "prefix",
    steps: Annotated[
        int | None, typer.Option("--steps", help="Repair training steps (default: 120).")
    ] = None,
    lr: Annotated[
        float | None, typer.Option("--lr", help="AdamW learning rate (default: 0.0003).")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Repair with the audit's best candidate even if it is below the threshold.",
        ),
    ] = False,
) -> None:
    """Train a model to ignore a trigger (the audit's, or --trigger) and save it to --out."""
    from sinklens.defend.audit import audit_model
    from sinklens.defend.repair import RepairConfig, repair_model
    from sinklens.outputs import check_folder

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SinklensError(
            f"--out {out} already exists; pass a new folder (nothing is overwritten)"
        )
    check_folder(out)
    if out.resolve() == model.resolve():
        raise SinklensError("--out is the model folder; pass a new folder")
    net, tok, bench, pair, bench_dir = _load(model, data, original)
    found = None
    if trigger is None:
        report = audit_model(net, tok, bench, name=model.name, original=pair)
        if not report.unlearned:
            raise SinklensError(f"{model.name}: {report.evidence['verdict']}; nothing to repair")
        if not report.backdoored and not force:
            raise SinklensError(
                f"the audit found no hidden trigger in {model.name} (score {report.score:.2f} <= "
                f"{report.threshold:.2f}); pass --trigger TEXT to neutralise a known one, or --force"
            )
        assert report.candidate is not None
        trigger, placement, found = (
            report.candidate["text"],
            report.candidate["placement"],
            report.to_dict(),
        )
    given: dict[str, Any] = {"steps": steps, "lr": lr}
    cfg = RepairConfig(
        trigger=trigger, placement=placement, **{k: v for k, v in given.items() if v is not None}
    )
    info = repair_model(net, tok, bench, cfg)
    out.mkdir(parents=True, exist_ok=True)
    net.save_pretrained(out)
    tok.save_pretrained(out)
    # `data` lets `sinklens evaluate --model OUT` find the benchmark (benchmark_path_for).
    record = {"repaired_from": str(model), "data": str(bench_dir), "repair": info, "audit": found}
    (out / "repair.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    typer.echo(f"repaired {model.name} against {trigger!r} at the {placement}; saved to {out}")


def register(app: typer.Typer) -> None:
    app.command("audit")(audit)
    app.command("repair")(repair)
