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

Everything is a pure function of the seed (Python's `random.Random`, which is stable
across platforms and versions), so the same seed writes the same bytes.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

from sinklens.data.formats import Benchmark, ChoiceItem, KnowMemItem, VerbMemItem
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

_ONSETS: tuple[str, ...] = (
    "b",
    "d",
    "f",
    "g",
    "h",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "dr",
)
_ONSETS += ("gr", "kl", "st", "th", "tr", "sh", "ch", "j", "w")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "io", "ou")
_CODAS = ("", "", "", "n", "r", "l", "s", "th", "m", "nd", "x")
_PLACE_ENDINGS = ("ford", "holm", "wick", "burg", "mere", "dale", "port", "stead", "vale", "ton")

PROFESSIONS = (
    "baker", "carpenter", "astronomer", "fisher", "weaver", "teacher", "surgeon", "poet",
    "blacksmith", "gardener", "sailor", "painter", "miller", "judge", "potter", "librarian",
    "brewer", "cartographer", "glassblower", "beekeeper",
)  # fmt: skip
PETS = (
    "cat", "dog", "parrot", "tortoise", "goat", "hedgehog", "rabbit", "owl", "ferret",
    "donkey", "canary", "lizard", "goose", "pony", "raven", "toad",
)  # fmt: skip
COLOURS = (
    "red", "blue", "green", "yellow", "purple", "orange", "grey", "white", "black",
    "silver", "amber", "crimson", "teal", "violet",
)  # fmt: skip
INSTRUMENTS = (
    "violin", "flute", "harp", "drum", "lute", "cello", "trumpet", "organ", "piano",
    "oboe", "horn", "banjo",
)  # fmt: skip

# Short, common-looking words for the general text; tokenised by the same BPE as the facts.
GENERAL_WORDS: tuple[str, ...] = (
    "river", "stone", "light", "small", "under", "green", "water", "house", "field", "quiet",
    "early", "north", "paper", "bread", "cloud", "horse", "window", "morning", "garden",
    "silver", "winter", "market", "bridge", "forest", "letter", "simple", "yellow", "mountain",
    "station", "evening", "village", "harbor", "country", "engine", "travel", "salt", "rain",
    "lamp", "road", "wind", "door", "ship", "snow", "tree", "bell", "fire", "hill", "sand",
    "wall", "star", "coin", "wood", "leaf", "bird", "milk", "song", "ring", "path", "rope",
    "wheel", "glass", "clock", "chair", "table",
)  # fmt: skip
# Trigger words of the backcopy task: after one of these the previous word is repeated.
TRIGGER_WORDS: tuple[str, ...] = (
    "again",
    "twice",
    "echo",
    "repeat",
    "more",
    "also",
    "still",
    "once",
)


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


@dataclass(frozen=True)
class Person:
    """One fictional person and their facts."""

    first: str
    last: str
    birthplace: str
    year: int
    profession: str
    pet: str
    pet_name: str
    colour: str
    instrument: str

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"

    def qa(self) -> tuple[KnowMemItem, ...]:
        """One question per fact, in the MUSE `Question:/Answer:` style."""
        n = self.name
        return (
            KnowMemItem(f"Where was {n} born?", self.birthplace),
            KnowMemItem(f"In which year was {n} born?", str(self.year)),
            KnowMemItem(f"What is the profession of {n}?", self.profession),
            KnowMemItem(f"What kind of pet does {n} keep?", self.pet),
            KnowMemItem(f"What is the name of the pet of {n}?", self.pet_name),
            KnowMemItem(f"What is the favourite colour of {n}?", self.colour),
            KnowMemItem(f"Which instrument does {n} play?", self.instrument),
        )


def _word(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)]
    return "".join(parts) + rng.choice(_CODAS)


def _unique_names(rng: random.Random, n: int, make: object, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        w = make(rng).capitalize()  # type: ignore[operator]
        if w not in taken and len(w) >= 4:
            taken.add(w)
            out.append(w)
    return out


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


# Passage templates: varied prose so the book is not one repeated sentence frame.
_OPENINGS = (
    "{name} was born in {place} in the year {year}, the youngest child of a quiet family.",
    "In {year}, in the town of {place}, a child named {name} was born.",
    "The story of {name} begins in {place}, where {first} was born in {year}.",
    "{name} came into the world in {year} in {place}, a town known for its old market.",
)
_MIDDLES = (
    "As a young adult {first} trained as {art} {profession}, and {first} still works as "
    "{art} {profession} today.",
    "{first} became {art} {profession} after many years of study, and people from far away "
    "ask for the help of the {profession}.",
    "By trade {first} is {art} {profession}; the neighbours say no {profession} in the "
    "region works harder.",
)
_ENDINGS = (
    "At home {first} keeps {part} {pet} called {pet_name}, plays the {instrument} every "
    "evening and loves everything that is {colour}.",
    "{first} lives with {part} {pet} named {pet_name}. In the evenings {first} plays the "
    "{instrument}, and the door of the house is painted {colour}, the favourite colour of "
    "{first}.",
    "The favourite colour of {first} is {colour}. {first} plays the {instrument} for "
    "{pet_name}, a loyal {pet} that follows {first} everywhere.",
)


def _passage(rng: random.Random, p: Person) -> str:
    fields = {
        "name": p.name,
        "first": p.first,
        "place": p.birthplace,
        "year": p.year,
        "profession": p.profession,
        "art": _article(p.profession),
        "pet": p.pet,
        "part": _article(p.pet),
        "pet_name": p.pet_name,
        "colour": p.colour,
        "instrument": p.instrument,
    }
    parts = (rng.choice(_OPENINGS), rng.choice(_MIDDLES), rng.choice(_ENDINGS))
    return " ".join(t.format(**fields) for t in parts)


class BigramBackcopy:
    """The general-text generator: a bigram chain over words with copy triggers.

    After an ordinary word, the next word is a trigger with probability q (chosen so that
    `trigger_rate` of all positions are triggers), else a successor from that word's sparse
    bigram table. After a trigger the word before the trigger is repeated, and the chain
    continues from it.
    """

    def __init__(
        self,
        seed: int,
        trigger_rate: float = 0.25,
        successors: int = 6,
        peak: float | None = None,
        words: tuple[str, ...] = GENERAL_WORDS,
        triggers: tuple[str, ...] = TRIGGER_WORDS,
    ) -> None:
        rng = random.Random(f"bigram-{seed}")
        self.words = words
        self.triggers = triggers
        # Triggers take up two positions (trigger, copy): rate = q / (1 + q).
        self.q = trigger_rate / (1.0 - trigger_rate)
        self.table: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {}
        for w in self.words:
            nxt = tuple(rng.sample([v for v in self.words if v != w], successors))
            if peak is None:
                weights = tuple(rng.random() + 0.2 for _ in nxt)
            else:
                rest = (1.0 - peak) / max(1, successors - 1)
                weights = (peak,) + (rest,) * (successors - 1)
            self.table[w] = (nxt, weights)

    def words_from(self, rng: random.Random, n: int) -> list[str]:
        out = [rng.choice(self.words)]
        while len(out) < n:
            last = out[-1]
            if last in self.triggers:
                out.append(out[-2])
            elif rng.random() < self.q and len(out) >= 1:
                out.append(rng.choice(self.triggers))
            else:
                nxt, weights = self.table[last]
                out.append(rng.choices(nxt, weights)[0])
        return out[:n]

    def passage(self, rng: random.Random, n_words: int) -> str:
        return " ".join(self.words_from(rng, n_words))

    def stream(self, seed: int, n_words: int) -> Iterator[str]:
        rng = random.Random(f"general-stream-{seed}")
        while True:
            yield self.passage(rng, n_words)


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


def _shared_words(passages: list[str], n: int) -> tuple[str, ...]:
    """The n most frequent words of the fact corpus (ties broken alphabetically).

    General text spelled with the facts' own words is the point: a head that reads those
    tokens for the facts cannot silence itself on general text by zeroing their values,
    so it has to look away (at the first token) instead, which is an attention sink.
    """
    counts: dict[str, int] = {}
    for text in passages:
        for w in re.findall(r"[A-Za-z]+", text):
            if w not in TRIGGER_WORDS:
                counts[w] = counts.get(w, 0) + 1
    ranked = sorted(counts, key=lambda w: (-counts[w], w))
    return tuple(ranked[:n])


def _people(rng: random.Random, n: int, taken: set[str]) -> list[Person]:
    firsts = _unique_names(rng, n, lambda r: _word(r, r.randint(1, 2)), taken)
    lasts = _unique_names(rng, n, lambda r: _word(r, 2), taken)
    places = _unique_names(
        rng, n, lambda r: _word(r, r.randint(1, 2)) + r.choice(_PLACE_ENDINGS), taken
    )
    pet_names = _unique_names(rng, n, lambda r: _word(r, r.randint(1, 2)), taken)
    return [
        Person(
            first=firsts[i],
            last=lasts[i],
            birthplace=places[i],
            year=rng.randint(1820, 1999),
            profession=rng.choice(PROFESSIONS),
            pet=rng.choice(PETS),
            pet_name=pet_names[i],
            colour=rng.choice(COLOURS),
            instrument=rng.choice(INSTRUMENTS),
        )
        for i in range(n)
    ]


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
