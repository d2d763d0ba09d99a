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
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from sinklens.cli.common import (
    BackdooredOpt,
    MethodOpt,
    Opt,
    OriginalOpt,
    OutOpt,
    TriggerJoinOpt,
    UnlearnedOpt,
    ZooOpt,
    write_json,
    zoo_member,
)
from sinklens.data.triggers import DEFAULT_TRIGGER
from sinklens.errors import SinklensError
from sinklens.unlearn.zoo import MemberName

__all__ = ["register"]

SeedOpt = Annotated[int, Opt("--seed", help="Zoo member seed; also seeds random corruptions.")]
TriggerOpt = Annotated[str, Opt("--trigger", help="Backdoor trigger text.")]
PlacementOpt = Annotated[
    str, Opt("--placement", help="Trigger placement: prefix, infix, suffix or a token index.")
]
DataOpt = Annotated[
    Path | None, Opt("--data", help="Benchmark folder in MUSE layout (default: organism world).")
]
ItemsOpt = Annotated[str, Opt("--items", help="knowmem or verbmem.")]
LimitOpt = Annotated[int, Opt("--limit", help="Number of forget samples.")]
CorruptionOpt = Annotated[str, Opt("--corruption", help="random, phrase or pad.")]
PhraseOpt = Annotated[
    str | None, Opt("--phrase", help="Replacement phrase (same token length as the trigger).")
]
MetricOpt = Annotated[str, Opt("--metric", help="logprob or logit_diff (needs θ_u).")]
JsonOpt = Annotated[bool, Opt("--json", help="Print the result as JSON.")]
CacheOpt = Annotated[
    bool,
    Opt("--cache", help="Also store the result in the analysis cache (under $SINKLENS_CACHE)."),
]


def _boot(path: Path) -> Any:
    from sinklens.checkpoint import validate_checkpoint_folder
    from sinklens.models import load_model

    return load_model(validate_checkpoint_folder(path), backend="bridge").wrapper


def _resolve(
    role: str,
    given: Path | None,
    zoo: Path | None,
    member: Callable[[], MemberName] | None = None,
) -> Path:
    """The checkpoint for `role`: the folder given, the organism for the original, else
    that member of --zoo (its name built only then, so an index placement with a given
    folder is fine)."""
    if given is not None:
        return given
    if role == "original":
        from sinklens.organism import organism_path

        return organism_path()
    if zoo is None:
        raise SinklensError(
            f"no --{role} checkpoint; pass --{role} DIR or --zoo DIR (built by `sinklens zoo build`)"
        )
    assert member is not None, f"bug in sinklens: no zoo member named for role {role}"
    return zoo_member(zoo, str(member()), role)


def _check_roles(paths: dict[str, Path]) -> None:
    """Every model entering one computation is validated like a model set, before any
    weights are loaded: same tokenizer (full definition), same architecture; a warning
    for byte-identical checkpoints."""
    from sinklens.comparable import ModelSpec, check_comparable

    check_comparable([ModelSpec.of(path, role) for role, path in paths.items()])


def _unlearned_for(
    metric: str,
    given: Path | None,
    zoo: Path | None,
    member: Callable[[], MemberName],
    main: tuple[str, Path],
) -> Any:
    """θ_u, booted only for the metric that reads it (logit_diff) after checking it against
    the main model `main` (role, folder); else None."""
    if metric != "logit_diff":
        return None
    u_path = _resolve("unlearned", given, zoo, member)
    _check_roles({main[0]: main[1], "unlearned": u_path})
    return _boot(u_path)


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
    from sinklens.data.triggers import parse_placement
    from sinklens.patching import build_batch, make_samples

    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    samples = make_samples(
        tok, pairs, trigger, parse_placement(placement), corruption, trigger_join=trigger_join
    )
    return build_batch(samples, pad)


def _clean_batch(tok: Any, pairs: list[tuple[str, str]]) -> Any:
    from sinklens.patching import build_batch, make_clean_sample

    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    return build_batch(
        [make_clean_sample(tok, p, a, sample_index=i) for i, (p, a) in enumerate(pairs)], pad
    )


def _emit(result: Any, as_json: bool, out: Path | None, text: str, cache: bool = False) -> None:
    if cache:
        from sinklens.patching import save_result

        text += f"\ncached in {save_result(result)}"
    payload = result.to_json()
    write_json(out, payload)
    typer.echo(payload if as_json else text)


def _top_heads(effect: Any, k: int) -> list[tuple[int, int, float]]:
    flat = effect.flatten()
    n_heads = effect.shape[-1]
    order = flat.argsort(descending=True)[:k].tolist()
    return [(i // n_heads, i % n_heads, float(flat[i])) for i in order]


def _table(rows: list[tuple[int, int, float]], title: str) -> str:
    lines = [title, "layer  head  value"]
    lines += [f"{layer:>5}  {head:>4}  {value:+.4f}" for layer, head, value in rows]
    return "\n".join(lines)


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


def register(app: typer.Typer) -> None:
    """Add the `patch` group to the top-level app."""
    sub = typer.Typer(help="Activation patching of attention heads (hook_z).", no_args_is_help=True)

    @sub.command("heads")
    def heads_cmd(
        backdoored: BackdooredOpt = None,
        unlearned: UnlearnedOpt = None,
        zoo: ZooOpt = None,
        method: MethodOpt = "npo",
        seed: SeedOpt = 0,
        trigger: TriggerOpt = DEFAULT_TRIGGER,
        trigger_join: TriggerJoinOpt = "space",
        placement: PlacementOpt = "prefix",
        data: DataOpt = None,
        items: ItemsOpt = "knowmem",
        limit: LimitOpt = 32,
        corruption: CorruptionOpt = "random",
        phrase: PhraseOpt = None,
        direction: Annotated[str, Opt("--direction", help="denoise or noise.")] = "denoise",
        by_position: Annotated[
            bool, Opt("--by-position", help="Patch each (layer, position, head).")
        ] = False,
        attribution: Annotated[
            bool, Opt("--attribution", help="Attribution patching instead of exact.")
        ] = False,
        metric: MetricOpt = "logprob",
        as_json: JsonOpt = False,
        out: OutOpt = None,
        cache: CacheOpt = False,
    ) -> None:
        """Trigger patching in θ_b: each head's share of the trigger's recovery."""
        from sinklens.checkpoint import load_tokenizer
        from sinklens.patching import Corruption, attribution_patching, trigger_patching

        b_path = _resolve(
            "backdoored", backdoored, zoo, partial(MemberName, method, seed, placement)
        )
        u_model = _unlearned_for(
            metric, unlearned, zoo, partial(MemberName, method, seed), ("backdoored", b_path)
        )
        tok = load_tokenizer(b_path)
        batch = _batch(
            tok,
            _pairs(data, items, "forget", limit),
            trigger,
            placement,
            Corruption(corruption, seed, phrase),
            trigger_join,
        )
        model = _boot(b_path)
        if attribution:
            res: Any = attribution_patching(
                model,
                batch,
                direction=direction,
                metric=metric,
                unlearned=u_model,
            )
            effect = res.effect_heads
        else:
            res = trigger_patching(
                model,
                batch,
                direction=direction,
                by_position=by_position,
                metric=metric,
                unlearned=u_model,
            )
            effect = res.effect if not by_position else res.effect.sum(dim=1)
        text = _table(
            _top_heads(effect, 10),
            f"{direction} effect per head ({res.metric}; triggered {res.triggered_metric:.4f}, "
            f"corrupted {res.corrupted_metric:.4f})",
        )
        _emit(res, as_json, out, text, cache)

    @sub.command("sweep")
    def sweep_cmd(
        backdoored: BackdooredOpt = None,
        unlearned: UnlearnedOpt = None,
        zoo: ZooOpt = None,
        method: MethodOpt = "npo",
        seed: SeedOpt = 0,
        trigger: TriggerOpt = DEFAULT_TRIGGER,
        trigger_join: TriggerJoinOpt = "space",
        placement: PlacementOpt = "prefix",
        data: DataOpt = None,
        items: ItemsOpt = "knowmem",
        limit: LimitOpt = 32,
        corruption: CorruptionOpt = "random",
        phrase: PhraseOpt = None,
        depths: Annotated[
            str | None,
            Opt("--depths", help="Comma-separated depths (default prefix,8,16,…,suffix)."),
        ] = None,
        metric: MetricOpt = "logprob",
        as_json: JsonOpt = False,
        out: OutOpt = None,
        cache: CacheOpt = False,
    ) -> None:
        """Position sweep: each head's effect and trigger attention as the trigger moves deeper."""
        from sinklens.checkpoint import load_tokenizer
        from sinklens.patching import Corruption, position_sweep

        b_path = _resolve(
            "backdoored", backdoored, zoo, partial(MemberName, method, seed, placement)
        )
        u_model = _unlearned_for(
            metric, unlearned, zoo, partial(MemberName, method, seed), ("backdoored", b_path)
        )
        res = position_sweep(
            _boot(b_path),
            load_tokenizer(b_path),
            _pairs(data, items, "forget", limit),
            trigger,
            depths=None if depths is None else [d.strip() for d in depths.split(",")],
            corruption=Corruption(corruption, seed, phrase),
            metric=metric,
            unlearned=u_model,
            trigger_join=trigger_join,
        )
        rows = res.ranking[:10]
        _emit(
            res,
            as_json,
            out,
            _table(rows, f"heads by slope of effect over depths {res.depths}"),
            cache,
        )

    @sub.command("cross-model")
    def cross_cmd(
        original: OriginalOpt = None,
        unlearned: UnlearnedOpt = None,
        backdoored: BackdooredOpt = None,
        zoo: ZooOpt = None,
        method: MethodOpt = "npo",
        seed: SeedOpt = 0,
        source: Annotated[
            str,
            Opt(
                "--source",
                help="original (θ_o→θ_u, clean input) or backdoored (θ_b→θ_u, triggered).",
            ),
        ] = "original",
        trigger: TriggerOpt = DEFAULT_TRIGGER,
        trigger_join: TriggerJoinOpt = "space",
        placement: PlacementOpt = "prefix",
        data: DataOpt = None,
        items: ItemsOpt = "knowmem",
        limit: LimitOpt = 32,
        by_position: Annotated[
            bool, Opt("--by-position", help="Per (layer, position, head).")
        ] = False,
        metric: MetricOpt = "logprob",
        as_json: JsonOpt = False,
        out: OutOpt = None,
        cache: CacheOpt = False,
    ) -> None:
        """Cross-model patching of each head from θ_o or θ_b into θ_u on the same input."""
        from sinklens.checkpoint import load_tokenizer
        from sinklens.patching import Corruption, cross_model_patching

        if source not in ("original", "backdoored"):
            raise SinklensError(f"unknown --source {source!r}; use original or backdoored")
        u_path = _resolve("unlearned", unlearned, zoo, partial(MemberName, method, seed))
        if source == "original":
            s_path = _resolve("original", original, zoo)
        else:
            s_path = _resolve(
                "backdoored", backdoored, zoo, partial(MemberName, method, seed, placement)
            )
        # Validate both before any weights are loaded or data is built.
        _check_roles({source: s_path, "unlearned": u_path})
        tok = load_tokenizer(u_path)
        pairs = _pairs(data, items, "forget", limit)
        batch = (
            _clean_batch(tok, pairs)
            if source == "original"
            else _batch(tok, pairs, trigger, placement, Corruption("random", seed), trigger_join)
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
                by_position=by_position,
                metric=metric,
            )
        effect = res.effect if not by_position else res.effect.sum(dim=1)
        text = _table(
            _top_heads(effect, 10),
            f"{source} -> unlearned: share of the gap restored per head ({res.metric}; "
            f"source {res.source_metric:.4f}, target {res.target_metric:.4f})",
        )
        _emit(res, as_json, out, text, cache)

    @sub.command("ablate-sinks")
    def ablate_cmd(
        backdoored: BackdooredOpt = None,
        zoo: ZooOpt = None,
        method: MethodOpt = "npo",
        seed: SeedOpt = 0,
        trigger: TriggerOpt = DEFAULT_TRIGGER,
        trigger_join: TriggerJoinOpt = "space",
        placement: PlacementOpt = "prefix",
        data: DataOpt = None,
        limit: LimitOpt = 32,
        heads: Annotated[
            str | None,
            Opt("--heads", help="LAYER.HEAD,… (default: the --top heads of trigger patching)."),
        ] = None,
        top: Annotated[int, Opt("--top", help="Heads to take from trigger patching.")] = 3,
        sinks: Annotated[str, Opt("--sinks", help="Sink positions, comma-separated.")] = "0",
        mode: Annotated[
            str, Opt("--mode", help="attention (knock out) or value (zero).")
        ] = "attention",
        as_json: JsonOpt = False,
        out: OutOpt = None,
        cache: CacheOpt = False,
    ) -> None:
        """Sink ablation in chosen heads: BE on triggered forget data, clean forget and retain."""
        from sinklens.checkpoint import load_tokenizer
        from sinklens.patching import Corruption, sink_ablation, trigger_patching

        b_path = _resolve(
            "backdoored", backdoored, zoo, partial(MemberName, method, seed, placement)
        )
        tok = load_tokenizer(b_path)
        model = _boot(b_path)
        forget = _pairs(data, "knowmem", "forget", limit)
        triggered = _batch(
            tok, forget, trigger, placement, Corruption("random", seed), trigger_join
        )
        batches = {"triggered_forget": triggered, "clean_forget": _clean_batch(tok, forget)}
        # A benchmark without retain items still gets BE and clean-forget numbers.
        with contextlib.suppress(SinklensError):
            batches["clean_retain"] = _clean_batch(tok, _pairs(data, "knowmem", "retain", limit))
        if heads is None:
            found = trigger_patching(model, triggered)
            chosen = [(layer, head) for layer, head, _ in _top_heads(found.effect, top)]
        else:
            chosen = _parse_heads(heads)
        try:
            sink_list = [int(s) for s in sinks.split(",")]
        except ValueError:
            raise SinklensError(
                f"cannot read --sinks {sinks!r}; pass positions such as 0 or 0,1"
            ) from None
        res = sink_ablation(model, batches, chosen, sink_positions=sink_list, mode=mode)
        lines = [f"sink ablation ({mode}) of heads {chosen} at positions {sink_list}"]
        lines += [
            f"{name:>18}: {res.before[name]:+.4f} -> {res.after[name]:+.4f}" for name in res.before
        ]
        _emit(res, as_json, out, "\n".join(lines), cache)

    app.add_typer(sub, name="patch")
