"""Back ends: how a checkpoint is wrapped and how a batch is run through it with hooks.

* `bridge` (default): TransformerLens 4's `TransformerBridge.boot_transformers(path,
  hf_model=...)`. It keeps the raw HF weights (no LayerNorm folding or centring) and wraps
  the HF modules *in place*, so a bridged model is not a plain HF model any more.
* `nnsight`: `nnsight.LanguageModel` around the same HF model; activations are read from
  module inputs/outputs (the value projection, the output projection's input, the attention
  module's weights output), never from `.source` operation names, which change between
  transformers releases.
* `hf`: the plain HF model with PyTorch forward hooks.

The hf and nnsight back ends find a family's parts in `sinklens.models.architectures`. Each
back end is a class registered under its name next to its definition.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from sinklens.errors import SinklensError
from sinklens.models.architectures import get_module

if TYPE_CHECKING:
    from sinklens.models.loaded import ActivationFn, LoadedModel

__all__ = ["BACKENDS", "Backend", "backend_named", "register_backend"]

_REGISTRY: dict[str, Backend] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Class decorator: make a back end available under `cls.name`."""
    _REGISTRY[cls.name] = cls()
    return cls


def backend_named(name: str) -> Backend:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise SinklensError(
            f"unknown back end {name!r}; use one of {', '.join(_REGISTRY)}"
        ) from None


class Backend(ABC):
    """Wraps an HF model and runs batches through the wrapper with activation hooks."""

    name: ClassVar[str]
    # Whether the back end reads the family's parts from the architecture table itself (the
    # bridge finds them on its own and uses the table only to reshape, where it knows one).
    needs_parts: ClassVar[bool] = True

    def wrap(
        self,
        hf_model: Any,
        folder: Path,
        tokenizer: Any,
        *,
        device: str | None,
        dtype: torch.dtype,
    ) -> Any:
        return hf_model

    @abstractmethod
    def run(
        self,
        model: LoadedModel,
        input_ids: Tensor,
        attention_mask: Tensor,
        layers: Sequence[int],
        kinds: Sequence[str],
        callback: ActivationFn,
        need_logits: bool,
    ) -> Tensor | None:
        """Logits of the batch (None where `need_logits` is false and the back end can skip
        them), handing each (kind, layer) activation to `callback` as it is produced."""


@register_backend
class BridgeBackend(Backend):
    name = "bridge"
    needs_parts = False
    # The component's own hook points; `attn.hook_v` / `attn.hook_z` are aliases of the
    # first two (docs/gotchas.md).
    hook_names: ClassVar[dict[str, str]] = {
        "pattern": "blocks.{}.attn.hook_pattern",
        "value": "blocks.{}.attn.v.hook_out",
        "head_out": "blocks.{}.attn.o.hook_in",
    }

    def wrap(
        self, hf_model: Any, folder: Path, tokenizer: Any, *, device: str | None, dtype: torch.dtype
    ) -> Any:
        from transformer_lens.model_bridge import TransformerBridge

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return TransformerBridge.boot_transformers(
                str(folder), hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype
            )

    def run(self, model, input_ids, attention_mask, layers, kinds, callback, need_logits):
        reshape: dict[str, Callable[[Tensor], Tensor]] = {
            "value": model.values,
            "head_out": model.heads,
            "pattern": lambda t: t,
        }

        def hook_for(kind: str, layer: int) -> Callable[[Tensor, Any], None]:
            def hook(t: Tensor, hook: Any) -> None:
                callback(kind, layer, t if t.dim() == 4 else reshape[kind](t))

            return hook

        hooks = [
            (self.hook_names[kind].format(layer), hook_for(kind, layer))
            for layer in layers
            for kind in kinds
        ]
        return model.wrapper.run_with_hooks(
            input_ids, attention_mask=attention_mask, fwd_hooks=hooks
        )


@register_backend
class NNsightBackend(Backend):
    name = "nnsight"

    def wrap(
        self, hf_model: Any, folder: Path, tokenizer: Any, *, device: str | None, dtype: torch.dtype
    ) -> Any:
        from nnsight import LanguageModel

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # LanguageModel's deprecation notice
            return LanguageModel(hf_model, tokenizer=tokenizer)

    def run(self, model, input_ids, attention_mask, layers, kinds, callback, need_logits):
        parts = model.parts
        assert parts is not None, "the nnsight back end is only loaded with an architecture"
        lm = model.wrapper
        logits = None
        # Inside a trace the body runs alongside the model on real tensors, so reducing
        # here keeps one layer alive at a time; modules must be visited in execution order.
        with lm.trace({"input_ids": input_ids, "attention_mask": attention_mask}):
            for layer in sorted(layers):
                attn = get_module(lm, f"{parts.layers}.{layer}.{parts.attn}")
                if "value" in kinds:
                    callback("value", layer, model.values(get_module(attn, parts.value).output))
                if "head_out" in kinds:
                    callback("head_out", layer, model.heads(get_module(attn, parts.out_proj).input))
                if "pattern" in kinds:
                    callback("pattern", layer, attn.output[1])
            if need_logits:
                logits = lm.output.logits.save()
        return logits


@register_backend
class HFBackend(Backend):
    name = "hf"

    def run(self, model, input_ids, attention_mask, layers, kinds, callback, need_logits):
        parts = model.parts
        assert parts is not None, "the hf back end is only loaded with an architecture"
        handles = []
        try:
            for layer in layers:
                attn = get_module(model.hf_model, f"{parts.layers}.{layer}.{parts.attn}")
                if "value" in kinds:
                    handles.append(
                        get_module(attn, parts.value).register_forward_hook(
                            lambda m, a, out, layer=layer: callback(
                                "value", layer, model.values(out)
                            )
                        )
                    )
                if "head_out" in kinds:
                    handles.append(
                        get_module(attn, parts.out_proj).register_forward_pre_hook(
                            lambda m, args, layer=layer: callback(
                                "head_out", layer, model.heads(args[0])
                            )
                        )
                    )
                if "pattern" in kinds:
                    handles.append(
                        attn.register_forward_hook(
                            lambda m, a, out, layer=layer: callback("pattern", layer, out[1])
                        )
                    )
            return model.hf_model(input_ids=input_ids, attention_mask=attention_mask).logits
        finally:
            for handle in handles:
                handle.remove()


BACKENDS: tuple[str, ...] = tuple(_REGISTRY)
