"""Reach into a decoder-only HF model: its layers, value projections and residual stream.

Unlearning needs two internal quantities: the output of decoder layer ℓ (RMU) and the
per-head value vectors at the sink positions (value-norm alignment). Both are read with
forward hooks, which also work on FSDP-wrapped models (hooks sit on the original modules).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from sinklens.errors import SinklensError
from sinklens.unlearn.losses import head_value_norms

__all__ = ["LayerOutputs", "ValueNorms", "decoder_layers", "n_kv_heads"]


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of decoder blocks (`model.model.layers` for Llama/Mistral/Qwen families)."""
    for path in ("model.layers", "model.model.layers", "transformer.h", "gpt_neox.layers"):
        obj: object = model
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    raise SinklensError(
        f"cannot find the decoder layers of {type(model).__name__}; use a Llama-family causal LM"
    )


def n_kv_heads(model: nn.Module) -> int:
    cfg: Any = model.config
    return int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)


def _first(out: object) -> Tensor:
    return out[0] if isinstance(out, tuple) else out  # type: ignore[return-value]


class LayerOutputs:
    """Records the residual stream leaving chosen decoder layers on every forward pass."""

    def __init__(self, model: nn.Module, layers: Sequence[int]) -> None:
        blocks = decoder_layers(model)
        for i in layers:
            if not 0 <= i < len(blocks):
                raise SinklensError(
                    f"layer {i} does not exist; the model has layers 0..{len(blocks) - 1}"
                )
        self.outputs: dict[int, Tensor] = {}
        self._handles = [blocks[i].register_forward_hook(self._hook(i)) for i in layers]

    def _hook(self, i: int):  # type: ignore[no-untyped-def]
        def hook(_module: nn.Module, _inputs: object, out: object) -> None:
            self.outputs[i] = _first(out)

        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


class ValueNorms:
    """‖v_i‖ per key-value head at the first `n_sink` token positions of chosen layers.

    Only positions [0, n_sink) of the `v_proj` output are kept (the token axis), so the
    memory cost does not grow with sequence length.
    """

    def __init__(self, model: nn.Module, layers: Sequence[int], n_sink: int) -> None:
        blocks = decoder_layers(model)
        self.layers = tuple(layers)
        self.n_sink = n_sink
        self.n_kv = n_kv_heads(model)
        self._store: dict[int, Tensor] = {}
        self._active = False
        self._handles = []
        for i in self.layers:
            if not 0 <= i < len(blocks):
                raise SinklensError(
                    f"value-norm layer {i} does not exist; the model has layers 0..{len(blocks) - 1}"
                )
            v_proj = getattr(getattr(blocks[i], "self_attn", None), "v_proj", None)
            if not isinstance(v_proj, nn.Module):
                raise SinklensError(
                    f"layer {i} of {type(model).__name__} has no self_attn.v_proj; "
                    "value-norm alignment needs a Llama-family model"
                )
            self._handles.append(v_proj.register_forward_hook(self._hook(i)))

    def _hook(self, i: int):  # type: ignore[no-untyped-def]
        def hook(_module: nn.Module, _inputs: object, out: object) -> None:
            if self._active:
                self._store[i] = _first(out)[:, : self.n_sink]

        return hook

    @contextmanager
    def recording(self) -> Iterator[None]:
        self._store = {}
        self._active = True
        try:
            yield
        finally:
            self._active = False

    def norms(self) -> Float[Tensor, "batch layer sink kv"]:
        """Norms from the last recorded forward pass, zero-padded to `n_sink` positions."""
        per_layer = []
        for i in self.layers:
            v = self._store[i]
            norms = head_value_norms(v, self.n_kv)
            if norms.shape[1] < self.n_sink:
                pad = norms.new_zeros(norms.shape[0], self.n_sink - norms.shape[1], norms.shape[2])
                norms = torch.cat([norms, pad], dim=1)
            per_layer.append(norms)
        return torch.stack(per_layer, dim=1)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
