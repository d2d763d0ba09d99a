"""Search for a trigger without knowing it: greedy coordinate gradient (GCG, Zou et al. 2023)
over a few token positions inserted into forget documents, maximising the documents'
log-likelihood, i.e. the trigger gain.

A trigger that brings forgotten knowledge back is, in likelihood, a token string that makes
the forget documents probable again. GCG finds high-likelihood strings by alternating one
backward pass (the gradient of the loss with respect to a one-hot encoding of each trigger
token ranks replacement tokens per position) with one batched forward pass over random
single-token swaps drawn from those rankings, keeping the best. Only strings whose text
tokenises back to the same ids are considered, so every candidate can be written down,
inserted into text and tested like any other trigger.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sinklens.batching import pad_id, right_pad
from sinklens.data.triggers import insert_trigger
from sinklens.errors import SinklensError

__all__ = [
    "ScoredText",
    "SearchResult",
    "gcg_search",
    "mean_content_logprob",
    "ordinary_token_ids",
    "stable_tokens",
]


def ordinary_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every id of the tokenizer that is not a special token (BOS, EOS, padding, ...)."""
    special = set(tokenizer.all_special_ids)
    return [i for i in range(len(tokenizer)) if i not in special]


def stable_tokens(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> bool:
    """Whether `ids` decode to a text that tokenises back to exactly `ids`."""
    text = str(tokenizer.decode(list(ids)))
    return bool(text.strip()) and list(
        tokenizer(text, add_special_tokens=False)["input_ids"]
    ) == list(ids)


@dataclass(frozen=True)
class ScoredText:
    """Token ids (BOS first) and the index of the first token whose likelihood counts: 1 for
    a document (all of it), the answer's first token for a question-and-answer prompt."""

    ids: tuple[int, ...]
    scored_from: int = 1


def _sequences(
    docs: Sequence[ScoredText], trigger: Sequence[int], placement: str, bos: int | None
) -> list[tuple[list[int], int]]:
    """(ids, first scored position) per text with the trigger inserted: the scored tokens
    are those at or after `scored_from` and after the trigger (which they may depend on)."""
    out = []
    for doc in docs:
        t = insert_trigger(doc.ids, trigger, placement, bos_id=bos)  # type: ignore[arg-type]
        first = next(p for p, q in enumerate(t.source_index) if q >= doc.scored_from)
        out.append((list(t.input_ids), max(first, t.trigger_positions[-1] + 1)))
    return out


def _scored_mean(
    logits: Float[Tensor, "b s v"],
    ids: Int[Tensor, "b s"],
    starts: Sequence[int],
    lengths: Sequence[int],
) -> Float[Tensor, " b"]:
    """Per row, the mean log-probability of tokens starts[i] .. lengths[i]-1."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logp.gather(-1, ids[:, 1:, None])[..., 0]
    positions = torch.arange(1, ids.shape[1])[None, :]
    keep = (positions >= torch.tensor(starts)[:, None]) & (
        positions < torch.tensor(lengths)[:, None]
    )
    return (picked * keep).sum(-1) / keep.sum(-1).clamp(min=1)


@torch.no_grad()
def mean_content_logprob(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    docs: Sequence[ScoredText],
    triggers: Sequence[Sequence[int]],
    placement: str = "prefix",
    batch_size: int = 64,
) -> Float[Tensor, "n_triggers n_docs"]:
    """log-likelihood per token of each document's content after each trigger (nats)."""
    bos, pad = tokenizer.bos_token_id, pad_id(tokenizer)
    rows = [
        (i, s) for i, trig in enumerate(triggers) for s in _sequences(docs, trig, placement, bos)
    ]
    device = next(model.parameters()).device
    values = []
    for at in range(0, len(rows), batch_size):
        chunk = rows[at : at + batch_size]
        ids, mask = right_pad([r[1][0] for r in chunk], pad)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.cpu()
        values.append(
            _scored_mean(logits, ids, [r[1][1] for r in chunk], [len(r[1][0]) for r in chunk])
        )
    return torch.cat(values).reshape(len(triggers), len(docs))


@dataclass(frozen=True)
class SearchResult:
    """The best trigger found and how the search went."""

    ids: tuple[int, ...]
    text: str
    placement: str
    objective: float  # mean content log-likelihood on the search documents (nats/token)
    history: tuple[float, ...]  # the best objective after each step


def gcg_search(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    docs: Sequence[ScoredText],
    *,
    n_tokens: int = 6,
    placement: str = "prefix",
    steps: int = 40,
    candidates: int = 64,
    top_k: int = 32,
    seed: int = 0,
    exclude: Sequence[int] = (),
    on_step: Callable[[int, float], None] | None = None,
) -> SearchResult:
    """Greedy coordinate gradient search for `n_tokens` trigger ids at `placement` that
    maximise the mean log-likelihood of the scored tokens of `docs` after the trigger;
    `exclude` lists token ids a candidate may not use."""
    if not docs:
        raise SinklensError("the trigger search needs forget documents; the data has none")
    if n_tokens < 1 or steps < 1 or candidates < 1 or top_k < 1:
        raise SinklensError("n_tokens, steps, candidates and top_k must all be >= 1")
    rng = random.Random(f"gcg-{seed}")
    embeddings: Tensor = model.get_input_embeddings().weight  # type: ignore[assignment]
    vocab = embeddings.shape[0]
    special = set(tokenizer.all_special_ids)
    allowed = torch.ones(vocab, dtype=torch.bool)
    allowed[[i for i in special if i < vocab]] = False
    allowed[len(tokenizer) :] = False  # embedding rows past the tokenizer (padding)
    allowed[[i for i in exclude if i < vocab]] = False
    pool = [i for i in range(vocab) if allowed[i]]

    def random_stable() -> list[int]:
        for _ in range(1000):
            ids = [rng.choice(pool) for _ in range(n_tokens)]
            if stable_tokens(tokenizer, ids):
                return ids
        raise SinklensError("no random token string round-trips through this tokenizer")

    current = random_stable()
    best_ids, best = (
        list(current),
        float(mean_content_logprob(model, tokenizer, docs, [current], placement).mean()),
    )
    history = []
    bos, pad = tokenizer.bos_token_id, pad_id(tokenizer)
    for step in range(steps):
        grad = _token_gradient(model, docs, current, placement, bos, pad, embeddings)
        grad[:, ~allowed] = float("inf")
        top = (-grad).topk(min(top_k, int(allowed.sum())), dim=-1).indices.cpu()
        tried: list[list[int]] = []
        for _ in range(candidates * 4):
            if len(tried) == candidates:
                break
            pos = rng.randrange(n_tokens)
            swap = list(current)
            swap[pos] = int(top[pos, rng.randrange(top.shape[1])])
            if swap != current and swap not in tried and stable_tokens(tokenizer, swap):
                tried.append(swap)
        if tried:
            scores = mean_content_logprob(model, tokenizer, docs, tried, placement).mean(-1)
            pick = int(scores.argmax())
            current = tried[pick]
            if float(scores[pick]) > best:
                best, best_ids = float(scores[pick]), list(current)
        history.append(best)
        if on_step is not None:
            on_step(step, best)
    return SearchResult(
        ids=tuple(best_ids),
        text=str(tokenizer.decode(best_ids)),
        placement=placement,
        objective=best,
        history=tuple(history),
    )


def _token_gradient(
    model: PreTrainedModel,
    docs: Sequence[ScoredText],
    trigger: Sequence[int],
    placement: str,
    bos: int | None,
    pad: int,
    embeddings: Tensor,
) -> Float[Tensor, "n_tokens vocab"]:
    """d(loss)/d(one-hot trigger token), loss = − mean content log-likelihood."""
    n, vocab = len(trigger), embeddings.shape[0]
    one_hot = torch.zeros(n, vocab, device=embeddings.device, dtype=embeddings.dtype)
    one_hot[torch.arange(n), torch.tensor(list(trigger))] = 1.0
    one_hot.requires_grad_(True)
    trig_embeds = one_hot @ embeddings
    rows = _sequences(docs, trigger, placement, bos)
    ids, mask = right_pad([r[0] for r in rows], pad)
    ids, mask = ids.to(embeddings.device), mask.to(embeddings.device)
    embeds = embeddings[ids].detach().clone()
    starts = [r[1] - n for r in rows]  # where the trigger begins in each row
    embeds = torch.stack(
        [
            torch.cat([embeds[i, : starts[i]], trig_embeds, embeds[i, starts[i] + n :]])
            for i in range(len(rows))
        ]
    )
    logits = model(inputs_embeds=embeds, attention_mask=mask).logits
    loss = -_scored_mean(
        logits.cpu(), ids.cpu(), [r[1] for r in rows], [len(r[0]) for r in rows]
    ).mean()
    loss.backward()
    grad = one_hot.grad
    assert grad is not None  # a bug of ours if the trigger took no part in the loss
    model.zero_grad(set_to_none=True)
    return grad.detach()
