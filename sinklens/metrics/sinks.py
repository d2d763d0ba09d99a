"""Attention-sink statistics (Gu et al. 2024, "When attention sink emerges").

For key position k, alpha_k^{l,h} is the mean attention that queries i >= k pay to k.
Sink_k^eps is the share of (layer, head) pairs with alpha_k > eps, averaged over samples.
Positions are 0-based here: k = 0 is the first token (BOS when the tokenizer adds one),
which Gu et al. call k = 1.
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
