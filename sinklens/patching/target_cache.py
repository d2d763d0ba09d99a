"""What batched patching reuses from the unpatched target run (`cache_target`).

Its logits and the residual entering each block always; each block's head outputs `z` and
the residual after its attention `mid` where the model exposes them and each block was
checked to be `mid = resid + o(z)`, `out = mid + mlp(ln2(mid))` (Llama, GPT-2), so a
patched layer need not rerun its attention; each layer's keys and values where a forward
over them reproduces the full run, so the positions before a patch need not rerun at all
(`kv_pays_off` says when that extra forward pays).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sinklens.patching.core import (
    _MID,
    _RESID,
    _Z,
    _capture,
    _device,
    cache_run,
    forward,
    model_dims,
)
from sinklens.patching.corruptions import PatchingBatch

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["TargetCache", "cache_target", "kv_pays_off"]


@dataclass(frozen=True)
class TargetCache:
    """What batched patching reuses from the unpatched target run: its logits, the residual
    entering each block and, when the model exposes them, each layer's keys and values.
    `mid` (the residual after each block's attention) is set only where the model was
    checked to decompose as `mid = resid + o(z)`, `next resid = mid + mlp(ln2(mid))`."""

    logits: Float[Tensor, "batch seq vocab"]
    resid: list[Float[Tensor, "batch seq d_model"]]
    kv: list[tuple[Tensor, Tensor]] | None
    z: list[Float[Tensor, "batch seq head d_head"]] | None = None
    mid: list[Float[Tensor, "batch seq d_model"]] | None = None


def _attn_out(model: TransformerBridge, layer: int, z: Tensor) -> Tensor:
    return model.blocks[layer].attn.o(z.flatten(-2))


def _block_tail(model: TransformerBridge, layer: int, mid: Tensor) -> Tensor:
    """The residual leaving block `layer`, from the residual after its attention."""
    block = model.blocks[layer]
    return mid + block.mlp(block.ln2(mid))


def _unembed(model: TransformerBridge, resid: Tensor) -> Tensor:
    return model.unembed(model.ln_final(resid))


def _decomposes(
    model: TransformerBridge,
    logits: Tensor,
    z: Sequence[Tensor],
    resid: Sequence[Tensor],
    mid: Sequence[Tensor],
) -> bool:
    """Whether recomputing each block from its parts reproduces the target run (on the
    last position only, to keep the check cheap). Blocks that mix attention and MLP
    differently (parallel attention, extra norms) fail it, and patch by forwards."""
    n_layers = len(z)
    last = slice(-1, None)
    try:
        for layer in range(n_layers):
            got_mid = resid[layer][:, last] + _attn_out(model, layer, z[layer][:, last])
            post = _block_tail(model, layer, mid[layer][:, last])
            want = resid[layer + 1][:, last] if layer + 1 < n_layers else None
            if want is None:
                post, want = _unembed(model, post), logits[:, last]
            if not (
                torch.allclose(got_mid, mid[layer][:, last], rtol=1e-4, atol=1e-4)
                and torch.allclose(post, want, rtol=1e-4, atol=1e-4)
            ):
                return False
    except (AttributeError, TypeError, RuntimeError, IndexError):
        return False
    return True


@torch.no_grad()
def cache_target(
    model: TransformerBridge,
    ids: Int[Tensor, "batch seq"],
    mask: Int[Tensor, "batch seq"],
    *,
    with_kv: bool = True,
) -> tuple[TargetCache, list[Float[Tensor, "batch seq head d_head"]]]:
    """The target run's `TargetCache`, and its head outputs. Keys and values (one more
    forward, of the HF model under the bridge) pay off only for per-position patching."""
    names = (_Z, _RESID, _MID) if _MID.format(layer=0) in getattr(model, "hook_dict", {}) else ()
    if names:
        logits, got = _capture(model, ids, mask, names)
        z, resid = got[_Z], got[_RESID]
        mid = got[_MID] if _decomposes(model, logits, z, resid, got[_MID]) else None
    else:
        (logits, z, resid), mid = cache_run(model, ids, mask), None
    kv = _keys_and_values(model, ids, mask, logits) if with_kv else None
    return TargetCache(logits, resid, kv, z, mid), z


def _alias_cache_argument(module: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
    if kwargs.get("cache") is not None and kwargs.get("past_key_values") is None:
        return args, {**kwargs, "past_key_values": kwargs["cache"]}
    return None


def _let_bridge_see_the_cache(model: TransformerBridge) -> None:
    """transformers 5.24 renamed the attention modules' `past_key_values` argument to
    `cache`; TransformerLens 4.3's attention bridges read only the old name, so they
    neither fill nor read a KV cache. Each attention bridge gets the cache under both."""
    if getattr(model, "_sinklens_cache_alias", False):
        return
    for block in getattr(model, "blocks", ()):
        block.attn.register_forward_pre_hook(_alias_cache_argument, with_kwargs=True)
    model._sinklens_cache_alias = True


def _keys_and_values(
    model: TransformerBridge, ids: Tensor, mask: Tensor, logits: Tensor
) -> list[tuple[Tensor, Tensor]] | None:
    """Each layer's keys and values of the target run, or None where this model's cache
    cannot be reused: the HF model under the bridge fills no cache, or a forward of the
    later positions over the cached earlier ones does not reproduce the full run's
    logits. Then patching runs full forwards, with the same result."""
    hf_model = getattr(model, "original_model", None)
    if hf_model is None or ids.shape[1] < 2:
        return None
    _let_bridge_see_the_cache(model)
    ids, mask = ids.to(_device(model)), mask.to(_device(model))
    positions = torch.arange(ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
    try:
        out = hf_model(ids, attention_mask=mask, position_ids=positions, use_cache=True)
        # transformers >= 5.24 returns the cache as `cache` (`past_key_values` warns).
        cache = out.cache if "cache" in out else out.past_key_values
        layers = getattr(cache, "layers", None)
        if layers is None or len(layers) != model_dims(model)[0]:
            return None
        kv = [(layer.keys, layer.values) for layer in layers]
        if any(not isinstance(t, Tensor) for pair in kv for t in pair):
            return None
        # One check forward of the second half over the first half's cache.
        half = ids.shape[1] // 2
        check = forward(model, ids[:, half:], mask, past_key_values=_prefix_cache(kv, half, 1))
    except (AttributeError, TypeError, RuntimeError, ValueError, IndexError):
        return None
    want = logits[:, half:].to(check.device, check.dtype)
    scale = float(want.abs().max()) or 1.0
    if check.shape != want.shape or float((check - want).abs().max()) > 1e-4 * scale:
        return None
    return kv


def kv_pays_off(batch: PatchingBatch, by_position: bool) -> bool:
    """Whether caching keys and values (one more forward) pays: always per position, and
    for whole-head patches when every trigger starts a quarter of the way in or later."""
    if by_position:
        return True
    has = batch.trigger_mask.any(dim=1)
    if not bool(has.any()):
        return False
    starts = batch.trigger_mask.int().argmax(dim=1)[has]
    return int(starts.min()) >= batch.seq_len // 4


def _prefix_cache(kv: list[tuple[Tensor, Tensor]], length: int, copies: int) -> Any:
    from transformers import DynamicCache

    cache = DynamicCache()
    for layer, (keys, values) in enumerate(kv):
        # Every layer gets the prefix, also those below the start layer: the causal mask's
        # length is read from layer 0.
        cache.update(
            keys[:, :, :length].repeat(copies, 1, 1, 1),
            values[:, :, :length].repeat(copies, 1, 1, 1),
            layer,
        )
    return cache
