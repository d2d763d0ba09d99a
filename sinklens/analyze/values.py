"""`value_norm_correlation`: Pearson r of sink-token value norms (paper Fig. 5)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sinklens.analyze.inputs import (
    VALUE_NORM_COMPARISONS,
    _cache,
    _capture,
    _layers,
    _provenance,
    _texts,
    make_pairs,
    tokenize_texts,
)
from sinklens.analyze.results import (
    ValueNormCorrelation,
)
from sinklens.analyze.sinks import sink_statistics
from sinklens.capture import (
    CaptureData,
    ValueNormReducer,
)
from sinklens.data.triggers import (
    DEFAULT_JOIN,
    DEFAULT_TRIGGER,
    Placement,
    parse_placement,
)
from sinklens.errors import SinklensError
from sinklens.metrics.values import constant_across_samples, norm_correlation
from sinklens.models import ModelSet

__all__ = [
    "value_norm_correlation",
]


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
