"""What the analyses return: one dataclass per analysis, with its settings and its
`sinklens.provenance.Provenance` (checkpoints and fingerprints by role, dataset hashes and
sample counts, back end, dtype, cache use, library versions); `to_json()` writes it through
the one JSON writer, `sinklens.provenance.dumps` (NaN and ±inf become null)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from sinklens.provenance import JsonResult, Provenance

__all__ = [
    "AttentionDifference",
    "LogitCurves",
    "Provenance",
    "SinkStatistics",
    "ValueNormCorrelation",
]


@dataclass
class SinkStatistics(JsonResult):
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
class AttentionDifference(JsonResult):
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
class LogitCurves(JsonResult):
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
class ValueNormCorrelation(JsonResult):
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
