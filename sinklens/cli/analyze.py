"""`sinklens analyze sinks|attention-diff|logits|value-norms`: the paper's Sections 4–5.

Checkpoints come from --original/--unlearned/--backdoored (and --model NAME=DIR for more);
without them, θ_o is the shipped organism and θ_u/θ_b are members of a zoo built by
`sinklens zoo build --out ZOO` when --zoo ZOO is given (`<method>-s<seed>`,
`<method>-<placement>-s<seed>`). Data defaults to the world shipped with θ_o. Each command
prints a short summary, or the full result with provenance as JSON (--json, or --out FILE).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from sinklens.cli.checkpoints import CheckpointOptions
from sinklens.cli.common import (
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

SPLITS = ("general", "forget", "retain")


@dataclass(frozen=True)
class AnalysisOptions(CheckpointOptions):
    """Every option of the `analyze` commands, each declared once; a command lists the ones
    it takes (`_analysis`), the others keep their defaults."""

    seed: Annotated[int, Opt("--seed", min=0, help="Zoo member seed (and bootstrap seed).")] = 0
    placement: Annotated[
        str, Opt("--placement", help="Trigger placement: prefix, infix, suffix or an index.")
    ] = "prefix"
    model: Annotated[
        list[str] | None, Opt("--model", help="Extra checkpoint as NAME=DIR (repeatable).")
    ] = None
    data: Annotated[
        Path | None, Opt("--data", help="Benchmark folder in MUSE layout (default: θ_o's world).")
    ] = None
    split: Annotated[str, Opt("--split", help="general, forget or retain texts.")] = "general"
    layer: Annotated[
        list[int] | None, Opt("--layer", help="Layer index (repeatable; -1 = last).")
    ] = None
    trigger: Annotated[str, Opt("--trigger", help="Trigger text.")] = DEFAULT_TRIGGER
    trigger_join: TriggerJoinOpt = "space"
    alignment: Annotated[
        str, Opt("--alignment", help="absolute (paper Fig. 3/4) or aligned (same tokens).")
    ] = "absolute"
    window: Annotated[int | None, Opt("--window", min=1, help="T: the first T positions.")] = None
    epsilon: Annotated[float, Opt("--epsilon", min=0.0, max=1.0, help="ε of Sink_k^ε.")] = 0.3
    sink_positions: Annotated[
        int,
        Opt("--sink-positions", help="n: sink tokens are the first n positions (BOS included)."),
    ] = 1
    detect_sinks: Annotated[
        bool, Opt("--detect-sinks", help="Use θ_o's sink set S (Sink_k^0.3 >= 50%) instead of n.")
    ] = False
    n_boot: Annotated[int, Opt("--n-boot", min=1, help="Bootstrap resamples for the CIs.")] = 1000
    backend: Annotated[str, Opt("--backend", help="bridge (TransformerLens), nnsight or hf.")] = (
        "bridge"
    )
    dtype: Annotated[str, Opt("--dtype", help="float32 or bfloat16.")] = "float32"
    device: Annotated[str, Opt("--device", help="cpu, cuda, cuda:1, ...")] = "cpu"
    device_map: Annotated[
        str | None, Opt("--device-map", help="e.g. auto: spread a 7B model over GPUs.")
    ] = None
    batch_size: Annotated[int, Opt("--batch-size", min=1, help="Samples per forward pass.")] = 8
    max_items: Annotated[
        int | None, Opt("--max-items", min=1, help="Use only the first N texts.")
    ] = None
    max_length: Annotated[
        int | None, Opt("--max-length", min=2, help="Tokens per sample (trigger included).")
    ] = None
    skip_short: Annotated[
        bool, Opt("--skip-short/--error-short", help="Skip samples shorter than trigger + T.")
    ] = False
    cache_dir: Annotated[
        Path | None, Opt("--cache-dir", help="Capture cache (default: ~/.cache/sinklens/capture).")
    ] = None
    no_cache: Annotated[bool, Opt("--no-cache", help="Do not read or write the capture cache.")] = (
        False
    )
    as_json: Annotated[
        bool, Opt("--json", help="Print the full result (with provenance) as JSON.")
    ] = False
    out: OutOpt = None
    overwrite: OverwriteOpt = False

    def __post_init__(self) -> None:
        # Here, so that a wrong split fails before any weights load.
        if self.split not in SPLITS:
            raise SinklensError(f"unknown --split {self.split!r}; use general, forget or retain")

    def first_items(self, texts: Any) -> list[str]:
        """`texts`, cut to the first --max-items."""
        items = list(texts)
        return items if self.max_items is None else items[: self.max_items]

    def capture_settings(self) -> dict[str, Any]:
        """How activations are captured and cached: keywords every analysis takes."""
        from sinklens.cache import default_cache_dir

        cache_dir = None if self.no_cache else (self.cache_dir or default_cache_dir())
        return {
            "batch_size": self.batch_size,
            "max_length": self.max_length,
            "cache_dir": cache_dir,
        }

    def trigger_settings(self) -> dict[str, Any]:
        """Which trigger goes where: keywords every analysis of triggered texts takes."""
        return {
            "placement": self.placement,
            "trigger": self.trigger,
            "trigger_join": self.trigger_join,
        }

    def paired_inputs(self, bench: Any) -> dict[str, Any]:
        """The forget texts and keywords of the analyses that set triggered texts beside
        clean ones position by position (attention-diff, logits)."""
        return {
            "data": self.first_items(bench.forget_texts),
            **self.trigger_settings(),
            "alignment": self.alignment,
            "window": self.window or 32,
            "on_short": "skip" if self.skip_short else "error",
            **self.capture_settings(),
        }


# An analysis: the options, the loaded models and benchmark -> (result, summary lines).
Analysis = Callable[[AnalysisOptions, Any, Any], tuple[Any, list[str]]]

_LOADING = "backend dtype device device_map batch_size max_items max_length"


def _analysis(*names: str) -> Callable[[Analysis], Callable[..., None]]:
    """An `analyze` command for an analysis. Its options: the checkpoint ones and --data,
    `names`, then the cache and output ones. It loads the checkpoints and the benchmark,
    runs the analysis and prints its summary (or the JSON), the same for every analysis."""

    def decorate(analysis: Analysis) -> Callable[..., None]:
        @functools.wraps(analysis)
        def run(options: AnalysisOptions) -> None:
            models, bench = _load(options)
            result, summary = analysis(options, models, bench)
            if options.out is not None:
                summary.append(f"wrote {options.out}")
            emit_result(result, options.as_json, options.out, "\n".join(summary))

        return options_command(
            AnalysisOptions,
            "original unlearned backdoored model zoo method seed data",
            *names,
            "cache_dir no_cache as_json out overwrite",
        )(run)

    return decorate


def _load(options: AnalysisOptions) -> tuple[Any, Any]:
    """The models and the benchmark; the benchmark is read first (a bad --data fails
    before any weights load), and its forget texts let validation warn when the
    original looks unlearned next to the others."""
    from sinklens.models import load_models

    paths = options.available(options.model)
    bench = _benchmark(options.data, paths)
    models = load_models(
        paths,
        backend=options.backend,
        dtype=options.dtype,
        device=options.device,
        device_map=options.device_map,
        forget_texts=bench.forget_texts if len(paths) > 1 else (),
    )
    return models, bench


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


def _prefix_note(result: Any) -> list[str]:
    """Where the prefix trigger went, when it is one (it depends on whether the tokenizer
    adds BOS)."""
    where = result.provenance.settings.get("prefix_at")
    return [f"  prefix trigger at {where}"] if where else []


def _fmt(x: float) -> str:
    return "nan" if x != x else f"{x:+.4f}"


@_analysis("split layer placement window epsilon", _LOADING)
def sinks(options: AnalysisOptions, models: Any, bench: Any) -> tuple[Any, list[str]]:
    """α_k, Sink_k^ε (Gu et al.), the sink set and dormant-head scores per checkpoint."""
    from sinklens.analyze import sink_statistics

    texts = options.first_items(getattr(bench, f"{options.split}_texts"))
    res = sink_statistics(
        models,
        texts,
        layers=options.layer,
        window=options.window or 64,
        epsilon=options.epsilon,
        **options.capture_settings(),
    )
    lines = [
        f"Sink_k^{options.epsilon} (%) over layers {res.layers}, T={res.window}, "
        f"{len(texts)} {options.split} texts"
    ]
    for role in res.sink_rate:
        rate = res.sink_rate[role]
        head = ", ".join(f"k={k}: {float(rate[k]):.1f}" for k in range(min(4, rate.shape[0])))
        dormant = int((res.dormant_score[role] < 0.2).sum())
        lines.append(
            f"  {role:<12} {head}; sink set {list(res.sink_set[role])}; dormant heads {dormant}"
        )
    return res, lines


@_analysis("layer placement trigger trigger_join alignment window", _LOADING, "skip_short")
def attention_diff(options: AnalysisOptions, models: Any, bench: Any) -> tuple[Any, list[str]]:
    """ΔA = mean A(X′) − A(X) on the forget set, per layer and head (paper Fig. 3)."""
    from sinklens.analyze import attention_difference

    res = attention_difference(models, layer=options.layer or -1, **options.paired_inputs(bench))
    lines = [
        f"ΔA ({res.alignment}, {res.placement} trigger {res.trigger!r}, T={res.window}, "
        f"{int(res.cell_count[0, 0])} samples, {res.n_skipped} skipped)",
        *_prefix_note(res),
    ]
    for role, delta in res.delta_head_mean.items():
        for i, layer in enumerate(res.layers):
            into = delta[i]
            lines.append(
                f"  {role:<12} layer {layer}: max |ΔA| {float(into.nan_to_num().abs().max()):.4f}, "
                f"ΔA into position 0 {_fmt(float(into[:, 0].nanmean()))}, "
                f"trigger has {len(res.trigger_ids)} tokens"
            )
    return res, lines


@_analysis("placement trigger trigger_join alignment window", _LOADING, "skip_short")
def logits(options: AnalysisOptions, models: Any, bench: Any) -> tuple[Any, list[str]]:
    """Mean true-next-token logit/log-prob and max logit per position, X′ vs X (paper Fig. 4)."""
    from sinklens.analyze import logits_by_position

    res = logits_by_position(models, **options.paired_inputs(bench))
    lines = [
        f"true-next-token logit, mean over positions 0..{res.window - 1} ({res.alignment})",
        *_prefix_note(res),
    ]
    for role, curve in res.curves.items():
        triggered = float(curve["triggered"]["true_logit"].nanmean())
        clean = float(curve["clean"]["true_logit"].nanmean())
        lines.append(
            f"  {role:<12} triggered {_fmt(triggered)}  clean {_fmt(clean)}  "
            f"difference {_fmt(triggered - clean)}"
        )
    return res, lines


@_analysis("layer placement trigger trigger_join sink_positions detect_sinks n_boot", _LOADING)
def value_norms(options: AnalysisOptions, models: Any, bench: Any) -> tuple[Any, list[str]]:
    """Pearson r of sink-token value norms: θ_b vs θ_u on D_f, θ_b vs θ_o on D_p and D_r (Fig. 5)."""
    from sinklens.analyze import value_norm_correlation

    res = value_norm_correlation(
        models,
        options.first_items(bench.forget_texts),
        options.first_items(bench.retain_texts),
        layer=options.layer or -1,
        sink_positions="detect" if options.detect_sinks else options.sink_positions,
        n_boot=options.n_boot,
        seed=options.seed,
        **options.trigger_settings(),
        **options.capture_settings(),
    )
    lines = [f"value-norm correlation, layers {res.layers}, sink positions {res.sink_positions}"]
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
    return res, lines


def register(app: typer.Typer) -> None:
    """Add the `analyze` sub-app to the root `sinklens` app."""
    sub = typer.Typer(
        name="analyze",
        help="Attention sinks, attention differences, logit curves and value norms.",
        no_args_is_help=True,
    )
    sub.command("sinks")(sinks)
    sub.command("attention-diff")(attention_diff)
    sub.command("logits")(logits)
    sub.command("value-norms")(value_norms)
    app.add_typer(sub, name="analyze", help=sub.info.help)
