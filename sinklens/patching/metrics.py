"""Recovery metrics: how much of a forgotten answer a run restores, per sample.

- ``logprob``: the mean log-probability of the answer tokens (teacher-forced), the
  quantity a KnowMem answer or VerbMem continuation is scored by.
- ``logit_diff``: at the first answer token, the logit of the true token minus the logit
  of the unlearned model's top token there. It exists only where θ_u's top token differs
  from the true one (otherwise θ_u still answers and there is nothing to compete with);
  `alternative_tokens` marks those samples with -1 and the metric skips them.
"""

from __future__ import annotations

from typing import Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from sinklens.errors import SinklensError

MetricName = Literal["logprob", "logit_diff"]
METRICS = ("logprob", "logit_diff")

__all__ = [
    "METRICS",
    "MetricName",
    "alternative_tokens",
    "answer_logit_diff",
    "answer_logprob",
    "normalised_effect",
    "spearman",
]


def answer_logprob(
    logits: Float[Tensor, "batch width vocab"],
    ids: Int[Tensor, "batch seq"],
    answer_mask: Bool[Tensor, "batch seq"],
    offset: int = 0,
) -> Float[Tensor, " batch"]:
    """Mean log-probability of the answer tokens, each scored from the logits before it.

    `logits` may cover only positions offset..offset+width-1, as long as every position
    that predicts an answer token is among them."""
    counts = answer_mask[:, 1:].sum(dim=1)
    if bool((counts == 0).any()):
        raise SinklensError("a sample has no answer tokens; give every sample a non-empty answer")
    rows, tokens = answer_mask.nonzero(as_tuple=True)
    # Only the rows that score an answer token go through the softmax: with a big
    # vocabulary that is most of a patched forward's metric cost.
    picked = logits[rows, tokens - 1 - offset].float()
    scores = torch.log_softmax(picked, dim=-1).gather(-1, ids[rows, tokens][:, None]).squeeze(-1)
    sums = torch.zeros(ids.shape[0], dtype=scores.dtype, device=scores.device)
    return sums.index_add(0, rows, scores) / counts.to(scores.dtype)


def alternative_tokens(
    unlearned_logits: Float[Tensor, "batch seq vocab"],
    ids: Int[Tensor, "batch seq"],
    answer_mask: Bool[Tensor, "batch seq"],
) -> Int[Tensor, " batch"]:
    """θ_u's top token at the first answer token, or -1 where it is the true token."""
    first = answer_mask.int().argmax(dim=1)
    rows = torch.arange(ids.shape[0], device=ids.device)
    top = unlearned_logits[rows, first - 1].argmax(dim=-1)
    true = ids[rows, first]
    return torch.where(top == true, torch.full_like(top, -1), top)


def answer_logit_diff(
    logits: Float[Tensor, "batch width vocab"],
    ids: Int[Tensor, "batch seq"],
    answer_mask: Bool[Tensor, "batch seq"],
    alternatives: Int[Tensor, " batch"],
    offset: int = 0,
) -> Float[Tensor, " batch"]:
    """Logit of the true first answer token minus that of θ_u's answer; NaN where none.
    `offset` as in `answer_logprob`."""
    first = answer_mask.int().argmax(dim=1)
    rows = torch.arange(ids.shape[0], device=ids.device)
    at = logits[rows, first - 1 - offset].float()
    true = at[rows, ids[rows, first]]
    alt = at[rows, alternatives.clamp(min=0)]
    diff = true - alt
    return torch.where(alternatives >= 0, diff, torch.full_like(diff, float("nan")))


def normalised_effect(
    patched: Float[Tensor, "..."], low: float, high: float, *, noising: bool
) -> Float[Tensor, "..."]:
    """Fraction of the recovery restored (denoising) or destroyed (noising).

    `high` is the metric of the triggered run, `low` that of the corrupted run.
    """
    gap = high - low
    if not abs(gap) > 1e-8:
        raise SinklensError(
            f"the triggered and corrupted runs give the same metric ({high:.6g}); the trigger "
            "has no effect to patch, so use other samples, another trigger or another corruption"
        )
    return (high - patched) / gap if noising else (patched - low) / gap


def _ranks(x: Float[Tensor, " n"]) -> Float[Tensor, " n"]:
    """Ranks with ties given their average rank, as Spearman's rho requires."""
    order = torch.argsort(x, stable=True)
    ranks = torch.empty_like(x, dtype=torch.float64)
    ranks[order] = torch.arange(len(x), dtype=torch.float64)
    uniq, inverse = torch.unique(x, return_inverse=True)
    sums = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, ranks)
    counts = torch.zeros(len(uniq), dtype=torch.float64).index_add_(
        0, inverse, torch.ones_like(ranks)
    )
    return (sums / counts)[inverse]


def spearman(a: Float[Tensor, "..."], b: Float[Tensor, "..."]) -> float:
    """Spearman's rank correlation of two same-shaped tensors (flattened)."""
    x, y = a.detach().flatten().double(), b.detach().flatten().double()
    if x.shape != y.shape or len(x) < 2:
        raise SinklensError(
            f"spearman needs two tensors of the same size >= 2, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = float(rx.norm() * ry.norm())
    return float((rx * ry).sum()) / denom if denom > 0 else float("nan")
