"""Same-length corruptions of triggered samples, and the padded batches patching runs on.

Activation patching swaps activations position by position, so the triggered run (the
source of the patch) and the corrupted run (its target) must have the same length with
every non-trigger token at the same index. A corruption therefore only *replaces* the
trigger's tokens, never inserts or removes any:

- ``random``: random vocabulary tokens (seeded), never special tokens or the trigger's own;
- ``phrase``: a different phrase of exactly the trigger's token length;
- ``pad``: the pad token, masked out of attention (positions are kept explicitly, so the
  tokens after it do not move).

The answer is appended after the prompt (and after a suffix trigger), so every placement
leaves the answer tokens, and the positions that predict them, outside the trigger.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Bool, Int
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from sinklens.batching import right_pad
from sinklens.data.triggers import DEFAULT_JOIN, Placement, prepare_trigger, tokenize_trigger
from sinklens.errors import SinklensError

CorruptionKind = Literal["random", "phrase", "pad"]
CORRUPTION_KINDS = ("random", "phrase", "pad")

__all__ = [
    "CORRUPTION_KINDS",
    "Corruption",
    "CorruptionKind",
    "PatchingBatch",
    "PatchingSample",
    "build_batch",
    "check_same_length",
    "corrupt_trigger",
    "make_clean_sample",
    "make_sample",
    "make_samples",
]


@dataclass(frozen=True)
class Corruption:
    """How the trigger's tokens are replaced. `phrase` is needed only for kind `phrase`."""

    # str too, so CLI text reaches the one-line error below instead of a type-check error.
    kind: CorruptionKind | str = "random"
    seed: int = 0
    phrase: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in CORRUPTION_KINDS:
            raise SinklensError(
                f"unknown corruption {self.kind!r}; use one of {', '.join(CORRUPTION_KINDS)}"
            )
        if self.kind == "phrase" and not self.phrase:
            raise SinklensError(
                "corruption 'phrase' needs a phrase; pass one with the trigger's token length"
            )


@dataclass(frozen=True)
class PatchingSample:
    """One triggered sequence, its corrupted twin, and where the answer and trigger sit.

    `corrupted_mask[p]` is 0 where the corruption masked a token out (kind `pad`).
    `answer_positions` index the answer tokens in both sequences (never the trigger).
    """

    triggered_ids: tuple[int, ...]
    corrupted_ids: tuple[int, ...]
    corrupted_mask: tuple[int, ...]
    trigger_positions: tuple[int, ...]
    answer_positions: tuple[int, ...]

    def __post_init__(self) -> None:
        check_same_length(self.triggered_ids, self.corrupted_ids)
        if len(self.corrupted_mask) != len(self.triggered_ids):
            raise SinklensError(
                f"corrupted mask has {len(self.corrupted_mask)} entries for "
                f"{len(self.triggered_ids)} tokens; build samples with make_sample"
            )
        if not self.answer_positions:
            raise SinklensError(
                "a sample has no answer tokens; give every sample a non-empty answer"
            )
        if self.answer_positions[0] < 1 or self.answer_positions[-1] >= len(self.triggered_ids):
            raise SinklensError(
                f"answer positions {self.answer_positions[0]}..{self.answer_positions[-1]} fall "
                f"outside 1..{len(self.triggered_ids) - 1}; the answer must follow a prompt"
            )


def check_same_length(triggered: Sequence[int], corrupted: Sequence[int]) -> None:
    """Raise a one-line error when a corruption changed the sequence length."""
    if len(triggered) != len(corrupted):
        raise SinklensError(
            f"corruption changes the sequence length ({len(triggered)} -> {len(corrupted)} "
            "tokens); patching needs equal lengths, so replace the trigger with as many tokens"
        )


def corrupt_trigger(
    input_ids: Sequence[int],
    trigger_positions: Sequence[int],
    corruption: Corruption,
    *,
    vocab_size: int,
    special_ids: Sequence[int] = (),
    phrase_ids: Sequence[int] | None = None,
    pad_id: int | None = None,
    sample_index: int = 0,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The corrupted ids and attention mask: the trigger's tokens replaced, nothing moved.

    `sample_index` varies the random tokens from sample to sample under one seed.
    """
    ids = [int(t) for t in input_ids]
    positions = [int(p) for p in trigger_positions]
    if not positions:
        raise SinklensError("the sample has no trigger positions; insert a trigger first")
    if any(not 0 <= p < len(ids) for p in positions):
        raise SinklensError(
            f"trigger positions {positions} fall outside the sample's {len(ids)} tokens; "
            "use the positions insert_trigger returned"
        )
    mask = [1] * len(ids)
    if corruption.kind == "random":
        banned = {int(s) for s in special_ids} | {ids[p] for p in positions}
        allowed = torch.tensor([t for t in range(vocab_size) if t not in banned])
        if len(allowed) == 0:
            raise SinklensError("no vocabulary token is left to corrupt with; use kind 'pad'")
        gen = torch.Generator().manual_seed(int(corruption.seed) * 1_000_003 + sample_index)
        picks = torch.randint(len(allowed), (len(positions),), generator=gen)
        replacement = [int(allowed[i]) for i in picks]
    elif corruption.kind == "phrase":
        if phrase_ids is None:
            raise SinklensError(
                "corruption 'phrase' needs the phrase's token ids; tokenise it first"
            )
        replacement = [int(t) for t in phrase_ids]
        if len(replacement) != len(positions):
            raise SinklensError(
                f"corruption changes the sequence length: the phrase has {len(replacement)} "
                f"tokens but the trigger has {len(positions)}; use a phrase of equal token length"
            )
    else:
        if pad_id is None:
            raise SinklensError(
                "corruption 'pad' needs a pad token; set tokenizer.pad_token or use kind 'random'"
            )
        replacement = [int(pad_id)] * len(positions)
        for p in positions:
            mask[p] = 0
    for p, token in zip(positions, replacement, strict=True):
        ids[p] = token
    return tuple(ids), tuple(mask)


def make_sample(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    answer: str,
    trigger: str,
    placement: Placement,
    corruption: Corruption,
    *,
    sample_index: int = 0,
    trigger_join: str = DEFAULT_JOIN,
) -> PatchingSample:
    """Tokenise prompt (with BOS) and answer, insert the trigger into the prompt (joined by
    `trigger_join`), corrupt it."""
    prompt_ids = list(tokenizer(prompt)["input_ids"])
    answer_ids = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
    if not answer_ids:
        raise SinklensError(
            f"sample {sample_index} has no answer tokens (answer {answer!r}); "
            "give every sample a non-empty answer"
        )
    triggered = prepare_trigger(tokenizer, trigger, trigger_join).insert(prompt_ids, placement)
    phrase_ids = (
        tokenize_trigger(tokenizer, corruption.phrase)
        if corruption.kind == "phrase" and corruption.phrase
        else None
    )
    corrupted, mask = corrupt_trigger(
        triggered.input_ids,
        triggered.trigger_positions,
        corruption,
        vocab_size=len(tokenizer),
        special_ids=tokenizer.all_special_ids,
        phrase_ids=phrase_ids,
        pad_id=tokenizer.pad_token_id,
        sample_index=sample_index,
    )
    n_prompt = len(triggered.input_ids)
    return PatchingSample(
        triggered_ids=triggered.input_ids + tuple(answer_ids),
        corrupted_ids=corrupted + tuple(answer_ids),
        corrupted_mask=mask + (1,) * len(answer_ids),
        trigger_positions=triggered.trigger_positions,
        answer_positions=tuple(range(n_prompt, n_prompt + len(answer_ids))),
    )


def make_clean_sample(
    tokenizer: PreTrainedTokenizerBase, prompt: str, answer: str, *, sample_index: int = 0
) -> PatchingSample:
    """A sample with no trigger (both runs the same clean ids), for cross-model patching
    on clean input and for measuring clean behaviour."""
    prompt_ids = tuple(tokenizer(prompt)["input_ids"])
    answer_ids = tuple(tokenizer(answer, add_special_tokens=False)["input_ids"])
    if not answer_ids:
        raise SinklensError(
            f"sample {sample_index} has no answer tokens (answer {answer!r}); "
            "give every sample a non-empty answer"
        )
    ids = prompt_ids + answer_ids
    return PatchingSample(
        triggered_ids=ids,
        corrupted_ids=ids,
        corrupted_mask=(1,) * len(ids),
        trigger_positions=(),
        answer_positions=tuple(range(len(prompt_ids), len(ids))),
    )


def make_samples(
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[tuple[str, str]],
    trigger: str,
    placement: Placement,
    corruption: Corruption,
    *,
    trigger_join: str = DEFAULT_JOIN,
) -> list[PatchingSample]:
    """`make_sample` over (prompt, answer) pairs, each with its own random corruption."""
    if not pairs:
        raise SinklensError("no (prompt, answer) pairs to patch; pass at least one sample")
    return [
        make_sample(
            tokenizer,
            p,
            a,
            trigger,
            placement,
            corruption,
            sample_index=i,
            trigger_join=trigger_join,
        )
        for i, (p, a) in enumerate(pairs)
    ]


@dataclass(frozen=True)
class PatchingBatch:
    """Samples right-padded to one width. Right padding never reaches a real token under a
    causal mask, so patching results do not depend on how samples are grouped."""

    triggered_ids: Int[Tensor, "batch seq"]
    corrupted_ids: Int[Tensor, "batch seq"]
    triggered_mask: Int[Tensor, "batch seq"]
    corrupted_mask: Int[Tensor, "batch seq"]
    # answer_mask[b, p]: token p is an answer token, scored from the logits at p - 1.
    answer_mask: Bool[Tensor, "batch seq"]
    trigger_mask: Bool[Tensor, "batch seq"]
    data_hash: str

    @property
    def n_samples(self) -> int:
        return int(self.triggered_ids.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.triggered_ids.shape[1])

    def first_answer_positions(self) -> Int[Tensor, " batch"]:
        return self.answer_mask.int().argmax(dim=1)


def build_batch(samples: Sequence[PatchingSample], pad_id: int = 0) -> PatchingBatch:
    """Right-pad samples into tensors; `data_hash` is a sha256 of every sample's tokens."""
    if not samples:
        raise SinklensError("no samples to patch; pass at least one sample")
    trig, tmask = right_pad([s.triggered_ids for s in samples], pad_id)
    corr, _ = right_pad([s.corrupted_ids for s in samples], pad_id)
    # The corrupted run masks its own tokens (a deleted trigger), so its mask is the sample's.
    cmask = torch.zeros_like(tmask)
    answer = torch.zeros(trig.shape, dtype=torch.bool)
    trigger = torch.zeros(trig.shape, dtype=torch.bool)
    for i, s in enumerate(samples):
        cmask[i, : len(s.corrupted_mask)] = torch.tensor(s.corrupted_mask)
        answer[i, list(s.answer_positions)] = True
        trigger[i, list(s.trigger_positions)] = True
    payload = json.dumps(
        [[s.triggered_ids, s.corrupted_ids, s.corrupted_mask, s.answer_positions] for s in samples]
    )
    return PatchingBatch(
        triggered_ids=trig,
        corrupted_ids=corr,
        triggered_mask=tmask,
        corrupted_mask=cmask,
        answer_mask=answer,
        trigger_mask=trigger,
        data_hash=hashlib.sha256(payload.encode()).hexdigest(),
    )
