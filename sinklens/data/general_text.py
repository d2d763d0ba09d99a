"""General text for the organism: "bigram-backcopy" text (Guo et al. 2024, arXiv 2410.13835).

A bigram Markov chain over real-looking words in which some "trigger" words are followed by
a copy of the word before them. A head that only has to act at triggers and must stay quiet
everywhere else is what makes attention sinks emerge in training; the facts alone do not
produce them. `_shared_words` picks the fact corpus's most frequent words to spell it with.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

__all__ = ["GENERAL_WORDS", "TRIGGER_WORDS", "BigramBackcopy"]

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
