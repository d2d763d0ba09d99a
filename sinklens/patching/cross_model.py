"""Cross-model patching: the same input through two checkpoints, one head swapped at a time.

θ_o → θ_u on clean forget input asks which heads carry the forgotten knowledge (patching
one of θ_o's heads into θ_u restores the answer); θ_b → θ_u on triggered input asks which
heads carry the backdoor. `effect` is the fraction of the source model's advantage over
the target restored: (patched − target) / (source − target).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jaxtyping import Float
from torch import Tensor

from sinklens.patching.batched import (
    cache_target,
    patch_every_head,
)
from sinklens.patching.core import (
    DEFAULT_BATCH_TOKENS,
    as_bridge,
    bind_metric,
    cache_z,
)
from sinklens.patching.corruptions import PatchingBatch
from sinklens.patching.metrics import MetricName, normalised_effect
from sinklens.patching.results import Provenance, provenance
from sinklens.provenance import JsonResult

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from sinklens.models.loaded import LoadedModel

__all__ = ["CrossModelResult", "cross_model_patching"]


@dataclass(frozen=True)
class CrossModelResult(JsonResult):
    """`patched`/`effect` shaped [layer, head] or [layer, pos, head] (`by_position`)."""

    source_role: str
    target_role: str
    by_position: bool
    metric: str
    patched: Float[Tensor, "..."]
    effect: Float[Tensor, "..."]
    source_metric: float
    target_metric: float
    provenance: Provenance


def _check_comparable(models: dict[str, Any]) -> None:
    """Source, target (and a separate unlearned model) validated like a model set: same
    tokenizer by its full definition, same architecture; byte-identical ones warned."""
    from sinklens.comparable import ModelSpec, check_comparable

    check_comparable([ModelSpec.of(model, role) for role, model in models.items()])


def _check_gap(source_role: str, target_role: str, high: float, low: float) -> None:
    # θ_o (clean input) and θ_b (triggered input) should both know more than θ_u; a
    # negative gap flips the sign of every normalised effect.
    if high < low:
        warnings.warn(
            f"the source model ({source_role}) scores below the target ({target_role}) on "
            f"these answers ({high:.4f} vs {low:.4f}), so it looks more unlearned than the "
            f"target; check that the {source_role} and {target_role} checkpoints are not swapped",
            stacklevel=3,
        )


def cross_model_patching(
    source: TransformerBridge | LoadedModel,
    target: TransformerBridge | LoadedModel,
    batch: PatchingBatch,
    *,
    source_role: str = "original",
    target_role: str = "unlearned",
    by_position: bool = False,
    metric: MetricName | str = "logprob",
    unlearned: TransformerBridge | LoadedModel | None = None,
    max_batch_tokens: int = DEFAULT_BATCH_TOKENS,
) -> CrossModelResult:
    """Patch each head of `source` into `target`, both run on `batch.triggered_ids` (a
    clean batch from `make_clean_sample` for clean input). `unlearned` defaults to `target`
    for the logit-difference metric."""
    roles = {source_role: source, target_role: target}
    if unlearned is not None and unlearned is not target:
        roles["unlearned" if "unlearned" not in roles else "unlearned (metric)"] = unlearned
    _check_comparable(roles)
    source, target = as_bridge(source), as_bridge(target)
    bound = bind_metric(metric, batch, unlearned if unlearned is not None else target)
    ids, mask = batch.triggered_ids, batch.triggered_mask
    source_logits, source_z = cache_z(source, ids, mask)
    target_cache, _ = cache_target(target, ids, mask, with_kv=by_position)
    target_logits = target_cache.logits
    high, low = float(bound(source_logits)[0]), float(bound(target_logits)[0])
    _check_gap(source_role, target_role, high, low)
    patched = patch_every_head(
        target,
        ids,
        mask,
        source_z,
        bound,
        target=target_cache,
        n_positions=batch.seq_len if by_position else None,
        max_batch_tokens=max_batch_tokens,
    )
    return CrossModelResult(
        source_role=source_role,
        target_role=target_role,
        by_position=by_position,
        metric=metric,
        patched=patched,
        effect=normalised_effect(patched, low, high, noising=False),
        source_metric=high,
        target_metric=low,
        provenance=provenance(
            {source_role: source, target_role: target},
            {"data": batch},
            {
                "experiment": "cross_model_patching",
                "source": source_role,
                "target": target_role,
                "by_position": by_position,
                "metric": metric,
                "hook": "hook_z",
            },
        ),
    )
