"""From texts to what the analyses stream through the models: tokenised samples, clean /
triggered pairs (too-short samples dropped or refused), the roles and layers asked for,
the capture (through the on-disk cache when one is given) and its provenance."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sinklens.cache import CaptureCache, cached_capture
from sinklens.capture import (
    CaptureData,
    PairedSample,
    Reducer,
)
from sinklens.checkpoint import context_length
from sinklens.data.triggers import (
    DEFAULT_JOIN,
    Placement,
    parse_placement,
    prepare_trigger,
)
from sinklens.errors import SinklensError
from sinklens.metrics.attention import ALIGNMENTS, Alignment
from sinklens.models import ModelSet, resolve_layer
from sinklens.provenance import Provenance, portable_path

__all__ = [
    "VALUE_NORM_COMPARISONS",
    "make_pairs",
    "tokenize_texts",
    "trigger_span",
]

# (name, model a, model b, dataset) for the paper's Fig. 5.
VALUE_NORM_COMPARISONS: tuple[tuple[str, str, str, str], ...] = (
    ("backdoored_vs_unlearned_on_forget", "backdoored", "unlearned", "forget"),
    ("backdoored_vs_original_on_poisoned", "backdoored", "original", "poisoned"),
    ("backdoored_vs_original_on_retain", "backdoored", "original", "retain"),
)


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
        checkpoints={r: portable_path(models[r].path) for r in roles},
        fingerprints={r: models[r].fingerprint for r in roles},
        dataset_hashes={name: d.content_hash() for name, d in data.items()},
        n_samples={name: len(d) for name, d in data.items()},
        settings=settings,
        backend=first.backend,
        dtype=str(first.dtype).removeprefix("torch."),
        gguf_sources={r: s for r, s in sources.items() if s is not None},
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
    from tqdm.auto import tqdm

    # On a terminal only (disable=None), for captures longer than two seconds; a capture
    # resumed from the cache starts the bar where it left off.
    with tqdm(total=len(data), desc=f"capture {role}", unit="sample", delay=2, disable=None) as bar:

        def advance(n_done: int) -> None:
            bar.update(n_done - bar.n)

        return cached_capture(
            model,
            data,
            reducers,
            settings=full,
            cache=cache,
            batch_size=batch_size,
            on_batch=advance,
        )
