"""The loss terms of NPO, RMU, the KL retain loss and value-norm alignment, as pure functions.

Conventions: `mask` marks real (non-padding) tokens with 1; sequence log-likelihoods
score every token after the first (the first, BOS, is never predicted); means over tokens
are over real tokens only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

__all__ = [
    "head_value_norms",
    "kl_to_reference",
    "npo_loss",
    "npo_raw_logit_loss",
    "raw_logit_score",
    "rmu_forget_loss",
    "rmu_retain_loss",
    "sequence_logprob",
    "value_norm_alignment",
]


def sequence_logprob(
    logits: Float[Tensor, "batch seq vocab"],
    input_ids: Int[Tensor, "batch seq"],
    mask: Int[Tensor, "batch seq"],
) -> Float[Tensor, " batch"]:
    """log π(y|x) of each sequence: the sum of its next-token log-probabilities."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    target = input_ids[:, 1:]
    tok = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return (tok * mask[:, 1:].to(tok.dtype)).sum(-1)


def raw_logit_score(
    logits: Float[Tensor, "batch seq vocab"],
    input_ids: Int[Tensor, "batch seq"],
    mask: Int[Tensor, "batch seq"],
) -> Float[Tensor, " batch"]:
    """Sum of the *raw* logits of the target tokens (no log-softmax): not a log-probability."""
    z = logits[:, :-1].float().gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (z * mask[:, 1:].to(z.dtype)).sum(-1)


def npo_loss(
    logp: Float[Tensor, " batch"], logp_ref: Float[Tensor, " batch"], beta: float
) -> Float[Tensor, ""]:
    """NPO (Zhang et al. 2024): mean of -(2/β) log σ(-β log(π_θ(y|x) / π_ref(y|x)))."""
    return (-(2.0 / beta) * F.logsigmoid(-beta * (logp - logp_ref))).mean()


def npo_raw_logit_loss(
    score: Float[Tensor, " batch"], score_ref: Float[Tensor, " batch"], beta: float
) -> Float[Tensor, ""]:
    """The NPO formula applied to `raw_logit_score`s, as the paper's and MUSE's code do.

    Raw logits are shift-invariant under softmax, so this ratio is not π_θ/π_ref and the
    loss can fall by moving all logits together. Offered only to reproduce that code.
    """
    return npo_loss(score, score_ref, beta)


def kl_to_reference(
    logits: Float[Tensor, "batch seq vocab"],
    ref_logits: Float[Tensor, "batch seq vocab"],
    mask: Int[Tensor, "batch seq"],
) -> Float[Tensor, ""]:
    """Eq. A2: KL(π_θ(·|x) ‖ π_ref(·|x)) per next-token position, mean over real tokens."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    logq = torch.log_softmax(ref_logits.float(), dim=-1)
    kl = (logp.exp() * (logp - logq)).sum(-1)
    m = mask.to(kl.dtype)
    return (kl * m).sum() / m.sum().clamp(min=1)


def _token_mse(
    h: Float[Tensor, "batch seq d"],
    target: Float[Tensor, "batch seq d"],
    mask: Int[Tensor, "batch seq"],
) -> Float[Tensor, ""]:
    per_tok = (h.float() - target.float()).pow(2).mean(-1)
    m = mask.to(per_tok.dtype)
    return (per_tok * m).sum() / m.sum().clamp(min=1)


def rmu_forget_loss(
    hidden: Float[Tensor, "batch seq d"],
    control: Float[Tensor, " d"],
    mask: Int[Tensor, "batch seq"],
) -> Float[Tensor, ""]:
    """Eq. A4: steer the layer-ℓ residual to c·u; squared error averaged over d and tokens.

    The mean over d (not the sum of eq. A4) is what RMU's reference code uses, so its
    steering coefficients carry over.
    """
    return _token_mse(hidden, control.expand_as(hidden), mask)


def rmu_retain_loss(
    hidden: Float[Tensor, "batch seq d"],
    frozen_hidden: Float[Tensor, "batch seq d"],
    mask: Int[Tensor, "batch seq"],
) -> Float[Tensor, ""]:
    """Eq. A5's representation term: keep the layer-ℓ residual equal to the frozen model's."""
    return _token_mse(hidden, frozen_hidden, mask)


def head_value_norms(
    v: Float[Tensor, "batch seq kvd"], n_kv_heads: int
) -> Float[Tensor, "batch seq kv"]:
    """‖v_i‖₂ per key-value head from a `v_proj` output (heads concatenated on the last axis)."""
    b, s, kvd = v.shape
    if kvd % n_kv_heads:
        raise ValueError(f"v_proj width {kvd} does not split into {n_kv_heads} heads")
    return v.float().reshape(b, s, n_kv_heads, kvd // n_kv_heads).norm(dim=-1)


def value_norm_alignment(
    norms: Float[Tensor, "batch layer sink kv"],
    target: Float[Tensor, "batch layer sink kv"],
    sink_mask: Int[Tensor, "batch sink"],
) -> Float[Tensor, ""]:
    """Eq. 6: (‖v_i(x;θ)‖ − ‖v_i(x;θ_target)‖)² averaged over sink positions, heads and layers.

    The sink axis is the *token* axis (positions 0..n-1 of each sample); the paper's MUSE
    code sliced the batch axis here instead. Positions beyond a short sample's end are masked.
    """
    sq = (norms.float() - target.float()).pow(2).mean(dim=(1, 3))
    m = sink_mask.to(sq.dtype)
    per_sample = (sq * m).sum(-1) / m.sum(-1).clamp(min=1)
    return per_sample.mean()
