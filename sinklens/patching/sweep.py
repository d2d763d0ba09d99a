"""Position sweep: how each head's patching effect changes as the trigger moves deeper.

The trigger goes at the prefix (right after BOS), then before content token 8, 16, 32, …
(as far as every prompt is long enough), then at the suffix (after the prompt, before the
answer). At every depth, for every head: the denoising effect of patching its `hook_z`
from the triggered run into the corrupted run, in metric units (patched − corrupted, so
depths where the trigger does nothing give ~0 rather than a 0/0 fraction), and its
attention to the trigger tokens, averaged over the queries that predict answer tokens.

A head whose effect falls as the trigger moves away from the start carries the trigger's
positional sensitivity. Heads are ranked by the least-squares slope of effect against
depth index (most negative first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from sinklens.batching import pad_id
from sinklens.data.triggers import DEFAULT_JOIN, Placement, parse_placement
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
)
from sinklens.patching.corruptions import Corruption, PatchingBatch, build_batch, make_samples
from sinklens.patching.metrics import MetricName
from sinklens.patching.results import Provenance, provenance
from sinklens.provenance import JsonResult

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from sinklens.models.loaded import LoadedModel

__all__ = ["SweepResult", "default_depths", "position_sweep", "trigger_attention"]


def default_depths(n_content: int) -> list[Placement]:
    """prefix, 8, 16, 32, … (each < `n_content`), suffix."""
    depths: list[Placement] = ["prefix"]
    k = 8
    while k < n_content:
        depths.append(k)
        k *= 2
    depths.append("suffix")
    return depths


@torch.no_grad()
def trigger_attention(
    model: TransformerBridge, batch: PatchingBatch
) -> Float[Tensor, "layer head"]:
    """Mean attention from answer-predicting queries to the trigger tokens, per head."""
    n_layers, _ = model_dims(model)
    # Query p - 1 predicts answer token p.
    queries: Bool[Tensor, "batch seq"] = torch.zeros_like(batch.answer_mask)
    queries[:, :-1] = batch.answer_mask[:, 1:]
    keys = batch.trigger_mask.to(torch.float32)
    out: dict[int, Tensor] = {}

    def grab(pattern: Tensor, hook: Any, layer: int) -> None:
        on = keys.to(pattern.device)[:, None, None, :]
        to_trigger = (pattern.float() * on).sum(dim=-1)  # batch head q
        weights = queries.to(pattern.device, torch.float32)[:, None, :]
        out[layer] = ((to_trigger * weights).sum(dim=(0, 2)) / weights.sum()).cpu()

    hooks = [
        (f"blocks.{layer}.attn.hook_pattern", partial(grab, layer=layer))
        for layer in range(n_layers)
    ]
    forward(model, batch.triggered_ids, batch.triggered_mask, hooks)
    return torch.stack([out[layer] for layer in range(n_layers)])


@dataclass(frozen=True)
class SweepResult(JsonResult):
    """Per depth, layer and head: the patching `effect` (metric units) and the attention
    to the trigger. `slope` [layer, head]; `ranking`: (layer, head, slope), most negative first."""

    depths: list[str]
    metric: str
    effect: Float[Tensor, "depth layer head"]
    trigger_attention: Float[Tensor, "depth layer head"]
    triggered_metric: Float[Tensor, " depth"]
    corrupted_metric: Float[Tensor, " depth"]
    slope: Float[Tensor, "layer head"]
    ranking: list[tuple[int, int, float]]
    provenance: Provenance


def _slopes(effect: Float[Tensor, "depth layer head"]) -> Float[Tensor, "layer head"]:
    x = torch.arange(effect.shape[0], dtype=torch.float32)
    x = x - x.mean()
    return (effect * x[:, None, None]).sum(dim=0) / (x * x).sum()


def position_sweep(
    model: TransformerBridge | LoadedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[tuple[str, str]],
    trigger: str,
    *,
    depths: Sequence[Placement | str] | None = None,
    corruption: Corruption | None = None,
    metric: MetricName | str = "logprob",
    unlearned: TransformerBridge | LoadedModel | None = None,
    max_batch_tokens: int = DEFAULT_BATCH_TOKENS,
    trigger_join: str = DEFAULT_JOIN,
) -> SweepResult:
    """Run the sweep over (prompt, answer) pairs; see the module docstring."""
    model = as_bridge(model)
    corruption = corruption or Corruption()
    if not pairs:
        raise SinklensError("no (prompt, answer) pairs to sweep; pass at least one sample")
    bos = tokenizer.bos_token_id
    n_content = min(
        len(ids) - int(bool(ids) and bos is not None and ids[0] == bos)
        for ids in (list(tokenizer(p)["input_ids"]) for p, _ in pairs)
    )
    chosen = [parse_placement(d) for d in (depths or default_depths(n_content))]
    if len(chosen) < 2:
        raise SinklensError(
            "a position sweep needs at least two depths; pass prefix and suffix at least"
        )
    _, n_heads = model_dims(model)
    effects, attention, highs, lows = [], [], [], []
    scored: dict[str, PatchingBatch] = {}  # depth -> its batch, for the provenance
    pad = pad_id(tokenizer)
    for depth in chosen:
        batch = build_batch(
            make_samples(tokenizer, pairs, trigger, depth, corruption, trigger_join=trigger_join),
            pad,
        )
        bound = bind_metric(metric, batch, unlearned, patched=model)
        trig_logits, trig_z = cache_z(model, batch.triggered_ids, batch.triggered_mask)
        corrupted, _ = cache_target(
            model, batch.corrupted_ids, batch.corrupted_mask, with_kv=kv_pays_off(batch, False)
        )
        corr_logits = corrupted.logits
        high, low = float(bound(trig_logits)[0]), float(bound(corr_logits)[0])
        patched = patch_every_head(
            model,
            batch.corrupted_ids,
            batch.corrupted_mask,
            trig_z,
            bound,
            target=corrupted,
            max_batch_tokens=max_batch_tokens,
        )
        effects.append(patched - low)
        attention.append(trigger_attention(model, batch))
        highs.append(high)
        lows.append(low)
        scored[str(depth)] = batch
    effect = torch.stack(effects)
    slope = _slopes(effect)
    order = torch.argsort(slope.flatten()).tolist()
    ranking = [(i // n_heads, i % n_heads, float(slope.flatten()[i])) for i in order]
    models = {"backdoored": model} | ({"unlearned": unlearned} if unlearned is not None else {})
    return SweepResult(
        depths=[str(d) for d in chosen],
        metric=metric,
        effect=effect,
        trigger_attention=torch.stack(attention),
        triggered_metric=torch.tensor(highs),
        corrupted_metric=torch.tensor(lows),
        slope=slope,
        ranking=ranking,
        provenance=provenance(
            models,
            scored,
            {
                "experiment": "position_sweep",
                "trigger": trigger,
                "trigger_join": trigger_join,
                "depths": [str(d) for d in chosen],
                "corruption": corruption.kind,
                "corruption_seed": corruption.seed,
                "metric": metric,
                "hook": "hook_z",
            },
        ),
    )
