"""Reach into a decoder-only HF model: its layers, value projections and residual stream.

Unlearning needs two internal quantities: the output of decoder layer ℓ (RMU) and the
per-head value vectors at the sink positions (value-norm alignment). Both are read with
forward hooks, which also work on FSDP-wrapped models (hooks sit on the original modules).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from jaxtyping import Float
from torch import Tensor, nn

from sinklens.checkpoint import model_architecture
from sinklens.errors import SinklensError
from sinklens.models.architectures import architecture_of, decoder_layers, get_module, split_values
from sinklens.unlearn.losses import head_value_norms

__all__ = ["LayerOutputs", "ValueNorms", "decoder_layers"]


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

    Only positions [0, n_sink) of the value projection's output are kept (the token axis),
    so the memory cost does not grow with sequence length. The projection is the family's
    entry in `sinklens.models.ARCHITECTURES` (a fused one is split first).
    """

    def __init__(self, model: nn.Module, layers: Sequence[int], n_sink: int) -> None:
        blocks = decoder_layers(model)
        parts = architecture_of(model)
        self.layers = tuple(layers)
        self.n_sink = n_sink
        arch = model_architecture(model.config)
        self.n_kv = arch["n_kv_heads"]
        self._layout = parts.value_layout
        self._dims = {k: arch[k] for k in ("n_heads", "n_kv_heads", "d_head")}
        self._store: dict[int, Tensor] = {}
        self._active = False
        self._handles = []
        for i in self.layers:
            if not 0 <= i < len(blocks):
                raise SinklensError(
                    f"value-norm layer {i} does not exist; the model has layers 0..{len(blocks) - 1}"
                )
            value = get_module(blocks[i], f"{parts.attn}.{parts.value}")
            self._handles.append(value.register_forward_hook(self._hook(i)))

    def _hook(self, i: int):  # type: ignore[no-untyped-def]
        def hook(_module: nn.Module, _inputs: object, out: object) -> None:
            if self._active:
                self._store[i] = self._values(_first(out)[:, : self.n_sink])

        return hook

    def _values(self, out: Tensor) -> Tensor:
        """A fused projection's values as [batch, pos, kv * d_head], like a v_proj's output."""
        if self._layout == "separate":
            return out
        v = split_values(out, self._layout, **self._dims)
        return v.reshape(*v.shape[:2], -1)

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
