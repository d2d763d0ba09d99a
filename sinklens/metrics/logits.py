"""Logit-by-position curves (paper Fig. 4): how a trigger reshapes the final predictions.

For every position p the model predicts token p + 1. We record the logit and the
log-probability of that true next token and the maximum logit, for X′ and for X, in X′'s
frame: ``aligned`` reads X at the clean position the content token came from (trigger
positions have no clean counterpart), ``absolute`` reads X at the same index.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from sinklens.metrics.attention import ALIGNMENTS, Alignment

STAT_NAMES: tuple[str, str, str] = ("true_logit", "true_logprob", "max_logit")


def next_token_stats(
    logits: Float[Tensor, "batch pos vocab"],
    input_ids: Int[Tensor, "batch pos"],
    valid: Bool[Tensor, "batch pos"],
) -> tuple[Float[Tensor, "batch pos 3"], Bool[Tensor, "batch pos"]]:
    """(true-next-token logit, its log-probability, max logit) per position, and where defined.

    Position p is defined when p + 1 is a real token; the last real position has no target.
    """
    logits = logits.float()
    target = torch.roll(input_ids, -1, dims=1).clamp_min(0)
    ok = valid & torch.roll(valid, -1, dims=1)
    ok[:, -1] = False
    true_logit = logits.gather(-1, target[..., None])[..., 0]
    logprob = true_logit - torch.logsumexp(logits, dim=-1)
    max_logit = logits.max(dim=-1).values
    stats = torch.stack([true_logit, logprob, max_logit], dim=-1)
    return torch.where(ok[..., None], stats, torch.zeros_like(stats)), ok


def align_positions(
    values: Float[Tensor, "batch n *rest"],
    ok: Bool[Tensor, "batch n"],
    source_index: Int[Tensor, "batch m"],
    triggered_len: Int[Tensor, " batch"],
    window: int,
    alignment: Alignment = "aligned",
) -> tuple[Float[Tensor, "batch window *rest"], Bool[Tensor, "batch window"]]:
    """Clean per-position values moved into X′'s frame over its first `window` positions."""
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
    b, n = ok.shape
    pos = torch.arange(window, device=ok.device)
    if alignment == "absolute":
        src = pos[None, :].expand(b, window)
    else:
        m = source_index.shape[1]
        src = torch.full((b, window), -1, dtype=source_index.dtype, device=ok.device)
        take = min(m, window)
        src[:, :take] = source_index[:, :take]
        src = torch.where(pos[None, :] < triggered_len[:, None], src, torch.full_like(src, -1))
    has = (src >= 0) & (src < n)
    idx = src.clamp(0, n - 1)
    got_ok = ok.gather(1, idx) & has
    flat = values.reshape(b, n, -1)
    got = flat.gather(1, idx[:, :, None].expand(b, window, flat.shape[-1]))
    got = got.reshape(b, window, *values.shape[2:])
    mask = got_ok.reshape(b, window, *([1] * (values.dim() - 2)))
    return torch.where(mask, got, torch.zeros_like(got)), got_ok


def window_positions(
    values: Float[Tensor, "batch n *rest"], ok: Bool[Tensor, "batch n"], window: int
) -> tuple[Float[Tensor, "batch window *rest"], Bool[Tensor, "batch window"]]:
    """The first `window` positions of per-position values, zero-padded, with their mask."""
    b, n = ok.shape
    if n >= window:
        return values[:, :window], ok[:, :window]
    pad_v = values.new_zeros((b, window - n, *values.shape[2:]))
    pad_ok = ok.new_zeros((b, window - n))
    return torch.cat([values, pad_v], dim=1), torch.cat([ok, pad_ok], dim=1)


__all__ = ["STAT_NAMES", "align_positions", "next_token_stats", "window_positions"]
