"""What the analyses return: one dataclass per analysis, with its settings and provenance
(checkpoint fingerprints and folders, dataset hash, back end, dtype); `to_json()`
serialises it (NaN becomes null)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

__all__ = [
    "AttentionDifference",
    "LogitCurves",
    "Provenance",
    "SinkStatistics",
    "ValueNormCorrelation",
]


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
