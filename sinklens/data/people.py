"""The synthetic world's fictional people: invented names, their facts, and their prose.

Names are built from random syllables (unique across the world), facts are drawn from fixed
lists (profession, pet, colour, instrument), and each person's "book" passage is one
opening, one middle and one ending from varied templates, so the book is not one repeated
sentence frame. Everything is a pure function of the `random.Random` passed in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sinklens.data.formats import KnowMemItem

__all__ = ["COLOURS", "INSTRUMENTS", "PETS", "PROFESSIONS", "Person"]

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
