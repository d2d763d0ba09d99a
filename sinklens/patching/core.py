"""The patching engine: forwards with explicit positions, head-output caches, bound
metrics, and patching one variant per forward (the reference the batched path is checked
against). Batched exact patching is `sinklens.patching.batched`; results and their
provenance are `sinklens.patching.results`.

Models are TransformerBridge objects (`TransformerBridge.boot_transformers(path)`, or
whatever `sinklens.models` hands out), taken as arguments so the loader can change.
A head's output is `blocks.{l}.attn.hook_z`, shaped [batch, pos, head, d_head].

Every forward passes explicit `position_ids`: TransformerBridge otherwise derives them
from `attention_mask` by cumulative sum, so a masked-out trigger would shift every later
token's RoPE position.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from sinklens.errors import SinklensError
from sinklens.patching.corruptions import PatchingBatch
from sinklens.patching.metrics import (
    MetricName,
    alternative_tokens,
    answer_logit_diff,
    answer_logprob,
)

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from sinklens.models.loaded import LoadedModel

__all__ = [
    "DEFAULT_BATCH_TOKENS",
    "BoundMetric",
    "HeadVariants",
    "as_bridge",
    "bind_metric",
    "cache_run",
    "cache_z",
    "check_heads",
    "forward",
    "model_dims",
    "patch_heads_one_at_a_time",
    "patched_forward",
    "z_name",
]

# Tokens per patched forward; bigger batches amortise per-call overhead until memory for
# the logits (tokens x vocab floats) starts to dominate.
DEFAULT_BATCH_TOKENS = 16384


def as_bridge(model: Any) -> TransformerBridge:
    """A TransformerBridge, from itself or from a `sinklens.models.LoadedModel`."""
    if hasattr(model, "wrapper") and hasattr(model, "backend"):
        if model.backend != "bridge":
            raise SinklensError(
                f"patching runs on the bridge back end, but {model.path} was loaded with "
                f"{model.backend!r}; load it with backend='bridge'"
            )
        return model.wrapper
    if not hasattr(model, "run_with_hooks") or not hasattr(model, "cfg"):
        raise SinklensError(
            f"cannot patch a {type(model).__name__}; pass a TransformerBridge or a model "
            "loaded by sinklens.models.load_model"
        )
    return model


def _device(model: TransformerBridge) -> torch.device:
    return next(model.parameters()).device


def z_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def model_dims(model: TransformerBridge) -> tuple[int, int]:
    """(n_layers, n_heads) of a TransformerBridge."""
    return int(model.cfg.n_layers), int(model.cfg.n_heads)


def check_heads(
    model: TransformerBridge, heads: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Validate (layer, head) pairs against the model; one-line error naming the range."""
    n_layers, n_heads = model_dims(model)
    out = []
    for pair in heads:
        layer, head = (int(x) for x in pair)
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise SinklensError(
                f"head ({layer}, {head}) is out of range; use layers 0..{n_layers - 1} "
                f"and heads 0..{n_heads - 1}"
            )
        out.append((layer, head))
    return out


def forward(
    model: TransformerBridge,
    ids: Int[Tensor, "batch new"] | Float[Tensor, "batch new d_model"],
    mask: Int[Tensor, "batch total"],
    hooks: Sequence[tuple[str, Callable]] = (),
    *,
    start_at_layer: int | None = None,
    past_key_values: Any | None = None,
) -> Float[Tensor, "batch out vocab"]:
    """Logits of one run; with `start_at_layer`, `ids` is the residual entering that block.

    With `past_key_values` holding the first p positions, `ids` holds positions p.. only
    and `mask` covers all of them. Inputs move to the model's device."""
    device = _device(model)
    ids, mask = ids.to(device), mask.to(device)
    first = mask.shape[1] - ids.shape[1]
    positions = torch.arange(first, mask.shape[1], device=mask.device).expand(mask.shape[0], -1)
    extra: dict[str, Any] = {} if not start_at_layer else {"start_at_layer": start_at_layer}
    if past_key_values is not None:
        # The bridge's own entry point for a cache; transformers >= 5.24 warns that the
        # HF argument it feeds is now called `cache`, which is the bridge's to follow.
        extra["past_key_values"] = past_key_values
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`past_key_values` is deprecated", FutureWarning)
        return model.run_with_hooks(
            ids, fwd_hooks=list(hooks), attention_mask=mask, position_ids=positions, **extra
        )


@torch.no_grad()
def _capture(
    model: TransformerBridge,
    ids: Int[Tensor, "batch seq"],
    mask: Int[Tensor, "batch seq"],
    names: Sequence[str],
) -> tuple[Float[Tensor, "batch seq vocab"], dict[str, list[Tensor]]]:
    """Logits and, per hook name template (`{layer}` in it), that hook's value at every layer."""
    n_layers, _ = model_dims(model)
    stores: dict[str, dict[int, Tensor]] = {name: {} for name in names}

    def keep(x: Tensor, hook: Any, layer: int, store: dict[int, Tensor]) -> None:
        store[layer] = x.detach().clone()

    hooks = [
        (name.format(layer=layer), partial(keep, layer=layer, store=stores[name]))
        for layer in range(n_layers)
        for name in names
    ]
    logits = forward(model, ids, mask, hooks)
    return logits, {name: [store[i] for i in range(n_layers)] for name, store in stores.items()}


_Z, _RESID, _MID = (
    "blocks.{layer}.attn.hook_z",
    "blocks.{layer}.hook_resid_pre",
    "blocks.{layer}.hook_resid_mid",
)


def cache_run(
    model: TransformerBridge, ids: Int[Tensor, "batch seq"], mask: Int[Tensor, "batch seq"]
) -> tuple[
    Float[Tensor, "batch seq vocab"],
    list[Float[Tensor, "batch seq head d_head"]],
    list[Float[Tensor, "batch seq d_model"]],
]:
    """Logits, every layer's head outputs (`hook_z`) and residual entering each block."""
    logits, got = _capture(model, ids, mask, (_Z, _RESID))
    return logits, got[_Z], got[_RESID]


def cache_z(
    model: TransformerBridge, ids: Int[Tensor, "batch seq"], mask: Int[Tensor, "batch seq"]
) -> tuple[Float[Tensor, "batch seq vocab"], list[Float[Tensor, "batch seq head d_head"]]]:
    """Logits and every layer's head outputs (`hook_z`) of one run."""
    logits, z, _ = cache_run(model, ids, mask)
    return logits, z


@dataclass(frozen=True)
class BoundMetric:
    """A recovery metric bound to a batch: logits of n stacked copies -> [n, batch]."""

    name: MetricName
    ids: Int[Tensor, "batch seq"]
    answer_mask: Bool[Tensor, "batch seq"]
    alternatives: Int[Tensor, " batch"] | None = None

    def per_sample(
        self, logits: Float[Tensor, "rows width vocab"], offset: int = 0
    ) -> Float[Tensor, "copies batch"]:
        """Per copy and sample; `logits` may start at position `offset` (see answer_logprob)."""
        n = logits.shape[0] // self.ids.shape[0]
        ids = self.ids.to(logits.device).repeat(n, 1)
        answer = self.answer_mask.to(logits.device).repeat(n, 1)
        if self.name == "logprob":
            values = answer_logprob(logits, ids, answer, offset)
        else:
            assert self.alternatives is not None
            alternatives = self.alternatives.to(logits.device).repeat(n)
            values = answer_logit_diff(logits, ids, answer, alternatives, offset)
        return values.view(n, -1)

    def __call__(
        self, logits: Float[Tensor, "rows width vocab"], offset: int = 0
    ) -> Float[Tensor, " copies"]:
        """The metric averaged over samples (samples without a value are skipped)."""
        return self.per_sample(logits, offset).nanmean(dim=1)

    @property
    def read_positions(self) -> tuple[int, int]:
        """First and last position whose logits the metric reads (query p - 1 scores token p)."""
        tokens = self.answer_mask.nonzero()[:, 1]
        return int(tokens.min()) - 1, int(tokens.max()) - 1


def bind_metric(
    name: MetricName | str,
    batch: PatchingBatch,
    unlearned: TransformerBridge | LoadedModel | None = None,
    *,
    patched: TransformerBridge | LoadedModel | None = None,
) -> BoundMetric:
    """Bind `logprob` or `logit_diff` to a batch; `logit_diff` needs the unlearned model,
    whose top answer is read on the corrupted (trigger-free) input. With `patched` (the
    model the metric will score), the unlearned model is first checked to be comparable
    with it (same tokenizer by its full definition, same architecture)."""
    if name == "logprob":
        return BoundMetric("logprob", batch.triggered_ids, batch.answer_mask)
    if name != "logit_diff":
        raise SinklensError(f"unknown metric {name!r}; use logprob or logit_diff")
    if unlearned is None:
        raise SinklensError(
            "metric logit_diff needs the unlearned model for its top answer; pass unlearned="
        )
    unlearned = as_bridge(unlearned)
    if patched is not None:
        from sinklens.comparable import ModelSpec, check_comparable

        check_comparable(
            [ModelSpec.of(as_bridge(patched), "backdoored"), ModelSpec.of(unlearned, "unlearned")]
        )
    with torch.no_grad():
        logits = forward(unlearned, batch.corrupted_ids, batch.corrupted_mask)
    alt = alternative_tokens(
        logits, batch.triggered_ids.to(logits.device), batch.answer_mask.to(logits.device)
    ).cpu()
    if bool((alt < 0).all()):
        raise SinklensError(
            "the unlearned model's top answer is the true answer on every sample, so no logit "
            "difference exists; use metric logprob"
        )
    return BoundMetric("logit_diff", batch.triggered_ids, batch.answer_mask, alt)


@dataclass(frozen=True)
class HeadVariants:
    """One patched variant per entry: head `head[i]` of layer `layer[i]`, at position
    `position[i]` or at every position when `position` is None."""

    layer: Int[Tensor, " n"]
    head: Int[Tensor, " n"]
    position: Int[Tensor, " n"] | None = None

    def __len__(self) -> int:
        return len(self.layer)

    @staticmethod
    def grid(n_layers: int, n_heads: int, n_positions: int | None = None) -> HeadVariants:
        """All heads ([layer, head] order) or all (layer, position, head), row-major."""
        if n_positions is None:
            layer, head = torch.meshgrid(
                torch.arange(n_layers), torch.arange(n_heads), indexing="ij"
            )
            return HeadVariants(layer.flatten(), head.flatten())
        layer, pos, head = torch.meshgrid(
            torch.arange(n_layers), torch.arange(n_positions), torch.arange(n_heads), indexing="ij"
        )
        return HeadVariants(layer.flatten(), head.flatten(), pos.flatten())


def _patch_rows(
    z: Tensor,
    hook: Any,
    *,
    copies: int,
    rows: Tensor,
    heads: Tensor,
    positions: Tensor | None,
    source: Tensor,
) -> Tensor:
    z = z.clone(memory_format=torch.contiguous_format)
    z5 = z.view(copies, source.shape[0], *z.shape[1:])
    rows, heads = rows.to(z.device), heads.to(z.device)
    positions = None if positions is None else positions.to(z.device)
    if positions is None:
        # z5[rows, :, :, heads] is [n, batch, seq, d_head]; source[:, :, heads] is [batch, seq, n, d_head].
        z5[rows, :, :, heads] = source[:, :, heads].permute(2, 0, 1, 3).to(z.dtype)
    else:
        z5[rows, :, positions, heads] = source[:, positions, heads].transpose(0, 1).to(z.dtype)
    return z


def _replace(
    z: Tensor, hook: Any, *, heads: list[int], positions: list[int] | None, source: Tensor
) -> Tensor:
    z = z.clone()
    if positions is None:
        z[:, :, heads] = source[:, :, heads].to(z.dtype)
    else:
        for p in positions:
            z[:, p, heads] = source[:, p, heads].to(z.dtype)
    return z


@torch.no_grad()
def patched_forward(
    model: TransformerBridge,
    target_ids: Int[Tensor, "batch seq"],
    target_mask: Int[Tensor, "batch seq"],
    source_z: Sequence[Float[Tensor, "batch seq head d_head"]],
    heads: Sequence[tuple[int, int]],
    positions: Sequence[int] | None = None,
) -> Float[Tensor, "batch seq vocab"]:
    """One forward of the target run with the given heads (at `positions`, or everywhere)
    replaced by the source run's head outputs."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in check_heads(model, heads):
        by_layer.setdefault(layer, []).append(head)
    _, seq = target_ids.shape
    if positions is not None and any(not 0 <= p < seq for p in positions):
        raise SinklensError(f"patch positions {list(positions)} fall outside 0..{seq - 1}")
    hooks = [
        (
            z_name(layer),
            partial(
                _replace,
                heads=hs,
                positions=None if positions is None else list(positions),
                source=source_z[layer],
            ),
        )
        for layer, hs in sorted(by_layer.items())
    ]
    return forward(model, target_ids, target_mask, hooks)


@torch.no_grad()
def patch_heads_one_at_a_time(
    model: TransformerBridge,
    target_ids: Int[Tensor, "batch seq"],
    target_mask: Int[Tensor, "batch seq"],
    source_z: Sequence[Float[Tensor, "batch seq head d_head"]],
    variants: HeadVariants,
    metric: BoundMetric,
) -> Float[Tensor, " n"]:
    """The reference: one forward per variant, through `run_with_hooks`."""
    out = torch.empty(len(variants))
    for i in range(len(variants)):
        layer, head = int(variants.layer[i]), int(variants.head[i])
        pos = None if variants.position is None else [int(variants.position[i])]
        logits = patched_forward(model, target_ids, target_mask, source_z, [(layer, head)], pos)
        out[i] = float(metric(logits)[0])
    return out
