"""One loaded checkpoint: its HF model, its back-end wrapper, and what it is.

`LoadedModel.forward` runs a batch through the checkpoint's back end (`sinklens.models.
backends`) and hands each requested activation to a callback as it is produced.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sinklens.errors import SinklensError
from sinklens.models.architectures import Architecture, split_values

__all__ = [
    "KINDS",
    "ActivationFn",
    "LoadedModel",
    "check_layers",
    "parse_dtype",
    "resolve_layer",
]

KINDS: tuple[str, ...] = ("value", "head_out", "pattern")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# on_activation(kind, layer, tensor): pattern [b, head, q, k], value [b, pos, kv, d_head],
# head_out [b, pos, head, d_head] (the attention output before the output projection).
ActivationFn = Callable[[str, int, Tensor], None]


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """`float32`, `bfloat16` or `float16` (or a torch dtype) as a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.strip().lower()]
    except KeyError:
        raise SinklensError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}") from None


def check_layers(layers: Sequence[int] | int, n_layers: int) -> None:
    """Raise a one-line error listing the valid range if any layer index is out of range."""
    items = [layers] if isinstance(layers, int) else list(layers)
    bad = [lay for lay in items if not 0 <= int(lay) < n_layers]
    if bad:
        raise SinklensError(
            f"layer index {bad[0]} is out of range; this model has {n_layers} layers, "
            f"use 0..{n_layers - 1} (or -1 for the last)"
        )


def resolve_layer(layer: int, n_layers: int) -> int:
    """A layer index with Python-style negatives (-1 = last), range-checked."""
    resolved = layer + n_layers if layer < 0 else layer
    if not 0 <= resolved < n_layers:
        check_layers(layer, n_layers)  # raises, naming the index as it was given
    return resolved


@dataclass
class LoadedModel:
    """One checkpoint, its back-end wrapper, and how to read activations from it."""

    role: str
    path: Path
    backend: str  # a name in sinklens.models.BACKENDS
    hf_model: Any  # a PreTrainedModel; with the bridge back end its modules are wrapped in place
    wrapper: Any
    tokenizer: Any
    fingerprint: str
    architecture: dict[str, int]
    dtype: torch.dtype
    # Where the family keeps its attention parts; None only for a family the bridge boots
    # but the table does not know (the bridge finds the parts itself).
    parts: Architecture | None = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        return self.hf_model.get_input_embeddings().weight.device

    @property
    def n_layers(self) -> int:
        return self.architecture["n_layers"]

    def forward(
        self,
        input_ids: Int[Tensor, "batch pos"],
        attention_mask: Int[Tensor, "batch pos"],
        *,
        layers: Sequence[int] = (),
        kinds: Sequence[str] = (),
        on_activation: ActivationFn | None = None,
        need_logits: bool = True,
    ) -> Float[Tensor, "batch pos vocab"] | None:
        """Run one batch; hand each requested layer's activations to `on_activation` as
        they are produced (so at most one layer's pattern is alive at a time)."""
        from sinklens.models.backends import backend_named

        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown activation kinds {sorted(unknown)}; use {KINDS}")
        check_layers(layers, self.n_layers)
        callback = on_activation or (lambda kind, layer, t: None)
        with torch.inference_mode():
            return backend_named(self.backend).run(
                self,
                input_ids.to(self.device),
                attention_mask.to(self.device),
                layers,
                kinds,
                callback,
                need_logits,
            )

    def values(self, output: Tensor) -> Float[Tensor, "batch pos kv d_head"]:
        """Per-head values from the output of the family's value module."""
        arch = self.architecture
        return split_values(
            output,
            self.parts.value_layout if self.parts is not None else "separate",
            n_heads=arch["n_heads"],
            n_kv_heads=arch["n_kv_heads"],
            d_head=arch["d_head"],
        )

    def heads(self, output: Tensor) -> Float[Tensor, "batch pos head d_head"]:
        """The attention output split by query head."""
        arch = self.architecture
        return output.reshape(*output.shape[:2], arch["n_heads"], arch["d_head"])
