"""Trigger patching in θ_b: which heads carry the trigger's effect, exactly and to first order.

Denoising patches a head's output from the triggered run into the corrupted run and
reports the fraction of the recovery it restores; noising patches the corrupted run's
output into the triggered run and reports the fraction it destroys. Results come as
`[layer, head]` (the head at every position) or `[layer, pos, head]` tensors.

Attribution patching approximates every entry at once: the metric's gradient with
respect to `hook_z` at the target run, dotted with (source − target) activations, from
two forwards and one backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from sinklens.errors import SinklensError
from sinklens.patching.batched import (
    cache_target,
    kv_pays_off,
    patch_every_head,
)
from sinklens.patching.core import (
    DEFAULT_BATCH_TOKENS,
    as_bridge,
    bind_metric,
    cache_z,
    forward,
    model_dims,
    z_name,
)
from sinklens.patching.corruptions import PatchingBatch
from sinklens.patching.metrics import MetricName, normalised_effect, spearman
from sinklens.patching.results import Provenance, provenance
from sinklens.provenance import JsonResult

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from sinklens.models.loaded import LoadedModel

Direction = Literal["denoise", "noise"]
DIRECTIONS = ("denoise", "noise")

__all__ = [
    "DIRECTIONS",
    "AttributionResult",
    "Direction",
    "HeadPatchingResult",
    "attribution_patching",
    "runs_for",
    "trigger_patching",
]


@dataclass(frozen=True)
class HeadPatchingResult(JsonResult):
    """`patched`: the metric with each head (and position) patched; `effect`: the fraction
    of the recovery restored (denoise) or destroyed (noise). Shape [layer, head] or
    [layer, pos, head] (`by_position`)."""

    direction: str
    by_position: bool
    metric: str
    patched: Float[Tensor, "..."]
    effect: Float[Tensor, "..."]
    triggered_metric: float
    corrupted_metric: float
    provenance: Provenance


def runs_for(batch: PatchingBatch, direction: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(target ids, target mask, source ids, source mask) for a patching direction."""
    if direction == "denoise":
        return batch.corrupted_ids, batch.corrupted_mask, batch.triggered_ids, batch.triggered_mask
    if direction == "noise":
        return batch.triggered_ids, batch.triggered_mask, batch.corrupted_ids, batch.corrupted_mask
    raise SinklensError(f"unknown patching direction {direction!r}; use denoise or noise")


def trigger_patching(
    model: TransformerBridge | LoadedModel,
    batch: PatchingBatch,
    *,
    direction: Direction | str = "denoise",
    by_position: bool = False,
    metric: MetricName | str = "logprob",
    unlearned: TransformerBridge | LoadedModel | None = None,
    max_batch_tokens: int = DEFAULT_BATCH_TOKENS,
) -> HeadPatchingResult:
    """Exact, batched patching of every head's `hook_z` between triggered and corrupted runs."""
    model = as_bridge(model)
    target_ids, target_mask, source_ids, source_mask = runs_for(batch, direction)
    bound = bind_metric(metric, batch, unlearned, patched=model)
    target, _ = cache_target(
        model, target_ids, target_mask, with_kv=kv_pays_off(batch, by_position)
    )
    source_logits, source_z = cache_z(model, source_ids, source_mask)
    target_metric, source_metric = float(bound(target.logits)[0]), float(bound(source_logits)[0])
    high, low = (
        (source_metric, target_metric) if direction == "denoise" else (target_metric, source_metric)
    )
    patched = patch_every_head(
        model,
        target_ids,
        target_mask,
        source_z,
        bound,
        target=target,
        n_positions=batch.seq_len if by_position else None,
        max_batch_tokens=max_batch_tokens,
    )
    models = {"backdoored": model} | ({"unlearned": unlearned} if unlearned is not None else {})
    return HeadPatchingResult(
        direction=direction,
        by_position=by_position,
        metric=metric,
        patched=patched,
        effect=normalised_effect(patched, low, high, noising=direction == "noise"),
        triggered_metric=high,
        corrupted_metric=low,
        provenance=provenance(
            models,
            {"data": batch},
            {
                "experiment": "trigger_patching",
                "direction": direction,
                "by_position": by_position,
                "metric": metric,
                "hook": "hook_z",
            },
        ),
    )


@dataclass(frozen=True)
class AttributionResult(JsonResult):
    """First-order estimates of `HeadPatchingResult.patched`/`effect`, per head
    (`[layer, head]`) and per head and position (`[layer, pos, head]`)."""

    direction: str
    metric: str
    patched_heads: Float[Tensor, "layer head"]
    effect_heads: Float[Tensor, "layer head"]
    patched_positions: Float[Tensor, "layer pos head"]
    effect_positions: Float[Tensor, "layer pos head"]
    triggered_metric: float
    corrupted_metric: float
    provenance: Provenance

    def spearman_vs(self, exact: HeadPatchingResult) -> float:
        """Spearman's rho of these estimates against an exact result of the same shape."""
        mine = self.effect_positions if exact.by_position else self.effect_heads
        return spearman(mine, exact.effect)


def attribution_patching(
    model: TransformerBridge | LoadedModel,
    batch: PatchingBatch,
    *,
    direction: Direction | str = "denoise",
    metric: MetricName | str = "logprob",
    unlearned: TransformerBridge | LoadedModel | None = None,
) -> AttributionResult:
    """Attribution patching: one forward caching the source run, one forward and one
    backward at the target run. Both metrics of the unpatched runs come for free."""
    model = as_bridge(model)
    target_ids, target_mask, source_ids, source_mask = runs_for(batch, direction)
    bound = bind_metric(metric, batch, unlearned, patched=model)
    n_layers, _ = model_dims(model)
    source_logits, source_z = cache_z(model, source_ids, source_mask)
    source_metric = float(bound(source_logits)[0])

    seen: dict[int, Tensor] = {}
    probes: list[Tensor] = []

    def probe(z: Tensor, hook: Any, layer: int) -> Tensor:
        # A zero leaf added to z: its gradient is the metric's gradient w.r.t. z along
        # every path, whatever requires_grad the weights have.
        leaf = torch.zeros_like(z, requires_grad=True)
        probes.append(leaf)
        seen[layer] = z.detach()
        return z + leaf

    hooks = [(z_name(layer), partial(probe, layer=layer)) for layer in range(n_layers)]
    with torch.enable_grad():
        logits = forward(model, target_ids, target_mask, hooks)
        value = bound(logits)[0]
        grads = torch.autograd.grad(value, probes)
    target_metric = float(value.detach())
    # [layer, batch, pos, head]: per position and head, summed over samples and d_head.
    delta = torch.stack(
        [
            ((source_z[layer] - seen[layer]) * grad).sum(dim=-1)
            for layer, grad in zip(range(n_layers), grads, strict=True)
        ]
    ).detach()
    per_position = delta.sum(dim=1).cpu()
    per_head = per_position.sum(dim=1)
    if direction == "denoise":
        high, low = source_metric, target_metric
    else:
        high, low = target_metric, source_metric
    noising = direction == "noise"
    return AttributionResult(
        direction=direction,
        metric=metric,
        patched_heads=target_metric + per_head,
        effect_heads=normalised_effect(target_metric + per_head, low, high, noising=noising),
        patched_positions=target_metric + per_position,
        effect_positions=normalised_effect(
            target_metric + per_position, low, high, noising=noising
        ),
        triggered_metric=high,
        corrupted_metric=low,
        provenance=provenance(
            {"backdoored": model} | ({"unlearned": unlearned} if unlearned is not None else {}),
            {"data": batch},
            {
                "experiment": "attribution_patching",
                "direction": direction,
                "metric": metric,
                "hook": "hook_z",
            },
        ),
    )
