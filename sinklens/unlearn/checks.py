"""Checks an unlearning run makes before it trains: a dtype that can train on this device,
and a value-norm reference θ_u that is comparable with the base model and looks unlearned."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from sinklens.errors import SinklensError
from sinklens.unlearn.base import collate
from sinklens.unlearn.config import UnlearnConfig
from sinklens.unlearn.data import Sample


def _check_dtype(cfg: UnlearnConfig) -> None:
    """float16 training on a CPU gives NaN weights after the first step whatever the
    learning rate: AdamW keeps its state in the parameters' dtype, where the squared
    gradients underflow to 0 and its eps (1e-8) is 0 too, so updates divide 0 by 0."""
    if cfg.dtype == "float16" and not torch.cuda.is_available():
        raise SinklensError(
            "float16 training is not supported on CPU (AdamW's state underflows in float16 "
            "and every weight becomes NaN after step 0, whatever --lr); use --dtype bfloat16 "
            "(same memory) or float32"
        )


def _check_reference(model_path: Path, reference: str) -> None:
    """The value-norm reference θ_u enters the loss beside the trained model: validate it
    like a model set (tokenizer by full definition, architecture) before any work."""
    from sinklens.comparable import ModelSpec, check_comparable

    check_comparable(
        [
            ModelSpec.of(model_path, "base model"),
            ModelSpec.of(reference, "value-norm reference"),
        ]
    )


# θ_u's forget loss must exceed θ_o's by at least this (nats per token) to look unlearned.
REFERENCE_MARGIN_NATS = 0.05


@torch.no_grad()
def _forget_loss(
    model: nn.Module, samples: tuple[Sample, ...], pad_id: int, batch_size: int, limit: int = 16
) -> float:
    """Mean next-token loss (nats) of `model` on the first `limit` forget samples."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    chosen = samples[:limit]
    for start in range(0, len(chosen), batch_size):
        idx = list(range(start, min(start + batch_size, len(chosen))))
        batch = collate([chosen[i] for i in idx], idx, pad_id)
        ids = batch.input_ids.to(device)
        mask = batch.attention_mask.to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        nll = -logp.gather(-1, ids[:, 1:, None])[..., 0]
        valid = mask[:, 1:].bool()
        total += float(nll[valid].sum())
        count += int(valid.sum())
    return total / max(count, 1)


def _check_reference_unlearned(reference: str, ref_loss: float, base_loss: float) -> None:
    if ref_loss < base_loss + REFERENCE_MARGIN_NATS:
        warnings.warn(
            f"the value-norm reference {reference} does not look unlearned: its loss on the "
            f"forget texts ({ref_loss:.3f} nats/token) is not above the base model's "
            f"({base_loss:.3f}); pass the normally unlearned θ_u (a run without --backdoor)",
            stacklevel=3,
        )
