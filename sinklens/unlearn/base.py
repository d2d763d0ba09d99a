"""What every unlearning method provides to the trainer, and the batch it works on."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from jaxtyping import Int
from torch import Tensor, nn

from sinklens.batching import right_pad
from sinklens.unlearn.config import UnlearnConfig
from sinklens.unlearn.data import Sample, UnlearnData

__all__ = ["Batch", "UnlearnMethod", "collate"]


@dataclass(frozen=True)
class Batch:
    """Right-padded token ids; `index` points into the set the samples came from."""

    input_ids: Int[Tensor, "batch seq"]
    attention_mask: Int[Tensor, "batch seq"]
    index: tuple[int, ...]

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.index)


def collate(samples: Sequence[Sample], index: Sequence[int], pad_id: int) -> Batch:
    # Right padding keeps positions 0..n-1 (BOS and the sink tokens) identical across samples.
    ids, mask = right_pad([s.input_ids for s in samples], pad_id)
    return Batch(ids, mask, tuple(index))


class UnlearnMethod(ABC):
    """A forget loss ℓ_f on D_f and a retain loss ℓ_r on D_r ∪ D_p (eq. 4).

    `frozen` is the original model θ_o (no gradients); it may live on another device.
    """

    name: ClassVar[str]

    def __init__(self, cfg: UnlearnConfig, model: nn.Module) -> None:
        self.cfg = cfg

    def trainable_parameters(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        """Parameters the optimiser updates (all of them unless the method says otherwise)."""
        return list(model.named_parameters())

    def prepare(self, frozen: nn.Module, data: UnlearnData, pad_id: int, batch_size: int) -> None:
        """Precompute what only depends on θ_o and the data (called once, before training)."""
        return None

    @abstractmethod
    def forget_loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]: ...

    @abstractmethod
    def retain_loss(
        self, model: nn.Module, frozen: nn.Module, batch: Batch
    ) -> tuple[Tensor, dict[str, float]]: ...

    def close(self) -> None:
        """Remove hooks; called once training ends."""
        return None


def frozen_forward(frozen: nn.Module, batch: Batch, device: torch.device) -> Tensor:
    """Logits of the frozen model on `batch`, brought back to `device`."""
    ref_device = next(frozen.parameters()).device
    with torch.no_grad():
        out = frozen(
            input_ids=batch.input_ids.to(ref_device),
            attention_mask=batch.attention_mask.to(ref_device),
        )
    return out.logits.to(device)
