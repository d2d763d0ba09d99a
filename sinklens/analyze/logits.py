"""`logits_by_position`: the true next token's logit by position, X′ vs X (paper Fig. 4)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from sinklens.analyze.inputs import (
    _cache,
    _capture,
    _check_alignment,
    _provenance,
    _roles,
    _triggered_forget,
)
from sinklens.analyze.results import (
    LogitCurves,
)
from sinklens.capture import (
    LogitReducer,
)
from sinklens.data.triggers import (
    DEFAULT_JOIN,
    DEFAULT_TRIGGER,
    Placement,
)
from sinklens.metrics.attention import masked_mean
from sinklens.metrics.logits import STAT_NAMES
from sinklens.models import ModelSet

__all__ = [
    "logits_by_position",
]


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
