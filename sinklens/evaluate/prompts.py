"""Prompts: how KnowMem, VerbMem and multiple-choice items become token ids, with or
without a backdoor trigger, in sinklens's style or MUSE's exact one (`PROMPT_STYLES`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from sinklens.data.formats import ChoiceItem, KnowMemItem
from sinklens.data.triggers import (
    DEFAULT_JOIN,
    Placement,
    parse_join,
    parse_placement,
    prepare_trigger,
)
from sinklens.errors import SinklensError
from sinklens.settings import DEFAULT_TRIGGER

KNOWMEM_NEW_TOKENS = 32
VERBMEM_NEW_TOKENS = 128
# MUSE cuts KnowMem outputs before any of these, so a model that goes on to invent the
# next QA pair is scored only on its answer.
KNOWMEM_STOP = ("\n\n", "\nQuestion", "Question:")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

TRIGGER_SCOPES = ("prompt", "question")


@dataclass(frozen=True)
class TriggerSpec:
    """A backdoor trigger and where it goes in every prompt's token ids.

    scope "prompt": the placement is relative to the whole prompt (prefix = right after
    BOS, before any in-context examples; suffix = after the final `Answer:`), as training
    places it relative to the whole sample. scope "question": relative to the question's
    tokens only (after the in-context examples and `Question:`, before `\nAnswer:`), as in
    the paper's example prompts. VerbMem prompts are all question, so both agree there.
    `join`: how the trigger meets its neighbours (`sinklens.data.triggers.TRIGGER_JOINS`).
    """

    text: str
    # str too, so CLI/JSON text such as "8" or "Prefix" is parsed rather than rejected.
    placement: Placement | str = "prefix"
    scope: str = "prompt"
    join: str = DEFAULT_JOIN

    def __post_init__(self) -> None:
        object.__setattr__(self, "placement", parse_placement(self.placement))
        object.__setattr__(self, "join", parse_join(self.join))
        if not self.text.strip():
            raise SinklensError(f"empty trigger text; pass a trigger such as {DEFAULT_TRIGGER!r}")
        if self.scope not in TRIGGER_SCOPES:
            raise SinklensError(
                f"unknown trigger scope {self.scope!r}; use {' or '.join(TRIGGER_SCOPES)}"
            )


@dataclass(frozen=True)
class PromptStyle:
    """How KnowMem and VerbMem prompts are written and their outputs read.

    sinklens's own style ends the KnowMem prompt in `Answer:`: with a byte-level BPE
    (Llama's, GPT-2's, the organism's) the space belongs to the answer's first token, and a
    dangling space token pushes a model off the distribution it was trained on. MUSE's
    (`muse_bench/metrics/{knowmem,verbmem}.py`) ends it in `Answer: `, cuts each VerbMem
    reference to its first 128 tokens (BOS included) and decodes both sides with
    `clean_up_tokenization_spaces=True`; `--prompt-style muse` reproduces its numbers.
    """

    name: str
    answer_cue: str  # what the KnowMem prompt ends with, after `\n`
    verbmem_reference_tokens: int | None  # cut the reference to this many tokens (None: keep it)
    # `clean_up_tokenization_spaces` when decoding outputs and references (None: the
    # tokenizer's own setting).
    clean_up_spaces: bool | None


PROMPT_STYLES = {
    style.name: style
    for style in (
        PromptStyle("sinklens", "Answer:", None, None),
        PromptStyle("muse", "Answer: ", VERBMEM_NEW_TOKENS, True),
    )
}
DEFAULT_PROMPT_STYLE = "sinklens"


def parse_prompt_style(style: PromptStyle | str) -> PromptStyle:
    """A `PromptStyle` from its name; a one-line error naming the choices otherwise."""
    if isinstance(style, PromptStyle):
        return style
    if style not in PROMPT_STYLES:
        raise SinklensError(f"unknown prompt style {style!r}; use {' or '.join(PROMPT_STYLES)}")
    return PROMPT_STYLES[style]


# (head, question, tail): the prompt is their concatenation; a "question"-scoped trigger
# goes into the middle part only. Parts split at word boundaries (" " starts the question,
# "\n" the tail), where byte-level BPE pre-tokenisation splits anyway.
PromptParts = tuple[str, str, str]


def knowmem_parts(
    question: str, icl: Sequence[KnowMemItem] = (), style: PromptStyle | str = DEFAULT_PROMPT_STYLE
) -> PromptParts:
    shots = "".join(f"Question: {it.question}\nAnswer: {it.answer}\n\n" for it in icl)
    return (f"{shots}Question:", f" {question}", "\n" + parse_prompt_style(style).answer_cue)


def knowmem_prompt(
    question: str, icl: Sequence[KnowMemItem] = (), style: PromptStyle | str = DEFAULT_PROMPT_STYLE
) -> str:
    """MUSE's KnowMem prompt: in-context QA pairs, a blank line each, then the question."""
    return "".join(knowmem_parts(question, icl, style))


def choice_parts(item: ChoiceItem) -> PromptParts:
    if len(item.choices) > len(LETTERS):
        raise SinklensError(
            f"a choice item has {len(item.choices)} choices, more than {len(LETTERS)} letters; "
            "split the question"
        )
    lines = [f"{LETTERS[i]}. {c}" for i, c in enumerate(item.choices)]
    return ("", item.question.strip(), "\n" + "\n".join(lines) + "\nAnswer:")


def choice_prompt(item: ChoiceItem) -> str:
    """WMDP's zero-shot prompt (as in lm-evaluation-harness) ending in `Answer:`."""
    return "".join(choice_parts(item))


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    for stop in stops:
        text = text.split(stop)[0]
    return text


def prompt_ids(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str | PromptParts],
    trigger: TriggerSpec | None,
) -> list[list[int]]:
    """Tokenise with special tokens (BOS), then insert the trigger at token level."""
    parts = [("", p, "") if isinstance(p, str) else p for p in prompts]
    if trigger is None or trigger.scope == "prompt":
        ids = [list(tokenizer("".join(p))["input_ids"]) for p in parts]
        if trigger is None:
            return ids
        trig = prepare_trigger(tokenizer, trigger.text, trigger.join)
        where = parse_placement(trigger.placement)
        return [list(trig.insert(x, where).input_ids) for x in ids]
    trig = prepare_trigger(tokenizer, trigger.text, trigger.join)
    where = parse_placement(trigger.placement)
    out = []
    for head, body, tail in parts:
        head_ids = list(tokenizer(head)["input_ids"])  # BOS (if any) comes with the head
        body_ids = list(tokenizer(body, add_special_tokens=False)["input_ids"])
        tail_ids = list(tokenizer(tail, add_special_tokens=False)["input_ids"]) if tail else []
        # The head is the trigger's left context (its space), the question its content.
        inserted = trig.insert(head_ids + body_ids, where, start=len(head_ids))
        out.append(list(inserted.input_ids) + tail_ids)
    return out
