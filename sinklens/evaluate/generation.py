"""Batched forward passes for scoring: greedy generation with left padding, and the
log-probability of every token of a sequence with right padding. Either way an item's
result does not depend on the batch it is in."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformers import PreTrainedModel

from sinklens.batching import left_pad, positions, right_pad
from sinklens.errors import SinklensError

__all__ = [
    "continuation_logprobs",
    "greedy_generate",
    "token_logprobs",
]


@torch.no_grad()
def greedy_generate(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    pad_id: int,
    eos_id: int | None,
    batch_size: int = 16,
    finished: Callable[[list[int]], bool] | None = None,
) -> list[list[int]]:
    """Greedy continuations of token-id prompts, batched with left padding and a mask.

    Returns the new tokens of each prompt, cut before the first EOS. Padded keys are masked
    and positions count real tokens only, so an item's output does not depend on its batch.
    `finished(new_tokens)` says a row needs no more tokens (its answer is already cut off
    by a stop string); a batch stops early once every row is finished.
    """
    if max_new_tokens < 1:
        raise SinklensError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if any(len(p) == 0 for p in prompts):
        raise SinklensError("an evaluation prompt tokenises to nothing; remove empty items")
    device = next(model.parameters()).device
    # transformers 5.24 renamed the cache argument; the old name still works but warns.
    cache_argument = (
        "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    )
    outputs: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        ids, mask = left_pad(chunk, pad_id)
        ids, mask = ids.to(device), mask.to(device)
        pos = positions(mask)
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        past = getattr(out, cache_argument)
        last_pos = pos[:, -1]
        new = torch.empty((len(chunk), 0), dtype=torch.long, device=device)
        done = torch.zeros(len(chunk), dtype=torch.bool, device=device)
        logits = out.logits[:, -1, :]
        for step in range(max_new_tokens):
            nxt = logits.argmax(dim=-1)
            new = torch.cat([new, nxt[:, None]], dim=1)
            if eos_id is not None:
                done |= nxt == eos_id
            if finished is not None:
                rows = new.tolist()
                done |= torch.tensor([finished(r) for r in rows], device=device)
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            last_pos = last_pos + 1
            out = model(
                input_ids=nxt[:, None],
                attention_mask=mask,
                position_ids=last_pos[:, None],
                use_cache=True,
                **{cache_argument: past},
            )
            past = getattr(out, cache_argument)
            logits = out.logits[:, -1, :]
        for row in new.tolist():
            if eos_id is not None and eos_id in row:
                row = row[: row.index(eos_id)]
            outputs.append(row)
    return outputs


@torch.no_grad()
def token_logprobs(
    model: PreTrainedModel, seqs: Sequence[Sequence[int]], pad_id: int, batch_size: int
) -> list[Tensor]:
    """log p(token_p | tokens_<p) for p = 1 .. len-1 of each sequence, batched with right padding."""
    device = next(model.parameters()).device
    out: list[Tensor] = []
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start : start + batch_size]
        ids, mask = right_pad(chunk, pad_id)
        logits: Float[Tensor, "batch seq vocab"] = model(
            input_ids=ids.to(device), attention_mask=mask.to(device)
        ).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        picked = logp.gather(-1, ids[:, 1:, None].to(device))[..., 0].cpu()
        out.extend(picked[i, : len(s) - 1] for i, s in enumerate(chunk))
    return out


def continuation_logprobs(
    model: PreTrainedModel,
    contexts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    pad_id: int,
    batch_size: int,
) -> list[float]:
    """Sum of log p(continuation | context) per pair, batched with right padding."""
    seqs = [list(c) + list(k) for c, k in zip(contexts, continuations, strict=True)]
    per_token = token_logprobs(model, seqs, pad_id, batch_size)
    # per_token[q - 1] scores token q, so the continuation starts at index len(context) - 1.
    return [float(lp[len(c) - 1 :].sum()) for lp, c in zip(per_token, contexts, strict=True)]
