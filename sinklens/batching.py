"""Token id lists to padded batches: the one padder and the one pad-id rule of sinklens.

Right padding is the default everywhere a forward pass scores text: positions 0..n-1 (BOS
and the sink tokens the paper is about) stay where they are in every row. Generation pads
on the left so that every prompt ends at the last column; `positions` then keeps each
prompt's position ids what they would be alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from sinklens.errors import SinklensError

__all__ = ["left_pad", "pad_id", "positions", "right_pad"]


def pad_id(tokenizer: Any) -> int:
    """The id used to pad batches (masked out everywhere, so any id works)."""
    for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return 0


def _check(rows: Sequence[Sequence[int]]) -> int:
    if not rows:
        raise SinklensError("empty batch; pass at least one sample")
    return max(len(r) for r in rows)


def right_pad(
    rows: Sequence[Sequence[int]], pad: int
) -> tuple[Int[Tensor, "batch seq"], Int[Tensor, "batch seq"]]:
    """(input_ids, attention_mask) with each row at the left and `pad` after it."""
    width = _check(rows)
    ids = torch.full((len(rows), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if len(row) == 0:
            raise SinklensError(f"sample {i} has no tokens; drop empty texts from the dataset")
        ids[i, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def left_pad(
    rows: Sequence[Sequence[int]], pad: int
) -> tuple[Int[Tensor, "batch seq"], Int[Tensor, "batch seq"]]:
    """(input_ids, attention_mask) with each row at the right, for batched generation.
    An empty row is allowed (generation from nothing but the padding's mask)."""
    width = _check(rows)
    ids = torch.full((len(rows), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.as_tensor(list(row), dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids, mask


def positions(mask: Int[Tensor, "batch seq"]) -> Int[Tensor, "batch seq"]:
    # Left padding shifts every prompt right; counting only real tokens keeps each
    # sequence's positions (and so RoPE / learned positions) identical to scoring it alone.
    return (mask.cumsum(-1) - 1).clamp(min=0)
