"""Batched exact patching: many patched variants of one input in one forward.

Variant v occupies rows v*B..(v+1)*B-1, and the hook at layer l overwrites, in the rows of
the variants that patch layer l, their head (and position) with the source run's
activation. Every other row computes the unpatched run, so each variant's metric equals
that of its own one-variant forward (up to float reassociation). Where a block is checked
to be `mid = resid + o(z)`, `out = mid + mlp(ln2(mid))` (Llama, GPT-2), the patched layer's
attention is not rerun at all: its cached `z`, patched, goes through the output projection
and the rest of the block, and in the last block only the positions the metric reads are
computed; the blocks before the first patched layer are reused from a KV cache where that
pays off (`kv_pays_off`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from sinklens.patching.core import (
    _MID,
    _RESID,
    _Z,
    DEFAULT_BATCH_TOKENS,
    BoundMetric,
    HeadVariants,
    _capture,
    _device,
    _patch_rows,
    cache_run,
    forward,
    model_dims,
    z_name,
)
from sinklens.patching.corruptions import PatchingBatch

__all__ = [
    "TargetCache",
    "cache_target",
    "kv_pays_off",
    "patch_every_head",
    "patch_heads_batched",
]


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


def _attn_out(model: Any, layer: int, z: Tensor) -> Tensor:
    return model.blocks[layer].attn.o(z.flatten(-2))


def _block_tail(model: Any, layer: int, mid: Tensor) -> Tensor:
    """The residual leaving block `layer`, from the residual after its attention."""
    block = model.blocks[layer]
    return mid + block.mlp(block.ln2(mid))


def _unembed(model: Any, resid: Tensor) -> Tensor:
    return model.unembed(model.ln_final(resid))


def _decomposes(
    model: Any,
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
    model: Any,
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


def _let_bridge_see_the_cache(model: Any) -> None:
    """transformers 5.24 renamed the attention modules' `past_key_values` argument to
    `cache`; TransformerLens 4.3's attention bridges read only the old name, so they
    neither fill nor read a KV cache. Each attention bridge gets the cache under both."""
    if getattr(model, "_sinklens_cache_alias", False):
        return
    for block in getattr(model, "blocks", ()):
        block.attn.register_forward_pre_hook(_alias_cache_argument, with_kwargs=True)
    model._sinklens_cache_alias = True


def _keys_and_values(
    model: Any, ids: Tensor, mask: Tensor, logits: Tensor
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


_UNEMBED_IN = "unembed.hook_in"


def _keep(x: Tensor, hook: Any, *, start: int, stop: int) -> Tensor:
    return x[:, start:stop]


def _block_container(model: Any) -> tuple[Any, str] | None:
    """The module and attribute name of the HF ModuleList that holds the bridge's blocks."""
    hf_model = getattr(model, "original_model", None)
    blocks = list(getattr(model, "blocks", []))
    config = getattr(hf_model, "config", None)
    # Per-layer attention types (sliding windows) are looked up by loop index in HF models;
    # running a shortened list would give later layers the wrong type.
    if hf_model is None or not blocks or len(set(getattr(config, "layer_types", None) or [0])) > 1:
        return None
    for module in hf_model.modules():
        for name, child in module.named_children():
            if (
                isinstance(child, torch.nn.ModuleList)
                and len(child) == len(blocks)
                and all(a is b for a, b in zip(child, blocks, strict=True))
            ):
                return module, name
    return None


@contextlib.contextmanager
def _blocks_from(model: Any, layer: int) -> Iterator[None]:
    """Run only blocks `layer`.. of the model inside this context.

    TransformerBridge's `start_at_layer` swaps the residual in at block k but still runs
    blocks 0..k-1 and throws their output away; hiding them from the HF layer loop saves
    that compute. Without a recognisable block list, all blocks run (same result)."""
    found = _block_container(model) if layer > 0 else None
    if found is None:
        yield
        return
    owner, name = found
    full = owner._modules[name]
    owner._modules[name] = torch.nn.ModuleList(list(full)[layer:])
    try:
        yield
    finally:
        owner._modules[name] = full


def _unchanged(
    variants: HeadVariants,
    source_z: Sequence[Float[Tensor, "batch seq head d_head"]],
    target_z: Sequence[Float[Tensor, "batch seq head d_head"]],
) -> Bool[Tensor, " n"]:
    """Variants whose patch writes exactly the values already there (bitwise), in every sample."""
    out = torch.zeros(len(variants), dtype=torch.bool)
    for layer in torch.unique(variants.layer).tolist():
        sel = variants.layer == layer
        same = (source_z[layer] == target_z[layer]).all(dim=0).all(dim=-1).cpu()  # seq head
        if variants.position is None:
            out[sel] = same.all(dim=0)[variants.head[sel]]
        else:
            out[sel] = same[variants.position[sel], variants.head[sel]]
    return out


def _first_difference(
    variants: HeadVariants,
    source_z: Sequence[Float[Tensor, "batch seq head d_head"]],
    target_z: Sequence[Float[Tensor, "batch seq head d_head"]],
) -> Int[Tensor, " n"]:
    """Per variant, the first position where its head's source and target outputs differ
    in some sample (0 where they never do)."""
    out = torch.zeros(len(variants), dtype=torch.long)
    for layer in torch.unique(variants.layer).tolist():
        sel = variants.layer == layer
        diff = (source_z[layer] != target_z[layer]).any(dim=0).any(dim=-1).cpu()  # seq head
        first = torch.where(diff.any(dim=0), diff.int().argmax(dim=0), 0)
        out[sel] = first[variants.head[sel]]
    return out


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


def _patched_from_parts(
    model: Any,
    target: TargetCache,
    source: Float[Tensor, "batch seq head d_head"],
    layer: int,
    first: int,
    heads: Int[Tensor, " n"],
    positions: Int[Tensor, " n"] | None,
    mask: Int[Tensor, "batch seq"],
    read: tuple[int, int],
    slice_unembed: bool,
) -> tuple[Tensor, int]:
    """Logits (from the returned position on) of `len(heads)` variants patching `layer`
    from position `first` on, without rerunning that layer's attention: only its output
    projection sees the patched head, then the MLP and the later blocks run. In the last
    block nothing mixes positions after attention, so only the read positions run."""
    assert target.z is not None and target.mid is not None
    copies, seq = len(heads), source.shape[1]
    first_read, last_read = read
    last = layer == len(target.resid) - 1
    lo, hi = (max(first, first_read), last_read + 1) if last else (first, seq)
    if not last and positions is not None and bool((positions == 0).all()):
        # Every variant patches position `first` only: the block's output changes there alone.
        hi = first + 1
    z = _patch_rows(
        target.z[layer][:, lo:hi].repeat(copies, 1, 1, 1),
        None,
        copies=copies,
        rows=torch.arange(copies),
        heads=heads,
        positions=None if positions is None else positions - (lo - first),
        source=source[:, lo:hi],
    )
    post = _block_tail(
        model,
        layer,
        target.resid[layer][:, lo:hi].repeat(copies, 1, 1) + _attn_out(model, layer, z),
    )
    if last:
        return _unembed(model, post), lo
    if hi < seq:
        post = torch.cat([post, target.resid[layer + 1][:, hi:].repeat(copies, 1, 1)], dim=1)
    past = None if first == 0 else _prefix_cache(target.kv or [], first, copies)
    low = max(first, first_read) if slice_unembed else first
    hooks: list[tuple[str, Callable]] = []
    if slice_unembed:
        hooks.append((_UNEMBED_IN, partial(_keep, start=low - first, stop=last_read + 1 - first)))
    with _blocks_from(model, layer + 1):
        logits = forward(
            model,
            post,
            mask.repeat(copies, 1),
            hooks,
            start_at_layer=layer + 1,
            past_key_values=past,
        )
    return logits, low


@torch.no_grad()
def patch_heads_batched(
    model: Any,
    target_ids: Int[Tensor, "batch seq"],
    target_mask: Int[Tensor, "batch seq"],
    source_z: Sequence[Float[Tensor, "batch seq head d_head"]],
    variants: HeadVariants,
    metric: BoundMetric,
    *,
    target: TargetCache | None = None,
    max_batch_tokens: int = DEFAULT_BATCH_TOKENS,
) -> Float[Tensor, " n"]:
    """Metric of every variant: the target run with one head (at one position) patched
    from `source_z`, many variants per forward.

    With `target` (from `cache_target`) nothing is recomputed that a patch cannot change:
    a variant patching layer l starts at block l from the cached residual, and one
    patching position p runs only positions p.. with the cached keys and values of the
    earlier positions (causal attention: they cannot see p). Patches after the last
    position the metric reads are not run at all; their metric is the target's. Where
    `target.mid` is set, the patched layer's attention is not rerun either (see
    `_patched_from_parts`).
    """
    batch, seq = target_ids.shape
    out = torch.empty(len(variants))
    # Where each variant's forward can start: its patched position, or (patching every
    # position) the first position where source and target differ at that head.
    if target is None or target.kv is None:
        starts = torch.zeros(len(variants), dtype=torch.long)
    elif variants.position is not None:
        starts = variants.position.clone()
    elif target.z is not None:
        starts = _first_difference(variants, source_z, target.z)
    else:
        starts = torch.zeros(len(variants), dtype=torch.long)
    keys = variants.layer * (seq + 1) + starts
    groups = [(int(k) // (seq + 1), int(k) % (seq + 1)) for k in torch.unique(keys)]
    first_read, last_read = metric.read_positions
    slice_unembed = _UNEMBED_IN in getattr(model, "hook_dict", {})
    unchanged = (
        _unchanged(variants, source_z, target.z)
        if target is not None and target.z is not None
        else torch.zeros(len(variants), dtype=torch.bool)
    )
    parts = target is not None and target.mid is not None
    if target is not None and variants.position is not None:
        # A patch after the last read position cannot reach a read logit (causal attention),
        # nor, where blocks decompose, one in the last block before the first read position:
        # after attention nothing mixes positions.
        last_block = variants.layer == model_dims(model)[0] - 1
        unchanged |= (variants.position > last_read) | (
            parts & last_block & (variants.position < first_read)
        )
    target_value = None
    for layer, first in groups:
        members = (keys == layer * (seq + 1) + first).nonzero().flatten()
        # Patches after the last position the metric reads, or that write the activation
        # already there (positions before a trigger), leave the target run as it is.
        idle = members if first > last_read else members[unchanged[members]]
        if len(idle):
            if target_value is None:
                assert target is not None
                target_value = float(metric(target.logits)[0])
            out[idle] = target_value
        members = members[~unchanged[members]] if first <= last_read else members[:0]
        if not len(members):
            continue
        chunk = max(1, max_batch_tokens // (batch * (seq - first)))
        for start in range(0, len(members), chunk):
            sel = members[start : start + chunk]
            copies = len(sel)
            positions = None if variants.position is None else variants.position[sel] - first
            if parts:
                assert target is not None
                logits, offset = _patched_from_parts(
                    model,
                    target,
                    source_z[layer],
                    layer,
                    first,
                    variants.head[sel],
                    positions,
                    target_mask,
                    (first_read, last_read),
                    slice_unembed,
                )
            else:
                logits, offset = _patched_by_forward(
                    model,
                    target_ids,
                    target_mask,
                    source_z[layer],
                    target,
                    layer,
                    first,
                    variants.head[sel],
                    positions,
                    (first_read, last_read),
                    slice_unembed,
                )
            if offset > first_read:
                # Answer tokens scored before the patched positions keep the target's logits.
                assert target is not None
                head = target.logits[:, first_read:offset].repeat(copies, 1, 1).to(logits.dtype)
                logits, offset = torch.cat([head, logits], dim=1), first_read
            out[sel] = metric(logits, offset).float().cpu()
    return out


def _patched_by_forward(
    model: Any,
    target_ids: Int[Tensor, "batch seq"],
    target_mask: Int[Tensor, "batch seq"],
    source: Float[Tensor, "batch seq head d_head"],
    target: TargetCache | None,
    layer: int,
    first: int,
    heads: Int[Tensor, " n"],
    positions: Int[Tensor, " n"] | None,
    read: tuple[int, int],
    slice_unembed: bool,
) -> tuple[Tensor, int]:
    """Logits (from the returned position on) of `len(heads)` variants patching `layer`
    from position `first` on, by forwards with a `hook_z` hook."""
    copies = len(heads)
    first_read, last_read = read
    hook = partial(
        _patch_rows,
        copies=copies,
        rows=torch.arange(copies),
        heads=heads,
        positions=positions,
        source=source[:, first:],
    )
    mask = target_mask.repeat(copies, 1)
    past = None if first == 0 or target is None else _prefix_cache(target.kv or [], first, copies)
    if target is not None and layer > 0:
        inputs = target.resid[layer][:, first:].repeat(copies, 1, 1)
    else:
        inputs = target_ids[:, first:].repeat(copies, 1)
    entry = layer if target is not None and layer > 0 else None
    hooks: list[tuple[str, Callable]] = [(z_name(layer), hook)]
    # Unembed only the positions the metric reads (from `low` on).
    low = max(first, first_read) if slice_unembed else first
    if slice_unembed:
        hooks.append((_UNEMBED_IN, partial(_keep, start=low - first, stop=last_read + 1 - first)))
    with _blocks_from(model, entry or 0):
        logits = forward(model, inputs, mask, hooks, start_at_layer=entry, past_key_values=past)
    return logits, low


def patch_every_head(
    model: Any,
    target_ids: Int[Tensor, "batch seq"],
    target_mask: Int[Tensor, "batch seq"],
    source_z: Sequence[Float[Tensor, "batch seq head d_head"]],
    metric: BoundMetric,
    *,
    target: TargetCache | None,
    n_positions: int | None = None,
    max_batch_tokens: int = DEFAULT_BATCH_TOKENS,
) -> Float[Tensor, "..."]:
    """`patch_heads_batched` over every head, shaped [layer, head], or over every
    (layer, position, head) shaped [layer, pos, head] when `n_positions` is given."""
    n_layers, n_heads = model_dims(model)
    values = patch_heads_batched(
        model,
        target_ids,
        target_mask,
        source_z,
        HeadVariants.grid(n_layers, n_heads, n_positions),
        metric,
        target=target,
        max_batch_tokens=max_batch_tokens,
    )
    if n_positions is None:
        return values.view(n_layers, n_heads)
    return values.view(n_layers, n_positions, n_heads)
