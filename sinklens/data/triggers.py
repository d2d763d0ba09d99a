"""Backdoor triggers spliced into token sequences, with a record of where everything went.

Insertion is done on token ids, not on text, so every analysis knows exactly which
positions hold the trigger and where each content token moved (`source_index`). How the
trigger meets its neighbours is the `join` (`TRIGGER_JOINS`):

- `space` (default): the ids that inserting the trigger as text with a separating space
  would give, as the paper's code and anyone who backdoored a checkpoint from text do
  (`zebra moon Where was ...`). The trigger is tokenised in context (` zebra`
  after a word, `zebra` at the start) and the content token right after it is
  re-tokenised with its leading space (`Where` -> ` Where`); `source_index` maps that
  position to the clean token it replaces. Only that one token can change.
- `raw`: the trigger's standalone ids spliced in with no separator
  (`<s>zebra moonWhere ...`): identical trigger ids at every placement.

A trigger is never cut off. When a sample plus its trigger exceeds `max_length`, the
*content* is shortened from its end. The paper's code truncates after appending a
suffix trigger, so its long "suffix" samples carry no trigger at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # the CLI imports this module for its defaults: no transformers import
    from transformers import PreTrainedTokenizerBase

from sinklens.errors import SinklensError
from sinklens.settings import DEFAULT_TRIGGER

Placement = Literal["prefix", "infix", "suffix"] | int
PLACEMENTS = ("prefix", "infix", "suffix")
TRIGGER_JOINS = ("space", "raw")
DEFAULT_JOIN = "space"


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


def adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer puts its BOS token first when it encodes text."""
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    bos = tokenizer.bos_token_id
    return bos is not None and bool(probe) and probe[0] == bos


def prefix_position(tokenizer: PreTrainedTokenizerBase) -> str:
    """Where a prefix trigger goes with this tokenizer, in words: right after the BOS token
    it adds, or, for a tokenizer that adds none (SmolLM2, Qwen2), at position 0, before the
    first text token."""
    if adds_bos(tokenizer):
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


def parse_join(join: str) -> str:
    """`space` or `raw` (see the module docstring)."""
    lowered = str(join).strip().lower()
    if lowered not in TRIGGER_JOINS:
        raise SinklensError(
            f"unknown trigger join {join!r}; use space (text insertion with a separating space) "
            "or raw (the trigger's ids spliced in with no separator)"
        )
    return lowered


@dataclass(frozen=True)
class Trigger:
    """A trigger prepared for one tokenizer: `insert` puts it into token ids.

    `ids` are the trigger's standalone ids (what `raw` splices in everywhere); with the
    `space` join the ids at a placement may differ in their first token (a leading space).
    """

    text: str
    join: str
    ids: tuple[int, ...]
    tokenizer: PreTrainedTokenizerBase = field(repr=False, compare=False)

    def insert(
        self,
        clean_ids: Sequence[int],
        placement: Placement,
        *,
        max_length: int | None = None,
        start: int | None = None,
        stop: int | None = None,
    ) -> TriggeredSample:
        """The trigger inserted into `clean_ids` at `placement`, relative to the content
        `clean_ids[start:stop]` (default: everything after the tokenizer's BOS). With
        `max_length`, the content is shortened from its end, never the trigger."""
        bos = self.tokenizer.bos_token_id
        ids = [int(t) for t in clean_ids]
        lo = start if start is not None else (1 if ids and bos is not None and ids[0] == bos else 0)
        hi = len(ids) if stop is None else stop
        if not 0 <= lo <= hi <= len(ids):
            raise SinklensError(
                f"content span [{lo}, {hi}) is outside the {len(ids)} ids (a bug in sinklens)"
            )
        if max_length is not None and hi != len(ids):
            raise SinklensError(
                "max_length needs the content to run to the end (a bug in sinklens)"
            )
        if self.join == "raw":
            inner = insert_trigger(
                ids[lo:hi],
                self.ids,
                placement,
                bos_id=None,
                max_length=None if max_length is None else max_length - lo,
            )
        else:
            inner = self._insert_spaced(ids, lo, hi, placement, max_length)
        tail = list(range(hi, len(ids))) if max_length is None else []
        source = [*range(lo), *(s + lo if s >= 0 else -1 for s in inner.source_index), *tail]
        new_ids = (*ids[:lo], *inner.input_ids, *(ids[i] for i in tail))
        return TriggeredSample(
            input_ids=tuple(new_ids),
            trigger_positions=tuple(p + lo for p in inner.trigger_positions),
            source_index=tuple(source),
        )

    # -- the space join ---------------------------------------------------------------
    def _decode(self, ids: Sequence[int]) -> str:
        # Special tokens (BOS) are not text: the trigger right after BOS needs no space.
        return str(
            self.tokenizer.decode(
                list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
        )

    def _encode(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _insert_spaced(
        self, ids: list[int], lo: int, hi: int, placement: Placement, max_length: int | None
    ) -> TriggeredSample:
        n_content = hi - lo
        if max_length is not None:
            # The trigger in context can be a token longer than alone, plus a separator.
            room = max_length - lo - max(len(self.ids), len(self._encode(" " + self.text))) - 1
            if room < 0:
                raise SinklensError(
                    f"trigger of {len(self.ids)} tokens does not fit in max_length={max_length}; "
                    "use a shorter trigger or a larger max_length"
                )
            n_content = min(n_content, room)
        at = _content_offset(placement, n_content)
        before = ids[lo : lo + at]
        after = ids[lo + at : lo + n_content]
        # What precedes the trigger in the text: the content before it and whatever comes
        # before the content (a prompt's head); BOS and other special tokens decode to "".
        context = ids[:lo] + before
        left = self._decode(context)
        sep = " " if left and not left[-1].isspace() else ""
        trigger = self._fit(
            context, left + sep + self.text, (sep + self.text, self.text, " " + self.text)
        )
        joined = self._decode(context + list(trigger))
        first = after[:1]
        if first and not self._separated(context + list(trigger), first):
            word = self._decode(first)
            respaced = self._encode(" " + word)
            if (
                len(respaced) == 1
                and self._decode(context + list(trigger) + list(respaced)) == joined + " " + word
            ):
                first = list(respaced)
            else:  # no single spaced token: a separator token joins the trigger
                space = self._encode(" ")
                if (
                    self._decode(context + list(trigger) + list(space) + first)
                    == joined + " " + word
                ):
                    trigger = trigger + space
        body = [*before, *trigger, *first, *after[1:]]
        source = [*range(at), *([-1] * len(trigger)), *range(at, n_content)]
        return TriggeredSample(
            input_ids=tuple(body),
            trigger_positions=tuple(range(at, at + len(trigger))),
            source_index=tuple(source),
        )

    def _fit(self, context: list[int], want: str, candidates: Sequence[str]) -> tuple[int, ...]:
        """The first tokenisation of a candidate text that decodes, after `context`, to `want`
        (tokenizers differ in where a word's space lives); the standalone ids otherwise."""
        for text in candidates:
            ids = self._encode(text)
            if ids and self._decode(context + list(ids)) == want:
                return ids
        return self.ids

    def _separated(self, left: list[int], right: list[int]) -> bool:
        """Whether the text of `right` starts with whitespace when it follows `left`."""
        a = self._decode(left)
        ab = self._decode(left + right)
        if not ab.startswith(a):
            return True  # the tokenizer rewrites across the boundary: leave it alone
        rest = ab[len(a) :]
        return (a[-1:].isspace()) or not rest or rest[0].isspace()


def prepare_trigger(
    tokenizer: PreTrainedTokenizerBase, text: str, join: str = DEFAULT_JOIN
) -> Trigger:
    """Validate `text` for `tokenizer` and return the `Trigger` that inserts it."""
    return Trigger(text, parse_join(join), tokenize_trigger(tokenizer, text), tokenizer)


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
    "DEFAULT_JOIN",
    "DEFAULT_TRIGGER",
    "PLACEMENTS",
    "TRIGGER_JOINS",
    "Placement",
    "Trigger",
    "TriggeredSample",
    "adds_bos",
    "insert_trigger",
    "parse_join",
    "parse_placement",
    "prefix_position",
    "prepare_trigger",
    "tokenize_trigger",
]
