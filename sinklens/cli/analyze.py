"""`sinklens analyze sinks|attention-diff|logits|value-norms`: the paper's Sections 4–5.

Checkpoints come from --original/--unlearned/--backdoored (and --model NAME=DIR for more);
without them, θ_o is the shipped organism and θ_u/θ_b are members of a zoo built by
`sinklens zoo build --out ZOO` when --zoo ZOO is given (`<method>-s<seed>`,
`<method>-<placement>-s<seed>`). Data defaults to the world shipped with θ_o. Each command
prints a short summary, or the full result with provenance as JSON (--json, or --out FILE).
"""

from __future__ import annotations

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
    OverwriteOpt,
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

ExtraOpt = Annotated[
    list[str] | None, Opt("--model", help="Extra checkpoint as NAME=DIR (repeatable).")
]
SeedOpt = Annotated[int, Opt("--seed", min=0, help="Zoo member seed (and bootstrap seed).")]
DataOpt = Annotated[
    Path | None, Opt("--data", help="Benchmark folder in MUSE layout (default: θ_o's world).")
]
LayerOpt = Annotated[list[int] | None, Opt("--layer", help="Layer index (repeatable; -1 = last).")]
PlacementOpt = Annotated[
    str, Opt("--placement", help="Trigger placement: prefix, infix, suffix or an index.")
]
TriggerOpt = Annotated[str, Opt("--trigger", help="Trigger text.")]
AlignOpt = Annotated[
    str, Opt("--alignment", help="absolute (paper Fig. 3/4) or aligned (same tokens).")
]
WindowOpt = Annotated[int | None, Opt("--window", min=1, help="T: the first T positions.")]
BackendOpt = Annotated[str, Opt("--backend", help="bridge (TransformerLens), nnsight or hf.")]
DtypeOpt = Annotated[str, Opt("--dtype", help="float32 or bfloat16.")]
DeviceOpt = Annotated[str, Opt("--device", help="cpu, cuda, cuda:1, ...")]
DeviceMapOpt = Annotated[
    str | None, Opt("--device-map", help="e.g. auto: spread a 7B model over GPUs.")
]
BatchOpt = Annotated[int, Opt("--batch-size", min=1, help="Samples per forward pass.")]
MaxItemsOpt = Annotated[int | None, Opt("--max-items", min=1, help="Use only the first N texts.")]
MaxLenOpt = Annotated[
    int | None, Opt("--max-length", min=2, help="Tokens per sample (trigger included).")
]
ShortOpt = Annotated[
    bool, Opt("--skip-short/--error-short", help="Skip samples shorter than trigger + T.")
]
CacheOpt = Annotated[
    Path | None, Opt("--cache-dir", help="Capture cache (default: ~/.cache/sinklens/capture).")
]
NoCacheOpt = Annotated[bool, Opt("--no-cache", help="Do not read or write the capture cache.")]
JsonOpt = Annotated[bool, Opt("--json", help="Print the full result (with provenance) as JSON.")]


def _resolve_paths(
    original: Path | None,
    unlearned: Path | None,
    backdoored: Path | None,
    extra: list[str] | None,
    zoo: Path | None,
    method: str,
    seed: int,
    placement: str,
) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    if original is not None:
        paths["original"] = original
    else:
        from sinklens.organism import organism_path

        try:
            paths["original"] = organism_path()
        except SinklensError:
            if zoo is None and unlearned is None and backdoored is None and not extra:
                raise SinklensError(
                    "no checkpoints given and the shipped organism is missing; "
                    "pass --original/--unlearned/--backdoored DIR"
                ) from None
    for role, given, member in (
        ("unlearned", unlearned, partial(MemberName, method, seed)),
        ("backdoored", backdoored, partial(MemberName, method, seed, placement)),
    ):
        if given is not None:
            paths[role] = given
        elif zoo is not None:
            paths[role] = zoo_member(zoo, str(member()), role)
    for item in extra or []:
        name, sep, folder = item.partition("=")
        if not sep or not name.strip() or not folder.strip():
            raise SinklensError(
                f"--model {item!r} is not NAME=DIR; pass e.g. --model npo-vn=zoo/npo-prefix-vn-s0"
            )
        if name in paths:
            raise SinklensError(f"--model name {name!r} is used twice; pick distinct names")
        paths[name.strip()] = Path(folder.strip())
    return paths


def _benchmark(data: Path | None, paths: dict[str, Path]) -> Any:
    from sinklens.data.formats import load_benchmark
    from sinklens.organism import world_path

    if data is not None:
        return load_benchmark(data)
    for folder in paths.values():
        try:
            return load_benchmark(world_path(folder))
        except SinklensError:
            continue
    raise SinklensError(
        "no benchmark data found next to the checkpoints; pass --data DIR (MUSE layout)"
    )


def _cut(texts: Any, max_items: int | None) -> list[str]:
    items = list(texts)
    return items if max_items is None else items[:max_items]


def _emit(result: Any, as_json: bool, out: Path | None, summary: list[str]) -> None:
    text = result.to_json()
    write_json(out, text)
    if as_json:
        typer.echo(text)
    else:
        for line in summary:
            typer.echo(line)
        if out is not None:
            typer.echo(f"wrote {out}")


def _prefix_note(result: Any) -> list[str]:
    """Where the prefix trigger went, when it is one (it depends on whether the tokenizer
    adds BOS)."""
    where = result.provenance.settings.get("prefix_at")
    return [f"  prefix trigger at {where}"] if where else []


def _fmt(x: float) -> str:
    return "nan" if x != x else f"{x:+.4f}"


def register(app: typer.Typer) -> None:
    """Add the `analyze` sub-app to the root `sinklens` app."""
    sub = typer.Typer(
        name="analyze",
        help="Attention sinks, attention differences, logit curves and value norms.",
        no_args_is_help=True,
    )

    def load(
        original: Path | None,
        unlearned: Path | None,
        backdoored: Path | None,
        extra: list[str] | None,
        zoo: Path | None,
        method: str,
        seed: int,
        placement: str,
        backend: str,
        dtype: str,
        device: str,
        device_map: str | None,
        data: Path | None,
    ) -> tuple[Any, Any]:
        """The models and the benchmark; the benchmark is read first (a bad --data fails
        before any weights load), and its forget texts let validation warn when the
        original looks unlearned next to the others."""
        from sinklens.models import load_models

        paths = _resolve_paths(original, unlearned, backdoored, extra, zoo, method, seed, placement)
        bench = _benchmark(data, paths)
        models = load_models(
            paths,
            backend=backend,
            dtype=dtype,
            device=device,
            device_map=device_map,
            forget_texts=bench.forget_texts if len(paths) > 1 else (),
        )
        return models, bench

    def cache_dir(given: Path | None, no_cache: bool) -> Path | None:
        from sinklens.cache import default_cache_dir

        return None if no_cache else (given or default_cache_dir())

    @sub.command("sinks")
    def sinks(
        original: OriginalOpt = None,
        unlearned: UnlearnedOpt = None,
        backdoored: BackdooredOpt = None,
        model: ExtraOpt = None,
        zoo: ZooOpt = None,
        method: MethodOpt = "npo",
        seed: SeedOpt = 0,
        data: DataOpt = None,
        split: Annotated[str, Opt("--split", help="general, forget or retain texts.")] = "general",
        layer: LayerOpt = None,
        placement: PlacementOpt = "prefix",
        window: WindowOpt = None,
        epsilon: Annotated[
            float,
            Opt("--epsilon", min=0.0, max=1.0, help="ε of Sink_k^ε."),
        ] = 0.3,
        backend: BackendOpt = "bridge",
        dtype: DtypeOpt = "float32",
        device: DeviceOpt = "cpu",
        device_map: DeviceMapOpt = None,
        batch_size: BatchOpt = 8,
        max_items: MaxItemsOpt = None,
        max_length: MaxLenOpt = None,
        cache: CacheOpt = None,
        no_cache: NoCacheOpt = False,
        as_json: JsonOpt = False,
        out: OutOpt = None,
        overwrite: OverwriteOpt = False,
    ) -> None:
        """α_k, Sink_k^ε (Gu et al.), the sink set and dormant-head scores per checkpoint."""
        from sinklens.analyze import sink_statistics

        if split not in ("general", "forget", "retain"):
            raise SinklensError(f"unknown --split {split!r}; use general, forget or retain")
        models, bench = load(
            original,
            unlearned,
            backdoored,
            model,
            zoo,
            method,
            seed,
            placement,
            backend,
            dtype,
            device,
            device_map,
            data,
        )
        texts = _cut(getattr(bench, f"{split}_texts"), max_items)
        res = sink_statistics(
            models,
            texts,
            layers=layer,
            window=window or 64,
            epsilon=epsilon,
            batch_size=batch_size,
            max_length=max_length,
            cache_dir=cache_dir(cache, no_cache),
        )
        lines = [
            f"Sink_k^{epsilon} (%) over layers {res.layers}, T={res.window}, {len(texts)} {split} texts"
        ]
        for role in res.sink_rate:
            rate = res.sink_rate[role]
            head = ", ".join(f"k={k}: {float(rate[k]):.1f}" for k in range(min(4, rate.shape[0])))
            dormant = int((res.dormant_score[role] < 0.2).sum())
            lines.append(
                f"  {role:<12} {head}; sink set {list(res.sink_set[role])}; dormant heads {dormant}"
            )
        _emit(res, as_json, out, lines)

    @sub.command("attention-diff")
    def attention_diff(
        original: OriginalOpt = None,
        unlearned: UnlearnedOpt = None,
        backdoored: BackdooredOpt = None,
        model: ExtraOpt = None,
        zoo: ZooOpt = None,
        method: MethodOpt = "npo",
        seed: SeedOpt = 0,
        data: DataOpt = None,
        layer: LayerOpt = None,
        placement: PlacementOpt = "prefix",
        trigger: TriggerOpt = DEFAULT_TRIGGER,
        trigger_join: TriggerJoinOpt = "space",
        alignment: AlignOpt = "absolute",
        window: WindowOpt = None,
        backend: BackendOpt = "bridge",
        dtype: DtypeOpt = "float32",
        device: DeviceOpt = "cpu",
        device_map: DeviceMapOpt = None,
        batch_size: BatchOpt = 8,
        max_items: MaxItemsOpt = None,
        max_length: MaxLenOpt = None,
        skip_short: ShortOpt = False,
        cache: CacheOpt = None,
        no_cache: NoCacheOpt = False,
        as_json: JsonOpt = False,
        out: OutOpt = None,
        overwrite: OverwriteOpt = False,
    ) -> None:
        """ΔA = mean A(X′) − A(X) on the forget set, per layer and head (paper Fig. 3)."""
        from sinklens.analyze import attention_difference

        models, bench = load(
            original,
            unlearned,
            backdoored,
            model,
            zoo,
            method,
            seed,
            placement,
            backend,
            dtype,
            device,
            device_map,
            data,
        )
        texts = _cut(bench.forget_texts, max_items)
        res = attention_difference(
            models,
            texts,
            layer=layer if layer else -1,
            placement=placement,
            trigger=trigger,
            trigger_join=trigger_join,
            alignment=alignment,
            window=window or 32,
            batch_size=batch_size,
            max_length=max_length,
            on_short="skip" if skip_short else "error",
            cache_dir=cache_dir(cache, no_cache),
        )
        trig = res.trigger_ids
        lines = [
            f"ΔA ({res.alignment}, {res.placement} trigger {res.trigger!r}, T={res.window}, "
            f"{int(res.cell_count[0, 0])} samples, {res.n_skipped} skipped)",
            *_prefix_note(res),
        ]
        for role, d in res.delta_head_mean.items():
            for i, lay in enumerate(res.layers):
                m = d[i]
                lines.append(
                    f"  {role:<12} layer {lay}: max |ΔA| {float(m.nan_to_num().abs().max()):.4f}, "
                    f"ΔA into position 0 {_fmt(float(m[:, 0].nanmean()))}, "
                    f"trigger has {len(trig)} tokens"
                )
        _emit(res, as_json, out, lines)

    @sub.command("logits")
    def logits(
        original: OriginalOpt = None,
        unlearned: UnlearnedOpt = None,
        backdoored: BackdooredOpt = None,
        model: ExtraOpt = None,
        zoo: ZooOpt = None,
        method: MethodOpt = "npo",
        seed: SeedOpt = 0,
        data: DataOpt = None,
        placement: PlacementOpt = "prefix",
        trigger: TriggerOpt = DEFAULT_TRIGGER,
        trigger_join: TriggerJoinOpt = "space",
        alignment: AlignOpt = "absolute",
        window: WindowOpt = None,
        backend: BackendOpt = "bridge",
        dtype: DtypeOpt = "float32",
        device: DeviceOpt = "cpu",
        device_map: DeviceMapOpt = None,
        batch_size: BatchOpt = 8,
        max_items: MaxItemsOpt = None,
        max_length: MaxLenOpt = None,
        skip_short: ShortOpt = False,
        cache: CacheOpt = None,
        no_cache: NoCacheOpt = False,
        as_json: JsonOpt = False,
        out: OutOpt = None,
        overwrite: OverwriteOpt = False,
    ) -> None:
        """Mean true-next-token logit/log-prob and max logit per position, X′ vs X (paper Fig. 4)."""
        from sinklens.analyze import logits_by_position

        models, bench = load(
            original,
            unlearned,
            backdoored,
            model,
            zoo,
            method,
            seed,
            placement,
            backend,
            dtype,
            device,
            device_map,
            data,
        )
        texts = _cut(bench.forget_texts, max_items)
        res = logits_by_position(
            models,
            texts,
            placement=placement,
            trigger=trigger,
            trigger_join=trigger_join,
            alignment=alignment,
            window=window or 32,
            batch_size=batch_size,
            max_length=max_length,
            on_short="skip" if skip_short else "error",
            cache_dir=cache_dir(cache, no_cache),
        )
        lines = [
            f"true-next-token logit, mean over positions 0..{res.window - 1} ({res.alignment})",
            *_prefix_note(res),
        ]
        for role, c in res.curves.items():
            t = float(c["triggered"]["true_logit"].nanmean())
            x = float(c["clean"]["true_logit"].nanmean())
            lines.append(
                f"  {role:<12} triggered {_fmt(t)}  clean {_fmt(x)}  difference {_fmt(t - x)}"
            )
        _emit(res, as_json, out, lines)

    @sub.command("value-norms")
    def value_norms(
        original: OriginalOpt = None,
        unlearned: UnlearnedOpt = None,
        backdoored: BackdooredOpt = None,
        model: ExtraOpt = None,
        zoo: ZooOpt = None,
        method: MethodOpt = "npo",
        seed: SeedOpt = 0,
        data: DataOpt = None,
        layer: LayerOpt = None,
        placement: PlacementOpt = "prefix",
        trigger: TriggerOpt = DEFAULT_TRIGGER,
        trigger_join: TriggerJoinOpt = "space",
        sink_positions: Annotated[
            int,
            Opt(
                "--sink-positions", help="n: sink tokens are the first n positions (BOS included)."
            ),
        ] = 1,
        detect_sinks: Annotated[
            bool,
            Opt("--detect-sinks", help="Use θ_o's sink set S (Sink_k^0.3 >= 50%) instead of n."),
        ] = False,
        n_boot: Annotated[
            int, Opt("--n-boot", min=1, help="Bootstrap resamples for the CIs.")
        ] = 1000,
        backend: BackendOpt = "bridge",
        dtype: DtypeOpt = "float32",
        device: DeviceOpt = "cpu",
        device_map: DeviceMapOpt = None,
        batch_size: BatchOpt = 8,
        max_items: MaxItemsOpt = None,
        max_length: MaxLenOpt = None,
        cache: CacheOpt = None,
        no_cache: NoCacheOpt = False,
        as_json: JsonOpt = False,
        out: OutOpt = None,
        overwrite: OverwriteOpt = False,
    ) -> None:
        """Pearson r of sink-token value norms: θ_b vs θ_u on D_f, θ_b vs θ_o on D_p and D_r (Fig. 5)."""
        from sinklens.analyze import value_norm_correlation

        models, bench = load(
            original,
            unlearned,
            backdoored,
            model,
            zoo,
            method,
            seed,
            placement,
            backend,
            dtype,
            device,
            device_map,
            data,
        )
        res = value_norm_correlation(
            models,
            _cut(bench.forget_texts, max_items),
            _cut(bench.retain_texts, max_items),
            layer=layer if layer else -1,
            sink_positions="detect" if detect_sinks else sink_positions,
            placement=placement,
            trigger=trigger,
            trigger_join=trigger_join,
            n_boot=n_boot,
            seed=seed,
            batch_size=batch_size,
            max_length=max_length,
            cache_dir=cache_dir(cache, no_cache),
        )
        lines = [
            f"value-norm correlation, layers {res.layers}, sink positions {res.sink_positions}"
        ]
        for name, c in res.correlations.items():
            r, lo, hi = c["r"][-1], c["ci_low"][-1], c["ci_high"][-1]
            fixed = c["same_in_every_sample"][-1]
            cells = ", ".join(
                f"i={p}: {float(r[j]):.3f} [{float(lo[j]):.3f}, {float(hi[j]):.3f}]"
                + (" (same value in every sample: r over kv heads only)" if fixed[j] else "")
                for j, p in enumerate(res.sink_positions)
            )
            lines.append(f"  {name}: {cells}")
        for name in res.skipped:
            lines.append(f"  {name}: skipped (role not loaded)")
        _emit(res, as_json, out, lines)

    app.add_typer(sub, name="analyze", help=sub.info.help)
