"""What a capture runs on: plain token sequences, or clean X / triggered X′ pairs
(`CaptureData`), cut into right-padded batches with an attention mask (`Batch`). A pair's
batch runs twice, clean first; the triggered batch records where each position came from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from jaxtyping import Bool, Int
from torch import Tensor

from sinklens.batching import right_pad
from sinklens.data.triggers import TriggeredSample

__all__ = ["Batch", "CaptureData", "PairedSample"]


@dataclass
class Batch:
    """One right-padded batch; for the triggered phase, where each position came from."""

    phase: str  # "single", "clean" or "triggered"
    input_ids: Int[Tensor, "batch pos"]
    mask: Int[Tensor, "batch pos"]
    lengths: Int[Tensor, " batch"]
    source_index: Int[Tensor, "batch pos"] | None = None
    clean_lengths: Int[Tensor, " batch"] | None = None

    @property
    def valid(self) -> Bool[Tensor, "batch pos"]:
        return self.mask.bool()


@dataclass(frozen=True)
class PairedSample:
    """A clean sample X and its triggered version X′."""

    clean: tuple[int, ...]
    triggered: TriggeredSample


@dataclass
class CaptureData:
    """What to run: plain token sequences, or clean/triggered pairs."""

    single: list[tuple[int, ...]] = field(default_factory=list)
    pairs: list[PairedSample] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pairs) if self.pairs else len(self.single)

    @property
    def paired(self) -> bool:
        return bool(self.pairs)

    @property
    def longest(self) -> int:
        """Tokens in the longest sequence (a triggered one counts with its trigger)."""
        if self.pairs:
            return max((len(p.triggered.input_ids) for p in self.pairs), default=0)
        return max((len(s) for s in self.single), default=0)

    def content_hash(self) -> str:
        """sha256 of the exact token ids (and trigger bookkeeping) the capture runs on."""
        digest = hashlib.sha256()
        if self.pairs:
            for p in self.pairs:
                row = [p.clean, p.triggered.input_ids, p.triggered.source_index]
                digest.update(json.dumps(row).encode())
        else:
            for s in self.single:
                digest.update(json.dumps(list(s)).encode())
        return digest.hexdigest()


def _batches(data: CaptureData, start: int, batch_size: int, pad: int) -> Any:
    for lo in range(start, len(data), batch_size):
        hi = min(lo + batch_size, len(data))
        if data.paired:
            chunk = data.pairs[lo:hi]
            c_ids, c_mask = right_pad([p.clean for p in chunk], pad)
            t_ids, t_mask = right_pad([p.triggered.input_ids for p in chunk], pad)
            src, _ = right_pad([[s + 1 for s in p.triggered.source_index] for p in chunk], 0)
            c_len = c_mask.sum(dim=1)
            yield (
                hi,
                [
                    Batch("clean", c_ids, c_mask, c_len),
                    Batch("triggered", t_ids, t_mask, t_mask.sum(dim=1), src - 1, c_len),
                ],
            )
        else:
            ids, mask = right_pad(data.single[lo:hi], pad)
            yield hi, [Batch("single", ids, mask, mask.sum(dim=1))]
