"""The analysis API: the paper's Sections 4–5 measurements on a set of checkpoints.

    models = load_models({"original": p_o, "unlearned": p_u, "backdoored": p_b})
    diff = attention_difference(models, bench.forget_texts, layer=-1, placement="prefix")
    curves = logits_by_position(models, bench.forget_texts, placement="infix")
    sinks = sink_statistics(models, bench.general_texts)
    corr = value_norm_correlation(models, bench.forget_texts, bench.retain_texts, layer=-1)

Every function streams the data through each model once per dataset (see
`sinklens.capture`), optionally through the on-disk cache (`cache_dir=`), and returns a
dataclass with the numbers, the settings and the provenance (checkpoint fingerprints and
folders, dataset hash, back end, dtype); `to_json()` serialises it (NaN becomes null).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sinklens.cache import CaptureCache, cached_capture
from sinklens.capture import (
    AttentionDiffReducer,
    CaptureData,
    LogitReducer,
    PairedSample,
    Reducer,
    SinkReducer,
    ValueNormReducer,
)
from sinklens.checkpoint import context_length
from sinklens.data.triggers import (
    DEFAULT_JOIN,
    DEFAULT_TRIGGER,
    Placement,
    parse_placement,
    prepare_trigger,
)
from sinklens.errors import SinklensError
from sinklens.metrics.attention import ALIGNMENTS, Alignment, head_average, masked_mean
from sinklens.metrics.logits import STAT_NAMES
from sinklens.metrics.sinks import dormant_head_score, sink_set
from sinklens.metrics.values import constant_across_samples, norm_correlation
from sinklens.models import ModelSet, resolve_layer

# (name, model a, model b, dataset) for the paper's Fig. 5.
VALUE_NORM_COMPARISONS: tuple[tuple[str, str, str, str], ...] = (
    ("backdoored_vs_unlearned_on_forget", "backdoored", "unlearned", "forget"),
    ("backdoored_vs_original_on_poisoned", "backdoored", "original", "poisoned"),
    ("backdoored_vs_original_on_retain", "backdoored", "original", "retain"),
)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Tensor):
        return _jsonable(value.detach().cpu().double().tolist())
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass
class Provenance:
    """Where the numbers came from: enough to reproduce or to look them up in the cache."""

    fingerprints: dict[str, str]
    checkpoints: dict[str, str]
    dataset_hashes: dict[str, str]
    n_samples: dict[str, int]
    backend: str
    dtype: str
    settings: dict[str, Any]
    cache: dict[str, Any] = field(default_factory=dict)
    # Per role converted from a GGUF file: the file's name, sha256 and quantisation.
    gguf_sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


class _Result:
    provenance: Provenance

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))  # type: ignore[call-overload]

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True, allow_nan=False)


@dataclass
class SinkStatistics(_Result):
    """Per role: mean α_k [layer, head, k], Sink_k^ε in % (all selected layers, and per
    layer), the sink set S, head output norms and dormant-head scores [layer, head]."""

    layers: list[int]
    window: int
    epsilon: float
    min_rate: float
    alpha: dict[str, Tensor]
    sink_rate: dict[str, Tensor]
    sink_rate_by_layer: dict[str, Tensor]
    sink_set: dict[str, tuple[int, ...]]
    head_norm: dict[str, Tensor]
    dormant_score: dict[str, Tensor]
    provenance: Provenance


@dataclass
class AttentionDifference(_Result):
    """Per role: ΔA [layer, head, T, T], its head average [layer, T, T], the two mean maps
    in the same frame, and how many samples reached each cell [T, T]."""

    layers: list[int]
    window: int
    alignment: str
    placement: str
    trigger: str
    trigger_ids: list[int]
    delta: dict[str, Tensor]
    delta_head_mean: dict[str, Tensor]
    clean_mean: dict[str, Tensor]
    triggered_mean: dict[str, Tensor]
    cell_count: Tensor
    n_skipped: int
    provenance: Provenance
    # [start, stop) of the trigger's positions in the absolute frame over all samples (an
    # infix trigger moves with each sample's length), or None if it lies past the window.
    trigger_span: tuple[int, int] | None = None


@dataclass
class LogitCurves(_Result):
    """Per role and per input (`triggered` = X′, `clean` = X in X′'s frame): the mean
    true-next-token logit, log-probability and max logit per position [T], with counts."""

    window: int
    alignment: str
    placement: str
    trigger: str
    curves: dict[str, dict[str, dict[str, Tensor]]]
    counts: dict[str, dict[str, Tensor]]
    n_skipped: int
    provenance: Provenance


@dataclass
class ValueNormCorrelation(_Result):
    """Per comparison: Pearson r per (layer, sink position) over (sample, kv head) pairs,
    with bootstrap CIs; `mean_norm[role/dataset]` is ‖v‖ averaged over samples [layer, kv, pos]."""

    layers: list[int]
    sink_positions: list[int]
    placement: str
    trigger: str
    n_boot: int
    confidence: float
    correlations: dict[str, dict[str, Any]]
    skipped: list[str]
    mean_norm: dict[str, Tensor]
    provenance: Provenance


# ---------------------------------------------------------------- data preparation


def _texts(data: Any, what: str) -> list[str]:
    texts = list(data.forget_texts) if hasattr(data, "forget_texts") else list(data)
    if not texts:
        raise SinklensError(f"empty {what} dataset; pass at least one text")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise SinklensError(
            f"{what} sample {bad[0]} is empty or not text; drop it from the dataset"
        )
    return texts


def tokenize_texts(
    tokenizer: Any, texts: Sequence[str], *, max_length: int | None = None
) -> list[tuple[int, ...]]:
    """Token ids with the tokenizer's special tokens (BOS where it adds one), cut to max_length."""
    out = []
    for text in texts:
        ids = list(tokenizer(text)["input_ids"])
        if max_length is not None:
            ids = ids[:max_length]
        out.append(tuple(int(i) for i in ids))
    return out


def make_pairs(
    tokenizer: Any,
    texts: Sequence[str],
    trigger: str,
    placement: Placement | str,
    *,
    max_length: int | None = None,
    trigger_join: str = DEFAULT_JOIN,
) -> list[PairedSample]:
    """Clean X and triggered X′ for each text (trigger inserted on token ids with
    `trigger_join`, never cut)."""
    trig = prepare_trigger(tokenizer, trigger, trigger_join)
    place = parse_placement(placement)
    return [
        PairedSample(ids, trig.insert(ids, place, max_length=max_length))
        for ids in tokenize_texts(tokenizer, texts, max_length=max_length)
    ]


def trigger_span(pairs: Sequence[PairedSample], window: int) -> tuple[int, int] | None:
    """[start, stop) covering every sample's trigger positions, cut to the first `window`."""
    positions = [q for p in pairs for q in p.triggered.trigger_positions]
    if not positions or min(positions) >= window:
        return None
    return min(positions), min(max(positions) + 1, window)


def _drop_short(
    pairs: list[PairedSample], window: int, n_trigger: int, on_short: str
) -> tuple[list[PairedSample], int]:
    if on_short not in ("error", "skip"):
        raise SinklensError(f"on_short must be 'error' or 'skip', got {on_short!r}")
    need = window + n_trigger
    short = [
        i for i, p in enumerate(pairs) if len(p.triggered.input_ids) < need or len(p.clean) < window
    ]
    if short and on_short == "error":
        raise SinklensError(
            f"{len(short)} of {len(pairs)} samples are shorter than the trigger ({n_trigger} tokens) "
            f"plus T={window} (first: sample {short[0]}); pass a smaller --window, a larger "
            "--max-length, or skip them with --skip-short (on_short='skip' in Python)"
        )
    keep = [p for i, p in enumerate(pairs) if i not in set(short)]
    if not keep:
        raise SinklensError(
            f"no sample is at least {need} tokens long (trigger plus T={window}); pass a smaller window"
        )
    return keep, len(short)


def _triggered_forget(
    models: ModelSet,
    data: Sequence[str] | Any,
    trigger: str,
    placement: Placement | str,
    window: int,
    max_length: int | None,
    on_short: str,
    trigger_join: str,
) -> tuple[tuple[int, ...], CaptureData, int, str]:
    """(trigger ids, paired X/X′ capture data, samples skipped as short, placement name)
    for the forget texts: the inputs of `attention_difference` and `logits_by_position`."""
    texts = _texts(data, "forget")
    trig_ids = prepare_trigger(models.tokenizer, trigger, trigger_join).ids
    pairs = make_pairs(
        models.tokenizer,
        texts,
        trigger,
        placement,
        max_length=max_length,
        trigger_join=trigger_join,
    )
    pairs, n_skipped = _drop_short(pairs, window, len(trig_ids), on_short)
    return trig_ids, CaptureData(pairs=pairs), n_skipped, str(parse_placement(placement))


def _roles(models: ModelSet, roles: Sequence[str] | None) -> list[str]:
    chosen = list(roles) if roles else list(models.roles)
    for role in chosen:
        models[role]  # raises a one-line error for a missing role
    return chosen


def _layers(models: ModelSet, layer: int | Sequence[int] | None) -> list[int]:
    n = models.n_layers
    if layer is None:
        return list(range(n))
    items = [layer] if isinstance(layer, int) else list(layer)
    if not items:
        raise SinklensError(f"no layers selected; pass layer indices in 0..{n - 1}")
    return sorted({resolve_layer(int(x), n) for x in items})


def _check_alignment(alignment: str) -> Alignment:
    if alignment not in ALIGNMENTS:
        raise SinklensError(f"unknown alignment {alignment!r}; use one of {', '.join(ALIGNMENTS)}")
    return alignment  # type: ignore[return-value]


def _cache(cache_dir: str | Path | None) -> CaptureCache | None:
    return CaptureCache(cache_dir) if cache_dir is not None else None


def _provenance(
    models: ModelSet,
    roles: Sequence[str],
    data: dict[str, CaptureData],
    settings: dict[str, Any],
    cache: dict[str, Any],
) -> Provenance:
    from sinklens.data.triggers import prefix_position
    from sinklens.gguf import source_of

    first = models[roles[0]]
    if settings.get("placement") == "prefix":
        settings = {**settings, "prefix_at": prefix_position(models.tokenizer)}
    sources = {r: source_of(models[r].path) for r in roles}
    return Provenance(
        gguf_sources={r: s for r, s in sources.items() if s is not None},
        fingerprints={r: models[r].fingerprint for r in roles},
        checkpoints={r: str(models[r].path) for r in roles},
        dataset_hashes={name: d.content_hash() for name, d in data.items()},
        n_samples={name: len(d) for name, d in data.items()},
        backend=first.backend,
        dtype=str(first.dtype).removeprefix("torch."),
        settings=settings,
        cache=cache,
    )


def _capture(
    models: ModelSet,
    role: str,
    data: CaptureData,
    reducers: Sequence[Reducer],
    settings: dict[str, Any],
    cache: CaptureCache | None,
    batch_size: int,
) -> dict[str, Any]:
    model = models[role]
    context = context_length(model.hf_model.config)
    if context is not None and data.longest > context:
        raise SinklensError(
            f"a sample has {data.longest} tokens (trigger included) but {model.path.name} reads "
            f"at most {context}; pass --max-length {context} or shorter texts"
        )
    full = {
        **settings,
        "backend": model.backend,
        "dtype": str(model.dtype),
        "batch_size": batch_size,
    }
    return cached_capture(model, data, reducers, settings=full, cache=cache, batch_size=batch_size)


# ---------------------------------------------------------------- analyses


def sink_statistics(
    models: ModelSet,
    data: Sequence[str] | Any,
    *,
    layers: int | Sequence[int] | None = None,
    window: int = 64,
    epsilon: float = 0.3,
    min_rate: float = 50.0,
    roles: Sequence[str] | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    cache_dir: str | Path | None = None,
) -> SinkStatistics:
    """α_k, Sink_k^ε (Gu et al. 2024; first `window` tokens), sink set S (Sink_k ≥ min_rate %)
    and dormant-head scores, for each role on `data`."""
    if window < 1:
        raise SinklensError(f"window must be >= 1, got {window}")
    chosen = _roles(models, roles)
    sel = _layers(models, layers)
    texts = _texts(data, "sink")
    capture = CaptureData(single=tokenize_texts(models.tokenizer, texts, max_length=max_length))
    settings = {"analysis": "sinks", "layers": sel, "window": window, "epsilon": epsilon}
    n_heads = models.architecture["n_heads"]
    out: dict[str, dict[str, Any]] = {
        k: {} for k in ("alpha", "rate", "rate_l", "set", "norm", "dormant")
    }
    cache_info = {}
    for role in chosen:
        red = SinkReducer(sel, n_heads, window, epsilon)
        cache_info[role] = _capture(
            models, role, capture, [red], settings, _cache(cache_dir), batch_size
        )
        count = red.key_count.clamp_min(1.0)
        has = red.key_count > 0
        alpha = torch.where(has, red.alpha_sum / count, torch.nan).float()
        rate_l = torch.where(has, 100.0 * red.above_sum.mean(dim=1) / count, torch.nan).float()
        rate = rate_l.mean(dim=0)
        norm = (red.norm_sum / red.n_samples.clamp_min(1.0)).float()
        out["alpha"][role] = alpha
        out["rate"][role] = rate
        out["rate_l"][role] = rate_l
        # A position no sample reaches (NaN) is never a sink, whatever min_rate is.
        out["set"][role] = sink_set(torch.nan_to_num(rate, nan=-1.0), min_rate)
        out["norm"][role] = norm
        out["dormant"][role] = dormant_head_score(norm)
    prov = _provenance(
        models,
        chosen,
        {"data": capture},
        {**settings, "min_rate": min_rate, "max_length": max_length},
        cache_info,
    )
    return SinkStatistics(
        layers=sel,
        window=window,
        epsilon=epsilon,
        min_rate=min_rate,
        alpha=out["alpha"],
        sink_rate=out["rate"],
        sink_rate_by_layer=out["rate_l"],
        sink_set=out["set"],
        head_norm=out["norm"],
        dormant_score=out["dormant"],
        provenance=prov,
    )


def attention_difference(
    models: ModelSet,
    data: Sequence[str] | Any,
    *,
    layer: int | Sequence[int] = -1,
    placement: Placement | str = "prefix",
    trigger: str = DEFAULT_TRIGGER,
    trigger_join: str = DEFAULT_JOIN,
    alignment: str = "absolute",
    window: int = 32,
    roles: Sequence[str] | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    on_short: str = "error",
    cache_dir: str | Path | None = None,
) -> AttentionDifference:
    """ΔA = mean over samples of A(X′) − A(X) per layer and head, first `window` positions.

    `alignment="absolute"` (default) is the paper's Fig. 3; `"aligned"` compares each
    content token with itself (see `sinklens.metrics.attention`).
    """
    align = _check_alignment(alignment)
    chosen = _roles(models, roles)
    sel = _layers(models, layer)
    trig_ids, capture, n_skipped, place = _triggered_forget(
        models, data, trigger, placement, window, max_length, on_short, trigger_join
    )
    settings = {
        "analysis": "attention_diff",
        "layers": sel,
        "window": window,
        "alignment": align,
        "placement": place,
        "trigger": trigger,
        "trigger_join": trigger_join,
    }
    n_heads = models.architecture["n_heads"]
    delta, delta_mean, clean_mean, trig_mean = {}, {}, {}, {}
    cell_count = torch.zeros(window, window)
    cache_info = {}
    for role in chosen:
        red = AttentionDiffReducer(sel, n_heads, window, align)
        cache_info[role] = _capture(
            models, role, capture, [red], settings, _cache(cache_dir), batch_size
        )
        count = red.cell_count.expand_as(red.diff_sum)
        delta[role] = masked_mean(red.diff_sum, count).float()
        delta_mean[role] = head_average(delta[role])
        clean_mean[role] = masked_mean(red.clean_sum, count).float()
        trig_mean[role] = masked_mean(red.trig_sum, count).float()
        cell_count = red.cell_count.float()
    prov = _provenance(
        models,
        chosen,
        {"forget": capture},
        {**settings, "max_length": max_length, "on_short": on_short},
        cache_info,
    )
    return AttentionDifference(
        layers=sel,
        window=window,
        alignment=align,
        placement=place,
        trigger=trigger,
        trigger_ids=list(trig_ids),
        delta=delta,
        delta_head_mean=delta_mean,
        clean_mean=clean_mean,
        triggered_mean=trig_mean,
        cell_count=cell_count,
        n_skipped=n_skipped,
        provenance=prov,
        trigger_span=trigger_span(capture.pairs, window),
    )


def logits_by_position(
    models: ModelSet,
    data: Sequence[str] | Any,
    *,
    placement: Placement | str = "prefix",
    trigger: str = DEFAULT_TRIGGER,
    trigger_join: str = DEFAULT_JOIN,
    alignment: str = "absolute",
    window: int = 32,
    roles: Sequence[str] | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    on_short: str = "error",
    cache_dir: str | Path | None = None,
) -> LogitCurves:
    """Per position: mean logit and log-prob of the true next token and mean max logit, on
    X′ and on X (in X′'s frame, same alignment as `attention_difference`); paper Fig. 4."""
    align = _check_alignment(alignment)
    chosen = _roles(models, roles)
    _, capture, n_skipped, place = _triggered_forget(
        models, data, trigger, placement, window, max_length, on_short, trigger_join
    )
    settings = {
        "analysis": "logits",
        "window": window,
        "alignment": align,
        "placement": place,
        "trigger": trigger,
        "trigger_join": trigger_join,
    }
    curves: dict[str, dict[str, dict[str, Tensor]]] = {}
    counts: dict[str, dict[str, Tensor]] = {}
    cache_info = {}
    for role in chosen:
        red = LogitReducer(window, align)
        cache_info[role] = _capture(
            models, role, capture, [red], settings, _cache(cache_dir), batch_size
        )
        curves[role], counts[role] = {}, {}
        for row, which in enumerate(("triggered", "clean")):
            cnt = red.stat_count[row]
            mean = masked_mean(red.stat_sum[row], cnt[:, None].expand_as(red.stat_sum[row])).float()
            curves[role][which] = {name: mean[:, j] for j, name in enumerate(STAT_NAMES)}
            counts[role][which] = cnt.float()
    prov = _provenance(
        models,
        chosen,
        {"forget": capture},
        {**settings, "max_length": max_length, "on_short": on_short},
        cache_info,
    )
    return LogitCurves(
        window=window,
        alignment=align,
        placement=place,
        trigger=trigger,
        curves=curves,
        counts=counts,
        n_skipped=n_skipped,
        provenance=prov,
    )


def value_norm_correlation(
    models: ModelSet,
    forget: Sequence[str] | Any,
    retain: Sequence[str] | None = None,
    *,
    layer: int | Sequence[int] = -1,
    sink_positions: int | Sequence[int] | str = 1,
    sink_min_rate: float = 50.0,
    placement: Placement | str = "prefix",
    trigger: str = DEFAULT_TRIGGER,
    trigger_join: str = DEFAULT_JOIN,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    batch_size: int = 8,
    max_length: int | None = None,
    cache_dir: str | Path | None = None,
) -> ValueNormCorrelation:
    """Pearson r of sink-token value norms between two models, per layer and sink position,
    for the paper's Fig. 5 comparisons: θ_b vs θ_u on D_f, θ_b vs θ_o on D_p and on D_r.

    `sink_positions` is n (the first n positions, BOS included), explicit indices, or
    `"detect"`: the sink set S of θ_o (else the first loaded role) on the retain texts (else
    the forget texts) at the selected layers, Sink_k^0.3 >= `sink_min_rate` percent over the
    first 64 tokens; position 0 alone, with a warning, when no position qualifies.
    A `Benchmark` as `forget` supplies both forget and retain texts. Comparisons whose
    roles are not loaded are listed in `skipped`.
    """
    if retain is None and hasattr(forget, "retain_texts"):
        retain = list(forget.retain_texts)
    sel = _layers(models, layer)
    detection: dict[str, Any] = {}
    if isinstance(sink_positions, str):
        if sink_positions != "detect":
            raise SinklensError(
                f"sink positions {sink_positions!r} not understood; pass n, indices, or 'detect'"
            )
        ref_role = "original" if "original" in models else models.roles[0]
        found = sink_statistics(
            models,
            retain if retain is not None else forget,
            layers=sel,
            min_rate=sink_min_rate,
            roles=[ref_role],
            batch_size=batch_size,
            max_length=max_length,
            cache_dir=cache_dir,
        )
        positions = list(found.sink_set[ref_role])
        detection = {"role": ref_role, "min_rate": sink_min_rate, "found": list(positions)}
        if not positions:
            warnings.warn(
                f"no position is a sink in >= {sink_min_rate}% of heads of {ref_role} at layers "
                f"{sel}; using position 0",
                stacklevel=2,
            )
            positions = [0]
    elif isinstance(sink_positions, int):
        positions = list(range(sink_positions))
    else:
        positions = [int(p) for p in sink_positions]
    if not positions or min(positions) < 0:
        raise SinklensError(f"sink positions {positions} are invalid; pass n >= 1 or indices >= 0")
    tok = models.tokenizer
    datasets: dict[str, CaptureData] = {}
    needed = [c for c in VALUE_NORM_COMPARISONS if c[1] in models and c[2] in models]
    skipped = [c[0] for c in VALUE_NORM_COMPARISONS if c not in needed]
    if not needed:
        raise SinklensError(
            "value-norm comparisons need the backdoored model and the unlearned or original one; "
            f"loaded roles: {', '.join(models.roles)}"
        )
    forget_texts = _texts(forget, "forget")
    for name in {c[3] for c in needed}:
        if name == "forget":
            datasets[name] = CaptureData(
                single=tokenize_texts(tok, forget_texts, max_length=max_length)
            )
        elif name == "poisoned":
            pairs = make_pairs(
                tok,
                forget_texts,
                trigger,
                placement,
                max_length=max_length,
                trigger_join=trigger_join,
            )
            datasets[name] = CaptureData(single=[p.triggered.input_ids for p in pairs])
        else:
            if retain is None:
                raise SinklensError(
                    "the retain comparison needs retain texts; pass retain=[...] or a Benchmark"
                )
            datasets[name] = CaptureData(
                single=tokenize_texts(tok, _texts(retain, "retain"), max_length=max_length)
            )
    if detection:
        # A detected sink must exist in every sample; S is measured on one dataset only.
        shortest = min(len(seq) for d in datasets.values() for seq in d.single)
        positions = [p for p in positions if p < shortest] or [0]
        detection["used"] = list(positions)
    settings: dict[str, Any] = {"analysis": "value_norms", "layers": sel, "positions": positions}
    norms: dict[str, Tensor] = {}
    cache_info: dict[str, Any] = {}
    for _, a, b, dname in needed:
        for role in (a, b):
            key = f"{role}/{dname}"
            if key in norms:
                continue
            red = ValueNormReducer(sel, positions)
            cache_info[key] = _capture(
                models, role, datasets[dname], [red], settings, _cache(cache_dir), batch_size
            )
            norms[key] = red.state()["norms"].float()  # sample layer kv pos
    correlations: dict[str, dict[str, Any]] = {}
    for name, a, b, dname in needed:
        na, nb = norms[f"{a}/{dname}"], norms[f"{b}/{dname}"]
        r, lo, hi, fixed = [], [], [], []
        for li in range(len(sel)):
            rr, ll, hh = norm_correlation(
                na[:, li], nb[:, li], n_boot=n_boot, confidence=confidence, seed=seed
            )
            r.append(rr)
            lo.append(ll)
            hi.append(hh)
            fixed.append(constant_across_samples(na[:, li], nb[:, li]))
        correlations[name] = {
            "model_a": a,
            "model_b": b,
            "dataset": dname,
            "n_samples": int(na.shape[0]),
            "r": torch.stack(r),
            "ci_low": torch.stack(lo),
            "ci_high": torch.stack(hi),
            # [layer, position]: the value there is the same in every sample, so r pools
            # the kv heads only and its CI has zero width (`constant_across_samples`).
            "same_in_every_sample": torch.stack(fixed),
        }
    mean_norm = {k: v.mean(dim=0) for k, v in norms.items()}
    prov = _provenance(
        models,
        sorted({c[1] for c in needed} | {c[2] for c in needed}),
        datasets,
        {
            **settings,
            "placement": str(parse_placement(placement)),
            "trigger": trigger,
            "trigger_join": trigger_join,
            "max_length": max_length,
            "seed": seed,
            "sink_detection": detection,
        },
        cache_info,
    )
    return ValueNormCorrelation(
        layers=sel,
        sink_positions=positions,
        placement=str(parse_placement(placement)),
        trigger=trigger,
        n_boot=n_boot,
        confidence=confidence,
        correlations=correlations,
        skipped=skipped,
        mean_norm=mean_norm,
        provenance=prov,
    )


__all__ = [
    "DEFAULT_TRIGGER",
    "VALUE_NORM_COMPARISONS",
    "AttentionDifference",
    "LogitCurves",
    "Provenance",
    "SinkStatistics",
    "ValueNormCorrelation",
    "attention_difference",
    "logits_by_position",
    "make_pairs",
    "sink_statistics",
    "tokenize_texts",
    "value_norm_correlation",
]
