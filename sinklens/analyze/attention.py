"""`attention_difference`: ΔA = mean A(X′) − A(X) on the forget set (paper Fig. 3)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from sinklens.analyze.inputs import (
    _cache,
    _capture,
    _check_alignment,
    _layers,
    _provenance,
    _roles,
    _triggered_forget,
    trigger_span,
)
from sinklens.analyze.results import (
    AttentionDifference,
)
from sinklens.capture import (
    AttentionDiffReducer,
)
from sinklens.data.triggers import (
    DEFAULT_JOIN,
    DEFAULT_TRIGGER,
    Placement,
)
from sinklens.metrics.attention import head_average, masked_mean
from sinklens.models import ModelSet

__all__ = [
    "attention_difference",
]


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
