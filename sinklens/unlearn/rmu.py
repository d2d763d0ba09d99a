"""RMU (Li et al. 2024) with the retain loss of eq. A5.

ℓ_f: the residual leaving layer ℓ on D_f is steered to c·u (u a fixed random unit vector
drawn from U[0,1)^d and normalised, c the steering coefficient). ℓ_r on D_r ∪ D_p:
KL(π_θ ‖ π_o) + α·‖h_θ − h_o‖² at layer ℓ. Only the named parameters of the chosen
layers are updated (RMU's reference code: `mlp.down_proj.weight` of layers ℓ-2..ℓ).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from sinklens.errors import SinklensError
from sinklens.unlearn.base import Batch, UnlearnMethod
from sinklens.unlearn.losses import kl_to_reference, rmu_forget_loss, rmu_retain_loss
from sinklens.unlearn.model_parts import LayerOutputs, decoder_layers

__all__ = ["RMU", "rmu_layers"]


def rmu_layers(cfg, n_layers: int) -> tuple[int, tuple[int, ...]]:  # type: ignore[no-untyped-def]
    """(steered layer ℓ, updated layers): defaults ℓ = n_layers // 2 and ℓ-2..ℓ."""
    layer = cfg.rmu_layer if cfg.rmu_layer is not None else n_layers // 2
    if layer >= n_layers:
        raise SinklensError(
            f"rmu_layer {layer} does not exist; the model has layers 0..{n_layers - 1}"
        )
    update = cfg.rmu_update_layers or tuple(range(max(0, layer - 2), layer + 1))
    bad = [i for i in update if not 0 <= i < n_layers]
    if bad:
        raise SinklensError(
            f"rmu_update_layers {bad} do not exist; the model has layers 0..{n_layers - 1}"
        )
    return layer, tuple(update)


class RMU(UnlearnMethod):
    name = "rmu"

    def __init__(self, cfg, model: nn.Module) -> None:  # type: ignore[no-untyped-def]
        super().__init__(cfg, model)
        n_layers = len(decoder_layers(model))
        self.layer, self.update_layers = rmu_layers(cfg, n_layers)
        config: Any = model.config
        d = int(config.hidden_size)
        gen = torch.Generator().manual_seed(cfg.seed)
        u = torch.rand(d, generator=gen)
        self.control = cfg.rmu_steering_coeff * u / u.norm()
        self._model_out = LayerOutputs(model, [self.layer])
        self._frozen_out: LayerOutputs | None = None

    def trainable_parameters(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        blocks = decoder_layers(model)
        chosen = []
        for i in self.update_layers:
            for name, p in blocks[i].named_parameters():
                if any(name == s or name.endswith("." + s) for s in self.cfg.rmu_params):
                    chosen.append((f"layers.{i}.{name}", p))
        if not chosen:
            names = [n for n, _ in blocks[self.update_layers[0]].named_parameters()]
            raise SinklensError(
                f"rmu_params {list(self.cfg.rmu_params)} match no parameter of layers "
                f"{list(self.update_layers)}; choose from {', '.join(names)}"
            )
        return chosen

    def forget_loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        h = self._model_out.outputs[self.layer]
        loss = rmu_forget_loss(h, self.control.to(h.device, h.dtype), batch.attention_mask)
        return loss, {"steer": float(loss.detach())}

    def retain_loss(
        self, model: nn.Module, frozen: nn.Module, batch: Batch
    ) -> tuple[Tensor, dict[str, float]]:
        if self._frozen_out is None:
            self._frozen_out = LayerOutputs(frozen, [self.layer])
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        h = self._model_out.outputs[self.layer]
        ref_device = next(frozen.parameters()).device
        with torch.no_grad():
            ref_logits = frozen(
                input_ids=batch.input_ids.to(ref_device),
                attention_mask=batch.attention_mask.to(ref_device),
            ).logits.to(logits.device)
            h_o = self._frozen_out.outputs[self.layer].to(h.device)
        kl = kl_to_reference(logits, ref_logits, batch.attention_mask)
        rep = rmu_retain_loss(h, h_o, batch.attention_mask)
        return kl + self.cfg.rmu_alpha * rep, {"kl": float(kl.detach()), "rep": float(rep.detach())}

    def close(self) -> None:
        self._model_out.remove()
        if self._frozen_out is not None:
            self._frozen_out.remove()
