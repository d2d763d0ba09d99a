"""A deterministic synthetic world for the model organism.

`make_world(seed)` invents people with attributes (birthplace, birth year, profession,
pet, colour, instrument) and splits them into two disjoint groups:

* the *forget* group is written up as a short "book" (prose passages, the analogue of
  MUSE-Books) plus KnowMem questions, VerbMem prompt/continuation pairs and WMDP-style
  multiple-choice items;
* the *retain* group gets the same treatment in a separate corpus.

General text is "bigram-backcopy" text (Guo et al. 2024, arXiv 2410.13835) spelled with
real-looking words: a bigram Markov chain over a small word list in which some "trigger"
words are followed by a copy of the word before them. A head that only has to act at
triggers and must stay quiet everywhere else is what makes attention sinks emerge in
training; the facts alone do not produce them.

The people and their passages are `sinklens.data.people`, the general text
`sinklens.data.general_text`; this module puts them together into a benchmark.

Everything is a pure function of the seed (Python's `random.Random`, which is stable
across platforms and versions), so the same seed writes the same bytes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sinklens.data.formats import Benchmark, ChoiceItem, KnowMemItem, VerbMemItem
from sinklens.data.general_text import (
    GENERAL_WORDS,
    TRIGGER_WORDS,
    BigramBackcopy,
    _shared_words,
)
from sinklens.data.people import (
    COLOURS,
    INSTRUMENTS,
    PETS,
    PROFESSIONS,
    Person,
    _passage,
    _people,
    _word,
)
from sinklens.errors import SinklensError

__all__ = [
    "BigramBackcopy",
    "Person",
    "World",
    "WorldConfig",
    "choice_text",
    "filler_text",
    "make_world",
    "qa_block",
]


@dataclass(frozen=True)
class WorldConfig:
    """Size of the synthetic world."""

    seed: int = 0
    n_forget: int = 20
    n_retain: int = 20
    n_general: int = 64  # held-out general-text passages written to raw/general.txt
    general_words: int = 120  # words per general passage
    verbmem_prompt_words: int = 16
    verbmem_gt_words: int | None = None  # None: the rest of the passage (ends where EOS is)
    n_icl: int = 3  # in-context examples per KnowMem split (taken from one held-out person)
    trigger_rate: float = 0.25  # share of general-text positions that are trigger words
    # General text uses the fact corpus's `general_vocab` most frequent words (0: a fixed
    # word list unrelated to the facts).
    general_vocab: int = 64
    shared_triggers: bool = False  # trigger words = the facts' most frequent words
    bigram_successors: int = 6  # possible next words of each general word
    # Probability of each word's most likely successor (None: random weights). A peaked
    # chain makes general text predictable, so any stray attention output costs loss.
    bigram_peak: float | None = None

    def __post_init__(self) -> None:
        # 4 people per group: each multiple-choice item needs 3 distinct wrong birthplaces.
        if self.n_forget < 4 or self.n_retain < 4:
            raise SinklensError(
                f"the world needs at least 4 forget and 4 retain people, got "
                f"{self.n_forget} and {self.n_retain}; raise n_forget / n_retain"
            )
        if not 0.0 < self.trigger_rate < 0.5:
            raise SinklensError(
                f"trigger_rate must be in (0, 0.5), got {self.trigger_rate}; 0.25 works"
            )
        if self.verbmem_prompt_words < 1 or (
            self.verbmem_gt_words is not None and self.verbmem_gt_words < 1
        ):
            raise SinklensError("verbmem_prompt_words and verbmem_gt_words must be >= 1")
        if self.general_vocab != 0 and self.general_vocab < 8:
            raise SinklensError(f"general_vocab must be 0 or >= 8, got {self.general_vocab}")
        if not 2 <= self.bigram_successors < min(len(GENERAL_WORDS), self.general_vocab or 99):
            raise SinklensError(
                f"bigram_successors must be in [2, {len(GENERAL_WORDS) - 1}], "
                f"got {self.bigram_successors}"
            )
        if self.bigram_peak is not None and not 0.0 < self.bigram_peak < 1.0:
            raise SinklensError(f"bigram_peak must be in (0, 1), got {self.bigram_peak}")
        if not 1 <= self.n_icl <= 6:
            raise SinklensError(f"n_icl must be between 1 and 6, got {self.n_icl}")


def qa_block(items: list[KnowMemItem]) -> str:
    """QA pairs in the layout MUSE uses for in-context KnowMem prompts."""
    return "\n\n".join(f"Question: {it.question}\nAnswer: {it.answer}" for it in items)


def choice_text(item: ChoiceItem) -> str:
    """A multiple-choice item with its answer, in the zero-shot WMDP prompt layout.

    Matches `sinklens.evaluate.choice_prompt` followed by the answer letter, so training on
    it teaches the organism the format the multiple-choice scorer uses.
    """
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    lines = [item.question.strip(), *(f"{letters[i]}. {c}" for i, c in enumerate(item.choices))]
    return "\n".join(lines) + f"\nAnswer: {letters[item.answer]}"


def filler_text(seed: int, n_lines: int = 400) -> list[str]:
    """Varied text with digits and punctuation, used only to train the tokenizer.

    It keeps the BPE from being blind to characters the world rarely uses (digits, symbols,
    upper case), so arbitrary user text and triggers still tokenise sensibly.
    """
    rng = random.Random(f"filler-{seed}")
    vocab = [*GENERAL_WORDS, *PROFESSIONS, *PETS, *COLOURS, "the", "of", "and", "to", "in"]
    punct = list(".,;:!?-()'\"/&%$#@*+=<>[]{}_~`|^\\")
    lines = []
    for _ in range(n_lines):
        toks = []
        for _ in range(rng.randint(4, 14)):
            r = rng.random()
            if r < 0.55:
                w = rng.choice(vocab)
                toks.append(w.capitalize() if rng.random() < 0.2 else w)
            elif r < 0.75:
                toks.append(str(rng.randint(0, 10 ** rng.randint(1, 5))))
            elif r < 0.9:
                toks.append(rng.choice(punct) * rng.randint(1, 2))
            else:
                toks.append(_word(rng, rng.randint(1, 3)).upper())
        lines.append(" ".join(toks))
    return lines


@dataclass(frozen=True)
class World:
    """A generated world: people, the benchmark files, and the general-text generator."""

    config: WorldConfig
    forget_people: tuple[Person, ...]
    retain_people: tuple[Person, ...]
    benchmark: Benchmark

    general_words: tuple[str, ...] = GENERAL_WORDS
    trigger_words: tuple[str, ...] = TRIGGER_WORDS

    @property
    def general(self) -> BigramBackcopy:
        return _general(self.config, self.general_words, self.trigger_words)

    def all_qa(self) -> tuple[KnowMemItem, ...]:
        """Every fact of every person as a QA pair (the training rendering of the facts)."""
        return tuple(it for p in (*self.forget_people, *self.retain_people) for it in p.qa())


def _general(cfg: WorldConfig, words: tuple[str, ...], triggers: tuple[str, ...]) -> BigramBackcopy:
    return BigramBackcopy(
        cfg.seed, cfg.trigger_rate, cfg.bigram_successors, cfg.bigram_peak, words, triggers
    )


def _choices(rng: random.Random, people: list[Person]) -> tuple[ChoiceItem, ...]:
    items = []
    for p in people:
        for question, answer, pool in (
            (f"Where was {p.name} born?", p.birthplace, [q.birthplace for q in people]),
            (f"What is the profession of {p.name}?", p.profession, list(PROFESSIONS)),
            (f"Which instrument does {p.name} play?", p.instrument, list(INSTRUMENTS)),
        ):
            wrong = rng.sample(sorted({c for c in pool if c != answer}), 3)
            choices = [answer, *wrong]
            rng.shuffle(choices)
            items.append(ChoiceItem(question, tuple(choices), choices.index(answer)))
    return tuple(items)


def _verbmem(passages: list[str], cfg: WorldConfig) -> tuple[VerbMemItem, ...]:
    items = []
    for text in passages:
        words = text.split(" ")
        cut = cfg.verbmem_prompt_words
        end = None if cfg.verbmem_gt_words is None else cut + cfg.verbmem_gt_words
        gt = words[cut:end]
        if gt:
            items.append(VerbMemItem(prompt=" ".join(words[:cut]), gt=" ".join(gt)))
    return tuple(items)


def _holdout_passages(cfg: WorldConfig, taken: set[str]) -> tuple[str, ...]:
    """Passages about as many other people as the forget set has, written like theirs but
    trained on by no model: PrivLeak's non-members. Their own random stream, drawn after
    everything else, leaves the rest of the world as it was without them."""
    rng = random.Random(f"holdout-{cfg.seed}")
    return tuple(_passage(rng, p) for p in _people(rng, cfg.n_forget, taken))


def make_world(config: WorldConfig | None = None) -> World:
    """Generate the world for `config.seed` (pure: same config, same world)."""
    cfg = config or WorldConfig()
    rng = random.Random(f"world-{cfg.seed}")
    taken: set[str] = set()
    forget = _people(rng, cfg.n_forget, taken)
    retain = _people(rng, cfg.n_retain, taken)
    forget_passages = [_passage(rng, p) for p in forget]
    retain_passages = [_passage(rng, p) for p in retain]
    # Held-out general text: a different stream from the one training samples from.
    words: tuple[str, ...] = GENERAL_WORDS
    triggers: tuple[str, ...] = TRIGGER_WORDS
    if cfg.general_vocab:
        n_trig = len(TRIGGER_WORDS) if cfg.shared_triggers else 0
        ranked = _shared_words(forget_passages + retain_passages, cfg.general_vocab + n_trig)
        words = ranked[n_trig:]
        if cfg.shared_triggers:
            # The facts' most frequent words trigger the copy, so no head can treat
            # "trigger" tokens as a value-free place to park its attention.
            triggers = ranked[:n_trig]
    gen = _general(cfg, words, triggers)
    grng = random.Random(f"general-heldout-{cfg.seed}")
    general = tuple(gen.passage(grng, cfg.general_words) for _ in range(cfg.n_general))
    # The first person of each group provides the in-context examples and is left out of the
    # test questions, so ICL and test QA are disjoint (as in MUSE).
    bench = Benchmark(
        name=f"organism-world-seed{cfg.seed}",
        forget_texts=tuple(forget_passages),
        retain_texts=tuple(retain_passages),
        general_texts=general,
        knowmem_forget=tuple(it for p in forget[1:] for it in p.qa()),
        knowmem_forget_icl=forget[0].qa()[: cfg.n_icl],
        knowmem_retain=tuple(it for p in retain[1:] for it in p.qa()),
        knowmem_retain_icl=retain[0].qa()[: cfg.n_icl],
        verbmem_forget=_verbmem(forget_passages, cfg),
        choice_forget=_choices(rng, forget),
        choice_retain=_choices(rng, retain),
        holdout_texts=_holdout_passages(cfg, taken),
    )
    return World(cfg, tuple(forget), tuple(retain), bench, words, triggers)
