"""Sink ablation: cut chosen heads off the attention-sink positions and see what breaks.

Two modes, both applied to `hook_pattern` of the chosen heads only:

- ``attention``: knock out attention to the sink positions and renormalise each row over
  the remaining keys (as if the sink's scores were −inf). A query that attended only to
  sinks (the first token attending to itself) is left with an all-zero row.
- ``value``: zero the sink tokens' values in those heads. Since a head's output is
  Σ_k A_qk v_k, zeroing v_sink for one query head is exactly dropping the sink's
  column of its pattern without renormalising; done on the pattern, it stays per query
  head even when key-value heads are shared (grouped-query attention).

Each named batch is scored on its `triggered_ids` before and after: BE on a triggered
forget batch, clean behaviour on a clean forget batch and a retain batch (build those with
`make_clean_sample`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from sinklens.errors import SinklensError
from sinklens.patching.core import (
    as_bridge,
    bind_metric,
    check_heads,
    forward,
)
from sinklens.patching.corruptions import PatchingBatch
from sinklens.patching.metrics import MetricName
from sinklens.patching.results import Provenance, provenance
from sinklens.provenance import JsonResult

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from sinklens.models.loaded import LoadedModel

AblationMode = Literal["attention", "value"]
ABLATION_MODES = ("attention", "value")

__all__ = ["ABLATION_MODES", "AblationMode", "SinkAblationResult", "sink_ablation"]


@dataclass(frozen=True)
class SinkAblationResult(JsonResult):
    """Metric per named batch with the sinks intact (`before`) and ablated (`after`)."""

    mode: str
    metric: str
    heads: list[tuple[int, int]]
    sink_positions: list[int]
    before: dict[str, float]
    after: dict[str, float]
    provenance: Provenance

    @property
    def change(self) -> dict[str, float]:
        return {name: self.after[name] - self.before[name] for name in self.before}


def _ablate(pattern: Tensor, hook: Any, *, heads: list[int], sinks: list[int], mode: str) -> Tensor:
    pattern = pattern.clone()
    sub = pattern[:, heads]
    sub[..., sinks] = 0.0
    if mode == "attention":
        sub = sub / sub.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(sub.dtype).tiny)
    pattern[:, heads] = sub
    return pattern


def sink_ablation(
    model: TransformerBridge | LoadedModel,
    batches: Mapping[str, PatchingBatch],
    heads: Sequence[tuple[int, int]],
    *,
    sink_positions: Sequence[int] = (0,),
    mode: AblationMode | str = "attention",
    metric: MetricName | str = "logprob",
    unlearned: TransformerBridge | LoadedModel | None = None,
) -> SinkAblationResult:
    """Score every batch with and without the chosen heads' sinks; see the module docstring."""
    model = as_bridge(model)
    if mode not in ABLATION_MODES:
        raise SinklensError(f"unknown ablation mode {mode!r}; use attention or value")
    if not batches:
        raise SinklensError("no batches to score; pass at least one named batch")
    chosen = check_heads(model, heads)
    if not chosen:
        raise SinklensError("no heads to ablate; pass at least one (layer, head)")
    sinks = sorted({int(p) for p in sink_positions})
    if not sinks:
        raise SinklensError("no sink positions; pass at least one, such as 0 for the first token")
    by_layer: dict[int, list[int]] = {}
    for layer, head in chosen:
        by_layer.setdefault(layer, []).append(head)
    before: dict[str, float] = {}
    after: dict[str, float] = {}
    for name, batch in batches.items():
        if sinks[-1] >= batch.seq_len:
            raise SinklensError(
                f"sink position {sinks[-1]} is beyond batch {name!r} ({batch.seq_len} tokens); "
                f"use positions in 0..{batch.seq_len - 1}"
            )
        bound = bind_metric(metric, batch, unlearned, patched=model)
        hooks = [
            (
                f"blocks.{layer}.attn.hook_pattern",
                partial(_ablate, heads=hs, sinks=sinks, mode=mode),
            )
            for layer, hs in sorted(by_layer.items())
        ]
        with torch.no_grad():
            plain = forward(model, batch.triggered_ids, batch.triggered_mask)
            ablated = forward(model, batch.triggered_ids, batch.triggered_mask, hooks)
        before[name] = float(bound(plain)[0])
        after[name] = float(bound(ablated)[0])
    return SinkAblationResult(
        mode=mode,
        metric=metric,
        heads=chosen,
        sink_positions=sinks,
        before=before,
        after=after,
        provenance=provenance(
            {"backdoored": model} | ({"unlearned": unlearned} if unlearned is not None else {}),
            batches,
            {
                "experiment": "sink_ablation",
                "mode": mode,
                "heads": chosen,
                "sink_positions": sinks,
                "batches": list(batches),
                "metric": metric,
                "hook": "hook_pattern",
            },
        ),
    )
