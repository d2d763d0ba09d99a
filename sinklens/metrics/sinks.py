"""Attention-sink statistics (Gu et al. 2024, "When attention sink emerges") and dormant heads.

For key position k, alpha_k^{l,h} is the mean attention that queries i >= k pay to k.
Sink_k^eps is the share of (layer, head) pairs with alpha_k > eps, averaged over samples.
Positions are 0-based here: k = 0 is the first token (BOS when the tokenizer adds one),
which Gu et al. call k = 1.

The dormant-head score follows Sandoval-Segura et al. 2025 ("Identifying and evaluating
dormant heads"): a head's mean output norm divided by the mean over its layer's heads. The
head output is the head's slice of the attention output before the output projection
(sum_j A_ij v_j), averaged over real tokens; a score near 0 means the head writes almost
nothing, which is what a head that parks its attention on a small-norm sink does.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor


def sink_alpha(
    pattern: Float[Tensor, "batch layer head q k"],
    valid: Bool[Tensor, "batch q"] | None = None,
) -> Float[Tensor, "batch layer head k"]:
    """alpha_k for every sample, layer, head and key position k.

    `valid` marks real (non-padding) tokens; a padded query contributes nothing and a
    padded key gets alpha 0. Queries before k cannot see k under a causal mask and are
    excluded from the mean, as in Gu et al.
    """
    n_q, n_k = pattern.shape[-2], pattern.shape[-1]
    if valid is None:
        valid = torch.ones(pattern.shape[0], n_q, dtype=torch.bool, device=pattern.device)
    q_idx = torch.arange(n_q, device=pattern.device)
    k_idx = torch.arange(n_k, device=pattern.device)
    sees = (q_idx[:, None] >= k_idx[None, :])[None] & valid[:, :, None]  # batch q k
    weights = sees.to(pattern.dtype)[:, None, None]
    total = (pattern * weights).sum(dim=-2)
    count = weights.sum(dim=-2).clamp_min(1.0)
    return total / count


def sink_rate(
    alpha: Float[Tensor, "batch layer head k"],
    epsilon: float = 0.3,
) -> Float[Tensor, " k"]:
    """Sink_k^eps in percent: share of (layer, head) pairs with alpha_k > eps, mean over samples."""
    above = (alpha > epsilon).to(alpha.dtype)
    return 100.0 * above.flatten(1, 2).mean(dim=1).mean(dim=0)


def sink_set(rate: Float[Tensor, " k"], min_rate: float = 50.0) -> tuple[int, ...]:
    """The sink set S: key positions whose Sink_k^eps (in percent) is at least `min_rate`.

    Positions are returned in increasing order; an empty tuple means no position is a sink
    in at least `min_rate` percent of the (layer, head) pairs.
    """
    return tuple(int(k) for k in torch.nonzero(rate >= min_rate).flatten().tolist())


def head_output_norms(
    head_out: Float[Tensor, "batch pos head d_head"],
    valid: Bool[Tensor, "batch pos"],
) -> Float[Tensor, "batch head"]:
    """Mean L2 norm of each head's output over the real tokens of each sample."""
    norms = torch.linalg.vector_norm(head_out.float(), dim=-1)  # batch pos head
    weights = valid.to(norms.dtype)[:, :, None]
    return (norms * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def dormant_head_score(
    head_norm: Float[Tensor, "*batch layer head"],
) -> Float[Tensor, "*batch layer head"]:
    """Head output norm divided by the mean head output norm of its layer (1 = average head)."""
    return head_norm / head_norm.mean(dim=-1, keepdim=True).clamp_min(
        torch.finfo(head_norm.dtype).tiny
    )


__all__ = ["dormant_head_score", "head_output_norms", "sink_alpha", "sink_rate", "sink_set"]
