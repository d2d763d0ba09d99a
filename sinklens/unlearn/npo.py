"""NPO (Zhang et al. 2024) with the KL retain loss of eq. A2.

ℓ_f = -(2/β) log σ(-β log(π_θ(y|x)/π_ref(y|x))) on D_f, with π_ref the original model;
ℓ_r = KL(π_θ ‖ π_o) on D_r ∪ D_p. log π_ref(y|x) of every forget sample is computed once
before training, so the reference is needed on D_f only then.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sinklens.unlearn.base import Batch, UnlearnMethod, collate, frozen_forward
from sinklens.unlearn.data import UnlearnData
from sinklens.unlearn.losses import (
    kl_to_reference,
    npo_loss,
    npo_raw_logit_loss,
    raw_logit_score,
    sequence_logprob,
)

__all__ = ["NPO"]


class NPO(UnlearnMethod):
    name = "npo"

    def __init__(self, cfg, model: nn.Module) -> None:  # type: ignore[no-untyped-def]
        super().__init__(cfg, model)
        self.ref_scores: Tensor | None = None

    def _score(self, logits: Tensor, batch: Batch) -> Tensor:
        fn = raw_logit_score if self.cfg.npo_on_raw_logits else sequence_logprob
        return fn(logits, batch.input_ids, batch.attention_mask)

    def prepare(self, frozen: nn.Module, data: UnlearnData, pad_id: int, batch_size: int) -> None:
        device = next(frozen.parameters()).device
        scores = []
        for start in range(0, len(data.forget), batch_size):
            idx = list(range(start, min(start + batch_size, len(data.forget))))
            batch = collate([data.forget[i] for i in idx], idx, pad_id).to(device)
            logits = frozen_forward(frozen, batch, device)
            scores.append(self._score(logits, batch).cpu())
        self.ref_scores = torch.cat(scores)

    def forget_loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        assert self.ref_scores is not None, "prepare() must run before training"
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        score = self._score(logits, batch)
        ref = self.ref_scores[list(batch.index)].to(score.device)
        fn = npo_raw_logit_loss if self.cfg.npo_on_raw_logits else npo_loss
        loss = fn(score, ref, self.cfg.beta)
        return loss, {
            "npo": float(loss.detach()),
            "log_ratio": float((score - ref).detach().mean()),
        }

    def retain_loss(
        self, model: nn.Module, frozen: nn.Module, batch: Batch
    ) -> tuple[Tensor, dict[str, float]]:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        ref = frozen_forward(frozen, batch, logits.device)
        kl = kl_to_reference(logits, ref, batch.attention_mask)
        return kl, {"kl": float(kl.detach())}
