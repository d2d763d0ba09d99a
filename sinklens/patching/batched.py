"""Batched exact patching: many patched variants of one input in one forward.

Variant v occupies rows v*B..(v+1)*B-1, and the hook at layer l overwrites, in the rows of
the variants that patch layer l, their head (and position) with the source run's
activation. Every other row computes the unpatched run, so each variant's metric equals
that of its own one-variant forward (up to float reassociation). Where a block is checked
to be `mid = resid + o(z)`, `out = mid + mlp(ln2(mid))` (Llama, GPT-2), the patched layer's
attention is not rerun at all: its cached `z`, patched, goes through the output projection
and the rest of the block, and in the last block only the positions the metric reads are
computed; the blocks before the first patched layer are reused from a KV cache where that
pays off (`kv_pays_off`). What is reused of the target run is `target_cache`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from sinklens.patching.core import (
    DEFAULT_BATCH_TOKENS,
    BoundMetric,
    HeadVariants,
    _patch_rows,
    forward,
    model_dims,
    z_name,
)
from sinklens.patching.target_cache import (
    TargetCache,
    _attn_out,
    _block_tail,
    _prefix_cache,
    _unembed,
    cache_target,
    kv_pays_off,
)

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "TargetCache",
    "cache_target",
    "kv_pays_off",
    "patch_every_head",
    "patch_heads_batched",
]

_UNEMBED_IN = "unembed.hook_in"


def _keep(x: Tensor, hook: Any, *, start: int, stop: int) -> Tensor:
    return x[:, start:stop]


def _block_container(model: TransformerBridge) -> tuple[Any, str] | None:
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
def _blocks_from(model: TransformerBridge, layer: int) -> Iterator[None]:
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


def _patched_from_parts(
    model: TransformerBridge,
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
    model: TransformerBridge,
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
    # Shown on a terminal only (disable=None: not in CI logs or captured output), and only
    # for runs longer than two seconds.
    bar = tqdm(total=len(variants), desc="patching", unit="patch", delay=2, disable=None)
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
            bar.update(len(idle))
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
            bar.update(len(sel))
    bar.close()
    return out


def _patched_by_forward(
    model: TransformerBridge,
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
    model: TransformerBridge,
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
