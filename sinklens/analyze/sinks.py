"""`sink_statistics`: α_k, Sink_k^ε (Gu et al.), the sink set and dormant-head scores."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from sinklens.analyze.inputs import (
    _cache,
    _capture,
    _layers,
    _provenance,
    _roles,
    _texts,
    tokenize_texts,
)
from sinklens.analyze.results import (
    SinkStatistics,
)
from sinklens.capture import (
    CaptureData,
    SinkReducer,
)
from sinklens.errors import SinklensError
from sinklens.metrics.sinks import dormant_head_score, sink_set
from sinklens.models import ModelSet

__all__ = [
    "sink_statistics",
]


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
