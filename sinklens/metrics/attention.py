"""Attention difference maps ΔA = mean over samples of A(X′) − A(X) (paper Section 4, Fig. 3).

X′ is the triggered version of the clean sample X. Two ways to line the two maps up:

* ``absolute``: position index against position index, ΔA[p, q] = A′[p, q] − A[p, q]. This is
  the paper's Fig. 3: its definition subtracts the two maps as they are, with no re-indexing,
  its axes are token position indices 0..T−1, and it reads the prefix-trigger *positions*
  (not trigger tokens matched to anything in X) off the map. Under a prefix trigger every
  content token moves right, so the map mixes "what the trigger does" with "the content now
  sits somewhere else".
* ``aligned``: in X′'s frame, each content token is compared with the same content token of
  X (via ``TriggeredSample.source_index``), ΔA[p, q] = A′[p, q] − A[s(p), s(q)], and the
  trigger's rows and columns are compared with zero. This isolates the change the trigger
  causes to attention between the same tokens, and shows the attention the trigger absorbs.

Both are averaged over the samples in which the cell exists (padding never counts).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

Alignment = Literal["aligned", "absolute"]
ALIGNMENTS: tuple[str, ...] = ("aligned", "absolute")


def pad_square(x: Tensor, size: int) -> Tensor:
    n = x.shape[-1]
    if n >= size:
        return x
    return F.pad(x, (0, size - n, 0, size - n))


def _pad_last(x: Tensor, size: int, value: int) -> Tensor:
    n = x.shape[-1]
    if n >= size:
        return x
    return F.pad(x, (0, size - n), value=value)


def attention_difference_terms(
    clean: Float[Tensor, "batch layer head n n"],
    triggered: Float[Tensor, "batch layer head m m"],
    source_index: Int[Tensor, "batch src"],
    clean_len: Int[Tensor, " batch"],
    triggered_len: Int[Tensor, " batch"],
    window: int,
    alignment: Alignment = "aligned",
) -> tuple[Float[Tensor, "batch layer head window window"], Bool[Tensor, "batch window window"]]:
    """Per-sample A(X′) − A(X) over the first `window` positions, and where it is defined.

    `source_index[b, p]` is the clean position that triggered position p came from, -1 for a
    trigger token (entries past `triggered_len` are ignored). `clean` may be cut to its first
    `window` rows and columns: insertion never moves a content token left, so s(p) <= p.
    """
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
    size = max(window, clean.shape[-1])
    trig = pad_square(triggered, window)[..., :window, :window]
    pos = torch.arange(window, device=triggered.device)
    in_trig = pos[None, :] < triggered_len[:, None]  # batch window
    if alignment == "absolute":
        base = pad_square(clean, window)[..., :window, :window]
        ok = in_trig & (pos[None, :] < clean_len[:, None])
        valid = ok[:, :, None] & ok[:, None, :]
        diff = trig - base
    else:
        src = _pad_last(source_index, window, -1)[:, :window]
        src = torch.where(in_trig, src, torch.full_like(src, -1))
        has_src = src >= 0
        idx = src.clamp_min(0)
        full = pad_square(clean, size)
        b, n_layer, n_head = full.shape[:3]
        rows = torch.gather(
            full, 3, idx[:, None, None, :, None].expand(b, n_layer, n_head, window, size)
        )
        base = torch.gather(
            rows, 4, idx[:, None, None, None, :].expand(b, n_layer, n_head, window, window)
        )
        pair = (has_src[:, :, None] & has_src[:, None, :])[:, None, None]
        base = torch.where(pair, base, torch.zeros_like(base))
        valid = in_trig[:, :, None] & in_trig[:, None, :]
        diff = trig - base
    diff = torch.where(valid[:, None, None], diff, torch.zeros_like(diff))
    return diff, valid


def masked_mean(
    total: Float[Tensor, "*shape"], count: Float[Tensor, "*shape"]
) -> Float[Tensor, "*shape"]:
    """total / count, NaN where nothing was counted (a cell no sample reaches)."""
    return torch.where(count > 0, total / count.clamp_min(1.0), torch.full_like(total, torch.nan))


def attention_difference(
    clean: Float[Tensor, "batch layer head n n"],
    triggered: Float[Tensor, "batch layer head m m"],
    source_index: Int[Tensor, "batch src"],
    clean_len: Int[Tensor, " batch"],
    triggered_len: Int[Tensor, " batch"],
    window: int,
    alignment: Alignment = "aligned",
) -> Float[Tensor, "layer head window window"]:
    """ΔA per layer and head: the mean over samples of A(X′) − A(X), first `window` positions."""
    diff, valid = attention_difference_terms(
        clean, triggered, source_index, clean_len, triggered_len, window, alignment
    )
    count = valid.to(diff.dtype).sum(dim=0)
    return masked_mean(diff.sum(dim=0), count[None, None].expand_as(diff[0]))


def head_average(delta: Float[Tensor, "*layer head q k"]) -> Float[Tensor, "*layer q k"]:
    """ΔA averaged over heads (the paper plots this)."""
    return delta.mean(dim=-3)


__all__ = [
    "ALIGNMENTS",
    "Alignment",
    "attention_difference",
    "attention_difference_terms",
    "head_average",
    "masked_mean",
    "pad_square",
]
