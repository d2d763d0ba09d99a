"""Naive reference implementations, straight from `transformers` with `output_attentions=True`.

One sample at a time, no padding, plain Python loops over positions: slow and obviously
correct. The test-suite checks the batched, streaming, hooked code paths against these
(within 1e-5 in float32), and a user can do the same on a new architecture.

Values are recomputed from `output_hidden_states` (the layer's input norm, then `v_proj`,
GPT-2's fused `c_attn` laid out `[q | k | v]`, or GPT-NeoX's fused `query_key_value` laid
out per head, `[head, (q k v), d_head]`), because `transformers` returns no values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def _forward(model: Any, ids: Sequence[int]) -> Any:
    x = torch.tensor([list(ids)], dtype=torch.long, device=model.device)
    with torch.inference_mode():
        return model(x, output_attentions=True, output_hidden_states=True)


def _values(model: Any, hidden: Tensor, layer: int) -> Tensor:
    """[pos, kv, d_head] values of one layer from that layer's input hidden state."""
    cfg = model.config
    n_heads = cfg.num_attention_heads
    d_head = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
    with torch.inference_mode():
        if hasattr(model, "model") and hasattr(model.model, "layers"):
            block = model.model.layers[layer]
            v = block.self_attn.v_proj(block.input_layernorm(hidden))
        elif hasattr(model, "gpt_neox"):
            # modeling_gpt_neox: qkv.view(*input_shape, -1, 3 * head_size), then chunk(3, -1)
            # per head, so each head's q, k and v sit side by side.
            block = model.gpt_neox.layers[layer]
            qkv = block.attention.query_key_value(block.input_layernorm(hidden))
            per_head = qkv.view(*qkv.shape[:-1], -1, 3 * d_head)
            v = per_head[..., 2 * d_head :].reshape(*qkv.shape[:-1], n_heads * d_head)
        else:
            block = model.transformer.h[layer]
            v = block.attn.c_attn(block.ln_1(hidden))[..., 2 * n_heads * d_head :]
    return v[0].reshape(v.shape[1], n_kv, d_head)


def reference_sinks(
    model: Any,
    sequences: Sequence[Sequence[int]],
    layers: Sequence[int],
    window: int,
    epsilon: float,
) -> dict[str, Tensor]:
    """alpha_mean [layer head k], rate [k] (percent), head_norm [layer head]."""
    n_l, n_h = len(layers), model.config.num_attention_heads
    alpha_sum = torch.zeros(n_l, n_h, window, dtype=torch.float64)
    above = torch.zeros(n_l, n_h, window, dtype=torch.float64)
    count = torch.zeros(window, dtype=torch.float64)
    norm_sum = torch.zeros(n_l, n_h, dtype=torch.float64)
    for ids in sequences:
        out = _forward(model, ids)
        n = min(len(ids), window)
        count[:n] += 1
        for i, layer in enumerate(layers):
            att = out.attentions[layer][0].double()  # head q k
            for k in range(n):
                a = att[:, k:n, k].mean(dim=1)  # queries i >= k within the window
                alpha_sum[i, :, k] += a
                above[i, :, k] += (a > epsilon).double()
            v = _values(model, out.hidden_states[layer], layer).double()
            group = n_h // v.shape[1]
            for h in range(n_h):
                z = att[h] @ v[:, h // group]  # pos d_head
                norm_sum[i, h] += z.norm(dim=-1).mean()
    rate = 100.0 * (above / count.clamp_min(1)).mean(dim=(0, 1))
    return {
        "alpha_mean": alpha_sum / count.clamp_min(1),
        "rate": rate,
        "head_norm": norm_sum / len(sequences),
    }


def reference_attention_difference(
    model: Any,
    pairs: Sequence[Any],
    layer: int,
    window: int,
    alignment: str,
) -> tuple[Tensor, Tensor]:
    """(ΔA [head T T] mean over samples per cell, count [T T]) for `PairedSample`s."""
    n_h = model.config.num_attention_heads
    total = torch.zeros(n_h, window, window, dtype=torch.float64)
    count = torch.zeros(window, window, dtype=torch.float64)
    for pair in pairs:
        clean = _forward(model, pair.clean).attentions[layer][0].double()
        trig_ids = pair.triggered.input_ids
        trig = _forward(model, trig_ids).attentions[layer][0].double()
        src = pair.triggered.source_index
        for p in range(min(window, len(trig_ids))):
            for q in range(min(window, len(trig_ids))):
                if alignment == "absolute":
                    if p >= len(pair.clean) or q >= len(pair.clean):
                        continue
                    base = clean[:, p, q]
                else:
                    sp, sq = src[p], src[q]
                    base = (
                        clean[:, sp, sq]
                        if sp >= 0 and sq >= 0
                        else torch.zeros(n_h, dtype=torch.float64)
                    )
                total[:, p, q] += trig[:, p, q] - base
                count[p, q] += 1
    mean = torch.where(count > 0, total / count.clamp_min(1), torch.nan)
    return mean, count


def _next_token(logits: Tensor, ids: Sequence[int], p: int) -> tuple[float, float, float]:
    row = logits[p].double()
    target = ids[p + 1]
    return (
        float(row[target]),
        float(row[target] - torch.logsumexp(row, dim=0)),
        float(row.max()),
    )


def reference_logit_curves(
    model: Any, pairs: Sequence[Any], window: int, alignment: str
) -> dict[str, Tensor]:
    """Mean (true logit, true log-prob, max logit) per position [T 3], for X′ and X."""
    sums = {w: torch.zeros(window, 3, dtype=torch.float64) for w in ("triggered", "clean")}
    counts = {w: torch.zeros(window, dtype=torch.float64) for w in ("triggered", "clean")}
    for pair in pairs:
        clean_ids, trig_ids = pair.clean, pair.triggered.input_ids
        clean = _forward(model, clean_ids).logits[0]
        trig = _forward(model, trig_ids).logits[0]
        for p in range(min(window, len(trig_ids) - 1)):
            sums["triggered"][p] += torch.tensor(
                _next_token(trig, trig_ids, p), dtype=torch.float64
            )
            counts["triggered"][p] += 1
        for p in range(min(window, len(trig_ids))):
            c = p if alignment == "absolute" else pair.triggered.source_index[p]
            if c < 0 or c + 1 >= len(clean_ids):
                continue
            sums["clean"][p] += torch.tensor(_next_token(clean, clean_ids, c), dtype=torch.float64)
            counts["clean"][p] += 1
    out = {}
    for w in sums:
        out[w] = torch.where(
            counts[w][:, None] > 0, sums[w] / counts[w].clamp_min(1)[:, None], torch.nan
        )
        out[f"{w}_count"] = counts[w]
    return out


def reference_value_norms(
    model: Any, sequences: Sequence[Sequence[int]], layers: Sequence[int], positions: Sequence[int]
) -> Tensor:
    """‖v_i‖ [sample layer kv pos]."""
    rows = []
    for ids in sequences:
        out = _forward(model, ids)
        per_layer = []
        for layer in layers:
            v = _values(model, out.hidden_states[layer], layer).double()
            per_layer.append(torch.stack([v[p].norm(dim=-1) for p in positions], dim=-1))
        rows.append(torch.stack(per_layer))
    return torch.stack(rows)


def reference_pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Textbook Pearson r in float64 Python arithmetic."""
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / (sxx * syy) ** 0.5


__all__ = [
    "reference_attention_difference",
    "reference_logit_curves",
    "reference_pearson",
    "reference_sinks",
    "reference_value_norms",
]
