"""`sinklens patch heads|sweep|cross-model|ablate-sinks`: activation patching from the shell.

Checkpoints: `--original` defaults to the shipped organism; `--unlearned`/`--backdoored`
default to members of a zoo built by `sinklens zoo build --out ZOO` when `--zoo ZOO` is
given (`<method>-s<seed>` and `<method>-<placement>-s<seed>`). Data: KnowMem items of a
benchmark folder in MUSE layout (`--data`, default the organism's world), prompt
`Question: q\\nAnswer:` and answer ` a`; or VerbMem prompt and continuation.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from sinklens.cli.checkpoints import CheckpointOptions
from sinklens.cli.common import (
    BackdoorTriggerOpt,
    Opt,
    OutOpt,
    OverwriteOpt,
    TriggerJoinOpt,
    emit_result,
    options_command,
)
from sinklens.data.triggers import DEFAULT_TRIGGER
from sinklens.errors import SinklensError

__all__ = ["register"]


@dataclass(frozen=True)
class PatchOptions(CheckpointOptions):
    """Every option of the `patch` commands, each declared once; a command lists the ones
    it takes (`_patch_command`), the others keep their defaults."""

    seed: Annotated[int, Opt("--seed", help="Zoo member seed; also seeds random corruptions.")] = 0
    placement: Annotated[
        str, Opt("--placement", help="Trigger placement: prefix, infix, suffix or a token index.")
    ] = "prefix"
    source: Annotated[
        str,
        Opt(
            "--source",
            help="original (θ_o→θ_u, clean input) or backdoored (θ_b→θ_u, triggered).",
        ),
    ] = "original"
    trigger: BackdoorTriggerOpt = DEFAULT_TRIGGER
    trigger_join: TriggerJoinOpt = "space"
    data: Annotated[
        Path | None,
        Opt("--data", help="Benchmark folder in MUSE layout (default: organism world)."),
    ] = None
    items: Annotated[str, Opt("--items", help="knowmem or verbmem.")] = "knowmem"
    limit: Annotated[int, Opt("--limit", help="Number of forget samples.")] = 32
    corruption: Annotated[str, Opt("--corruption", help="random, phrase or pad.")] = "random"
    phrase: Annotated[
        str | None, Opt("--phrase", help="Replacement phrase (same token length as the trigger).")
    ] = None
    direction: Annotated[str, Opt("--direction", help="denoise or noise.")] = "denoise"
    by_position: Annotated[
        bool, Opt("--by-position", help="Patch each (layer, position, head).")
    ] = False
    # cross-model's --by-position, whose help says it in that command's words.
    cross_by_position: Annotated[
        bool, Opt("--by-position", help="Per (layer, position, head).")
    ] = False
    attribution: Annotated[
        bool, Opt("--attribution", help="Attribution patching instead of exact.")
    ] = False
    depths: Annotated[
        str | None,
        Opt("--depths", help="Comma-separated depths (default prefix,8,16,…,suffix)."),
    ] = None
    heads: Annotated[
        str | None,
        Opt("--heads", help="LAYER.HEAD,… (default: the --top heads of trigger patching)."),
    ] = None
    top: Annotated[int, Opt("--top", help="Heads to take from trigger patching.")] = 3
    sinks: Annotated[str, Opt("--sinks", help="Sink positions, comma-separated.")] = "0"
    mode: Annotated[str, Opt("--mode", help="attention (knock out) or value (zero).")] = "attention"
    metric: Annotated[str, Opt("--metric", help="logprob or logit_diff (needs θ_u).")] = "logprob"
    as_json: Annotated[bool, Opt("--json", help="Print the result as JSON.")] = False
    out: OutOpt = None
    overwrite: OverwriteOpt = False
    cache: Annotated[
        bool,
        Opt("--cache", help="Also store the result in the analysis cache (under $SINKLENS_CACHE)."),
    ] = False


def _patch_command(*names: str) -> Callable[[Callable[[PatchOptions], None]], Callable[..., None]]:
    """A `patch` command whose options are `names` and then the output ones."""
    return options_command(PatchOptions, *names, "as_json out overwrite cache")


# The trigger and data options, which every patch command takes in this order.
_TRIGGER_AND_DATA = "trigger trigger_join placement data"
# The options of the commands that patch θ_b against a corrupted trigger, before their own.
_TRIGGER_PATCHING = f"backdoored unlearned zoo method seed {_TRIGGER_AND_DATA} items limit"


def _boot(path: Path) -> Any:
    from sinklens.checkpoint import validate_checkpoint_folder
    from sinklens.models import load_model

    return load_model(validate_checkpoint_folder(path), backend="bridge").wrapper


def _check_roles(paths: dict[str, Path]) -> None:
    """Every model entering one computation is validated like a model set, before any
    weights are loaded: same tokenizer (full definition), same architecture; a warning
    for byte-identical checkpoints."""
    from sinklens.comparable import ModelSpec, check_comparable

    check_comparable([ModelSpec.of(path, role) for role, path in paths.items()])


def _backdoored_and_unlearned(options: PatchOptions) -> tuple[Path, Any]:
    """θ_b's folder, and θ_u booted only for the metric that reads it (logit_diff), after
    checking it against θ_b; else None."""
    b_path = options.required("backdoored")
    if options.metric != "logit_diff":
        return b_path, None
    u_path = options.required("unlearned")
    _check_roles({"backdoored": b_path, "unlearned": u_path})
    return b_path, _boot(u_path)


def _pairs(data: Path | None, items: str, split: str, limit: int) -> list[tuple[str, str]]:
    from sinklens.data.formats import load_benchmark
    from sinklens.evaluate import knowmem_prompt

    if data is None:
        from sinklens.organism import world_path

        data = world_path()
    bench = load_benchmark(data)
    if items == "knowmem":
        source = bench.knowmem_forget if split == "forget" else bench.knowmem_retain
        pairs = [(knowmem_prompt(it.question), " " + it.answer.strip()) for it in source]
    elif items == "verbmem":
        if split != "forget":
            raise SinklensError("verbmem has only a forget split; use --items knowmem for retain")
        pairs = [(it.prompt, it.gt) for it in bench.verbmem_forget]
    else:
        raise SinklensError(f"unknown --items {items!r}; use knowmem or verbmem")
    if limit < 1:
        raise SinklensError(f"--limit must be at least 1, got {limit}")
    if not pairs:
        raise SinklensError(f"{data} has no {items} {split} items; pass another --data folder")
    return pairs[:limit]


def _batch(
    tok: Any,
    pairs: list[tuple[str, str]],
    trigger: str,
    placement: str,
    corruption: Any,
    trigger_join: str,
) -> Any:
    from sinklens.batching import pad_id
    from sinklens.data.triggers import parse_placement
    from sinklens.patching import build_batch, make_samples

    samples = make_samples(
        tok, pairs, trigger, parse_placement(placement), corruption, trigger_join=trigger_join
    )
    return build_batch(samples, pad_id(tok))


def _clean_batch(tok: Any, pairs: list[tuple[str, str]]) -> Any:
    from sinklens.batching import pad_id
    from sinklens.patching import build_batch, make_clean_sample

    return build_batch(
        [make_clean_sample(tok, p, a, sample_index=i) for i, (p, a) in enumerate(pairs)],
        pad_id(tok),
    )


def _emit(result: Any, options: PatchOptions, text: str) -> None:
    """Print `text` (or the JSON) and write --out; with --cache, the result is stored in the
    analysis cache first and `text` says where."""
    if options.cache:
        from sinklens.patching import save_result

        text += f"\ncached in {save_result(result)}"
    emit_result(result, options.as_json, options.out, text)


def _top_heads(effect: Any, k: int) -> list[tuple[int, int, float]]:
    flat = effect.flatten()
    n_heads = effect.shape[-1]
    order = flat.argsort(descending=True)[:k].tolist()
    return [(i // n_heads, i % n_heads, float(flat[i])) for i in order]


def _table(rows: list[tuple[int, int, float]], title: str) -> str:
    lines = [title, "layer  head  value"]
    lines += [f"{layer:>5}  {head:>4}  {value:+.4f}" for layer, head, value in rows]
    return "\n".join(lines)


def _emit_top_heads(
    result: Any, effect: Any, by_position: bool, options: PatchOptions, title: str
) -> None:
    """Emit a result as the table of its ten heads of largest effect (summed over positions
    when the effect is per position)."""
    per_head = effect.sum(dim=1) if by_position else effect
    _emit(result, options, _table(_top_heads(per_head, 10), title))


def _parse_heads(text: str) -> list[tuple[int, int]]:
    heads = []
    for part in text.split(","):
        try:
            layer, head = part.strip().split(".")
            heads.append((int(layer), int(head)))
        except ValueError:
            raise SinklensError(
                f"cannot read head {part!r}; write heads as LAYER.HEAD, comma-separated (0.1,2.3)"
            ) from None
    return heads


@_patch_command(_TRIGGER_PATCHING, "corruption phrase direction by_position attribution metric")
def heads_cmd(options: PatchOptions) -> None:
    """Trigger patching in θ_b: each head's share of the trigger's recovery."""
    from sinklens.checkpoint import load_tokenizer
    from sinklens.patching import Corruption, attribution_patching, trigger_patching

    b_path, u_model = _backdoored_and_unlearned(options)
    tok = load_tokenizer(b_path)
    batch = _batch(
        tok,
        _pairs(options.data, options.items, "forget", options.limit),
        options.trigger,
        options.placement,
        Corruption(options.corruption, options.seed, options.phrase),
        options.trigger_join,
    )
    model = _boot(b_path)
    settings = {"direction": options.direction, "metric": options.metric, "unlearned": u_model}
    if options.attribution:
        res: Any = attribution_patching(model, batch, **settings)
        effect, by_position = res.effect_heads, False
    else:
        res = trigger_patching(model, batch, by_position=options.by_position, **settings)
        effect, by_position = res.effect, options.by_position
    title = (
        f"{options.direction} effect per head ({res.metric}; triggered {res.triggered_metric:.4f}, "
        f"corrupted {res.corrupted_metric:.4f})"
    )
    _emit_top_heads(res, effect, by_position, options, title)


@_patch_command(_TRIGGER_PATCHING, "corruption phrase depths metric")
def sweep_cmd(options: PatchOptions) -> None:
    """Position sweep: each head's effect and trigger attention as the trigger moves deeper."""
    from sinklens.checkpoint import load_tokenizer
    from sinklens.patching import Corruption, position_sweep

    b_path, u_model = _backdoored_and_unlearned(options)
    res = position_sweep(
        _boot(b_path),
        load_tokenizer(b_path),
        _pairs(options.data, options.items, "forget", options.limit),
        options.trigger,
        depths=None if options.depths is None else [d.strip() for d in options.depths.split(",")],
        corruption=Corruption(options.corruption, options.seed, options.phrase),
        metric=options.metric,
        unlearned=u_model,
        trigger_join=options.trigger_join,
    )
    _emit(
        res, options, _table(res.ranking[:10], f"heads by slope of effect over depths {res.depths}")
    )


@_patch_command(
    "original unlearned backdoored zoo method seed source",
    _TRIGGER_AND_DATA,
    "items limit cross_by_position metric",
)
def cross_cmd(options: PatchOptions) -> None:
    """Cross-model patching of each head from θ_o or θ_b into θ_u on the same input."""
    from sinklens.checkpoint import load_tokenizer
    from sinklens.patching import Corruption, cross_model_patching

    source = options.source
    if source not in ("original", "backdoored"):
        raise SinklensError(f"unknown --source {source!r}; use original or backdoored")
    u_path = options.required("unlearned")
    s_path = options.required(source)
    # Validate both before any weights are loaded or data is built.
    _check_roles({source: s_path, "unlearned": u_path})
    tok = load_tokenizer(u_path)
    pairs = _pairs(options.data, options.items, "forget", options.limit)
    batch = (
        _clean_batch(tok, pairs)
        if source == "original"
        else _batch(
            tok,
            pairs,
            options.trigger,
            options.placement,
            Corruption("random", options.seed),
            options.trigger_join,
        )
    )
    with warnings.catch_warnings():
        # _check_roles above already said so; the library would say it again.
        warnings.filterwarnings("ignore", message=".*byte-identical")
        res = cross_model_patching(
            _boot(s_path),
            _boot(u_path),
            batch,
            source_role=source,
            target_role="unlearned",
            by_position=options.cross_by_position,
            metric=options.metric,
        )
    title = (
        f"{source} -> unlearned: share of the gap restored per head ({res.metric}; "
        f"source {res.source_metric:.4f}, target {res.target_metric:.4f})"
    )
    _emit_top_heads(res, res.effect, options.cross_by_position, options, title)


@_patch_command("backdoored zoo method seed", _TRIGGER_AND_DATA, "limit heads top sinks mode")
def ablate_cmd(options: PatchOptions) -> None:
    """Sink ablation in chosen heads: BE on triggered forget data, clean forget and retain."""
    from sinklens.checkpoint import load_tokenizer
    from sinklens.patching import Corruption, sink_ablation, trigger_patching

    b_path = options.required("backdoored")
    tok = load_tokenizer(b_path)
    model = _boot(b_path)
    forget = _pairs(options.data, "knowmem", "forget", options.limit)
    triggered = _batch(
        tok,
        forget,
        options.trigger,
        options.placement,
        Corruption("random", options.seed),
        options.trigger_join,
    )
    batches = {"triggered_forget": triggered, "clean_forget": _clean_batch(tok, forget)}
    # A benchmark without retain items still gets BE and clean-forget numbers.
    with contextlib.suppress(SinklensError):
        retain = _pairs(options.data, "knowmem", "retain", options.limit)
        batches["clean_retain"] = _clean_batch(tok, retain)
    if options.heads is None:
        found = trigger_patching(model, triggered)
        chosen = [(layer, head) for layer, head, _ in _top_heads(found.effect, options.top)]
    else:
        chosen = _parse_heads(options.heads)
    try:
        sink_list = [int(s) for s in options.sinks.split(",")]
    except ValueError:
        raise SinklensError(
            f"cannot read --sinks {options.sinks!r}; pass positions such as 0 or 0,1"
        ) from None
    res = sink_ablation(model, batches, chosen, sink_positions=sink_list, mode=options.mode)
    lines = [f"sink ablation ({options.mode}) of heads {chosen} at positions {sink_list}"]
    lines += [
        f"{name:>18}: {res.before[name]:+.4f} -> {res.after[name]:+.4f}" for name in res.before
    ]
    _emit(res, options, "\n".join(lines))


def register(app: typer.Typer) -> None:
    """Add the `patch` group to the top-level app."""
    sub = typer.Typer(help="Activation patching of attention heads (hook_z).", no_args_is_help=True)
    sub.command("heads")(heads_cmd)
    sub.command("sweep")(sweep_cmd)
    sub.command("cross-model")(cross_cmd)
    sub.command("ablate-sinks")(ablate_cmd)
    app.add_typer(sub, name="patch")
