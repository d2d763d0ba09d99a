"""Backdoor triggers spliced into token sequences, with a record of where everything went.

Insertion is done on token ids, not on text: the trigger is tokenised once, without
special tokens, and spliced in. That keeps the trigger's tokens identical at every
placement (text-level insertion lets BPE merge the trigger with its neighbours
differently at each position) and tells every analysis exactly which positions hold
the trigger and where each content token moved (`source_index`).

A trigger is never cut off. When a sample plus its trigger exceeds `max_length`, the
*content* is shortened from its end. The paper's code truncates after appending a
suffix trigger, so its long "suffix" samples carry no trigger at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from transformers import PreTrainedTokenizerBase

from sinklens.errors import SinklensError

Placement = Literal["prefix", "infix", "suffix"] | int
PLACEMENTS = ("prefix", "infix", "suffix")


@dataclass(frozen=True)
class TriggeredSample:
    """A token sequence with a trigger in it.

    `source_index[p]` is the index into the clean ids that position `p` came from, or -1
    where `p` holds a trigger token; clean tokens dropped to make room have no position.
    """

    input_ids: tuple[int, ...]
    trigger_positions: tuple[int, ...]
    source_index: tuple[int, ...]

    @property
    def trigger_slice(self) -> slice:
        return slice(self.trigger_positions[0], self.trigger_positions[-1] + 1)


def parse_placement(text: str | int) -> Placement:
    """`prefix`, `infix`, `suffix`, or a non-negative content-token index such as `8`."""
    if isinstance(text, int):
        value: int = text
    else:
        lowered = text.strip().lower()
        if lowered in PLACEMENTS:
            return lowered  # type: ignore[return-value]
        try:
            value = int(lowered)
        except ValueError:
            raise SinklensError(
                f"unknown trigger placement {text!r}; use prefix, infix, suffix or a token index such as 8"
            ) from None
    if value < 0:
        raise SinklensError(
            f"trigger placement index {value} is negative; use a content-token index >= 0"
        )
    return value


def tokenize_trigger(tokenizer: PreTrainedTokenizerBase, trigger: str) -> tuple[int, ...]:
    """Token ids of the trigger on its own, without BOS/EOS."""
    if not isinstance(trigger, str) or not trigger.strip():
        raise SinklensError(
            f"trigger {trigger!r} is empty or only whitespace; pass a trigger with visible text"
        )
    special = [t for t in tokenizer.all_special_tokens if t and t in trigger]
    if special:
        raise SinklensError(
            f"trigger {trigger!r} contains the tokenizer's special token {special[0]!r}; a trigger "
            "is ordinary text, so remove it"
        )
    ids = tuple(tokenizer(trigger, add_special_tokens=False)["input_ids"])
    if not ids:
        raise SinklensError(
            f"trigger {trigger!r} tokenises to nothing; pass a non-empty trigger string"
        )
    return ids


def prefix_position(tokenizer: PreTrainedTokenizerBase) -> str:
    """Where a prefix trigger goes with this tokenizer, in words: right after the BOS token
    it adds, or, for a tokenizer that adds none (SmolLM2, Qwen2), at position 0, before the
    first text token."""
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is not None and probe and probe[0] == bos:
        return "position 1, right after BOS"
    return "position 0, before the first text token (this tokenizer adds no BOS)"


def insert_trigger(
    clean_ids: Sequence[int],
    trigger_ids: Sequence[int],
    placement: Placement,
    *,
    bos_id: int | None,
    max_length: int | None = None,
) -> TriggeredSample:
    """Splice `trigger_ids` into `clean_ids` at `placement`.

    prefix: right after BOS (or at 0 without one); infix: before the middle content token;
    suffix: after the last content token; an int i: before content token i (0 == prefix).
    """
    trigger = tuple(int(t) for t in trigger_ids)
    if not trigger:
        raise SinklensError("empty trigger; pass a trigger that tokenises to at least one token")
    ids = [int(t) for t in clean_ids]
    n_head = 1 if ids and bos_id is not None and ids[0] == bos_id else 0
    if max_length is not None and n_head + len(trigger) > max_length:
        raise SinklensError(
            f"trigger of {len(trigger)} tokens does not fit in max_length={max_length}; "
            "use a shorter trigger or a larger max_length"
        )
    n_content = len(ids) - n_head
    if max_length is not None:
        n_content = min(n_content, max_length - n_head - len(trigger))
    at = _content_offset(placement, n_content)
    content_src = list(range(n_head, n_head + n_content))
    source = list(range(n_head)) + content_src[:at] + [-1] * len(trigger) + content_src[at:]
    new_ids = tuple(ids[s] if s >= 0 else trigger[i - n_head - at] for i, s in enumerate(source))
    start = n_head + at
    return TriggeredSample(
        input_ids=new_ids,
        trigger_positions=tuple(range(start, start + len(trigger))),
        source_index=tuple(source),
    )


def _content_offset(placement: Placement, n_content: int) -> int:
    if placement == "prefix":
        return 0
    if placement == "infix":
        return n_content // 2
    if placement == "suffix":
        return n_content
    if isinstance(placement, int) and not isinstance(placement, bool):
        if not 0 <= placement <= n_content:
            raise SinklensError(
                f"trigger index {placement} is outside the sample's {n_content} content tokens; "
                f"use an index in 0..{n_content}"
            )
        return placement
    raise SinklensError(
        f"unknown trigger placement {placement!r}; use prefix, infix, suffix or a token index"
    )


__all__ = [
    "PLACEMENTS",
    "Placement",
    "TriggeredSample",
    "insert_trigger",
    "parse_placement",
    "prefix_position",
    "tokenize_trigger",
]
