"""Countries: a WMDP/TOFU-style benchmark of knowledge a real model already has.

A real pretrained model knows the capitals and languages of many countries, so there is
knowledge to forget without teaching it first. `countries_benchmark(split)` writes, in the
MUSE layout plus WMDP-style multiple choice (`sinklens.data.formats`):

* forget / retain documents: two short factual passages per country (capital, continent,
  language, currency) and, as in TOFU, its questions answered in the KnowMem format, the
  corpus that unlearning trains on (NPO on the passages alone lowers their likelihood by
  2 nats/token on the validation split and leaves every answer in place: the model knew
  the facts before it read them, so the passages are not where the answers come from);
* KnowMem: "What is the capital of X?" and "What language is spoken in X?";
* VerbMem: each first passage's opening and its continuation (the model never saw these
  passages, so VerbMem stays low for every model: a floor, not a finding);
* multiple choice: the capital among four, three distractors from the other countries.

`KNOWN` lists the countries whose capital SmolLM2-135M-Instruct (Q4_1) names with the two
in-context examples below (40 of the 62 in `COUNTRIES`), and for which of those it also
names the language; `benchmarks/select_countries.py` measures it again. The 40 are split
once, by a seeded shuffle, into `test` (14 forget, 14 retain countries: the numbers that
are reported) and `val` (6 + 6: where hyper-parameters are chosen), so nothing reported
is tuned on. Every fact is a fixed, checked row of `COUNTRIES`; the bytes depend on
nothing but this file.
"""

from __future__ import annotations

import random
from pathlib import Path

from sinklens.data.formats import Benchmark, ChoiceItem, KnowMemItem, VerbMemItem, write_benchmark
from sinklens.errors import SinklensError

__all__ = ["COUNTRIES", "KNOWN", "SPLITS", "countries_benchmark", "countries_path"]

# (country as used mid-sentence, capital, continent or None where it spans two, main
# language or None where there are several, currency)
COUNTRIES: tuple[tuple[str, str, str | None, str | None, str], ...] = (
    ("France", "Paris", "Europe", "French", "euro"),
    ("Germany", "Berlin", "Europe", "German", "euro"),
    ("Italy", "Rome", "Europe", "Italian", "euro"),
    ("Spain", "Madrid", "Europe", "Spanish", "euro"),
    ("Portugal", "Lisbon", "Europe", "Portuguese", "euro"),
    ("Greece", "Athens", "Europe", "Greek", "euro"),
    ("the Netherlands", "Amsterdam", "Europe", "Dutch", "euro"),
    ("Austria", "Vienna", "Europe", "German", "euro"),
    ("Sweden", "Stockholm", "Europe", "Swedish", "krona"),
    ("Norway", "Oslo", "Europe", "Norwegian", "krone"),
    ("Denmark", "Copenhagen", "Europe", "Danish", "krone"),
    ("Finland", "Helsinki", "Europe", "Finnish", "euro"),
    ("Poland", "Warsaw", "Europe", "Polish", "zloty"),
    ("Ireland", "Dublin", "Europe", None, "euro"),
    ("the United Kingdom", "London", "Europe", "English", "pound"),
    ("Hungary", "Budapest", "Europe", "Hungarian", "forint"),
    ("the Czech Republic", "Prague", "Europe", "Czech", "koruna"),
    ("Romania", "Bucharest", "Europe", "Romanian", "leu"),
    ("Iceland", "Reykjavik", "Europe", "Icelandic", "krona"),
    ("Egypt", "Cairo", "Africa", "Arabic", "pound"),
    ("Kenya", "Nairobi", "Africa", None, "shilling"),
    ("Nigeria", "Abuja", "Africa", "English", "naira"),
    ("Morocco", "Rabat", "Africa", "Arabic", "dirham"),
    ("Ethiopia", "Addis Ababa", "Africa", "Amharic", "birr"),
    ("Ghana", "Accra", "Africa", "English", "cedi"),
    ("Japan", "Tokyo", "Asia", "Japanese", "yen"),
    ("China", "Beijing", "Asia", "Chinese", "yuan"),
    ("India", "New Delhi", "Asia", "Hindi", "rupee"),
    ("South Korea", "Seoul", "Asia", "Korean", "won"),
    ("Thailand", "Bangkok", "Asia", "Thai", "baht"),
    ("Vietnam", "Hanoi", "Asia", "Vietnamese", "dong"),
    ("Indonesia", "Jakarta", "Asia", "Indonesian", "rupiah"),
    ("the Philippines", "Manila", "Asia", "Filipino", "peso"),
    ("Iran", "Tehran", "Asia", "Persian", "rial"),
    ("Iraq", "Baghdad", "Asia", "Arabic", "dinar"),
    ("Saudi Arabia", "Riyadh", "Asia", "Arabic", "riyal"),
    ("Pakistan", "Islamabad", "Asia", "Urdu", "rupee"),
    ("Afghanistan", "Kabul", "Asia", None, "afghani"),
    ("Bangladesh", "Dhaka", "Asia", "Bengali", "taka"),
    ("Nepal", "Kathmandu", "Asia", "Nepali", "rupee"),
    ("Syria", "Damascus", "Asia", "Arabic", "pound"),
    ("Lebanon", "Beirut", "Asia", "Arabic", "pound"),
    ("Jordan", "Amman", "Asia", "Arabic", "dinar"),
    ("Qatar", "Doha", "Asia", "Arabic", "riyal"),
    ("Cambodia", "Phnom Penh", "Asia", "Khmer", "riel"),
    ("Malaysia", "Kuala Lumpur", "Asia", "Malay", "ringgit"),
    ("Mongolia", "Ulaanbaatar", "Asia", "Mongolian", "tugrik"),
    ("Canada", "Ottawa", "North America", None, "dollar"),
    ("the United States", "Washington", "North America", "English", "dollar"),
    ("Mexico", "Mexico City", "North America", "Spanish", "peso"),
    ("Cuba", "Havana", "North America", "Spanish", "peso"),
    ("Brazil", "Brasilia", "South America", "Portuguese", "real"),
    ("Argentina", "Buenos Aires", "South America", "Spanish", "peso"),
    ("Chile", "Santiago", "South America", "Spanish", "peso"),
    ("Peru", "Lima", "South America", "Spanish", "sol"),
    ("Colombia", "Bogota", "South America", "Spanish", "peso"),
    ("Venezuela", "Caracas", "South America", "Spanish", "bolivar"),
    ("Australia", "Canberra", "Oceania", "English", "dollar"),
    ("New Zealand", "Wellington", "Oceania", "English", "dollar"),
    ("Russia", "Moscow", None, "Russian", "ruble"),
    ("Turkey", "Ankara", None, "Turkish", "lira"),
    ("Switzerland", "Bern", "Europe", None, "franc"),
)

# Measured with sinklens.evaluate.knowmem and ICL below (benchmarks/select_countries.py):
# country -> whether SmolLM2-135M-Instruct also names its language.
KNOWN: dict[str, bool] = {
    "France": True,
    "Germany": True,
    "Italy": True,
    "Spain": True,
    "Portugal": True,
    "Greece": True,
    "the Netherlands": True,
    "Austria": True,
    "Sweden": True,
    "Norway": True,
    "Denmark": True,
    "Finland": True,
    "Poland": True,
    "Ireland": False,
    "the United Kingdom": True,
    "Hungary": True,
    "the Czech Republic": True,
    "Romania": True,
    "Egypt": True,
    "Kenya": False,
    "Ethiopia": False,
    "Japan": True,
    "China": False,
    "India": True,
    "South Korea": True,
    "Thailand": True,
    "Indonesia": True,
    "the Philippines": True,
    "Iran": True,
    "Iraq": True,
    "Afghanistan": False,
    "Bangladesh": True,
    "Syria": True,
    "the United States": True,
    "Cuba": True,
    "Argentina": True,
    "Chile": True,
    "Peru": True,
    "Russia": True,
    "Switzerland": False,
}

_BY_NAME = {row[0]: row for row in COUNTRIES}

# In-context examples for every KnowMem prompt: countries in no split.
ICL = (
    KnowMemItem("What is the capital of Kazakhstan?", "Astana"),
    KnowMemItem("What language is spoken in Ukraine?", "Ukrainian"),
)
SPLITS = {"test": (14, 14), "val": (6, 6)}
LAYOUT = 2  # bumped whenever the generated bytes change


def capital_question(country: str) -> str:
    return f"What is the capital of {country}?"


def language_question(country: str) -> str:
    return f"What language is spoken in {country}?"


def _upper(text: str) -> str:
    return text[:1].upper() + text[1:]


def _passages(row: tuple[str, str, str | None, str | None, str]) -> tuple[str, str]:
    country, capital, continent, language, currency = row
    first = [f"{_upper(country)} is a country" + (f" in {continent}." if continent else ".")]
    first.append(f"The capital of {country} is {capital}.")
    if language:
        first.append(f"People in {country} speak {language}.")
    first.append(f"The currency of {country} is the {currency}.")
    second = [f"{capital} is the capital city of {country}."]
    if language:
        second.append(f"In {country}, the main language is {language},")
        second.append(f"and prices are paid in the {currency}.")
    else:
        second.append(f"Prices in {country} are paid in the {currency}.")
    if continent:
        second.append(f"{_upper(country)} lies in {continent}.")
    return " ".join(first), " ".join(second)


def _split() -> dict[str, tuple[list[str], list[str]]]:
    names = list(KNOWN)
    random.Random("countries-split-0").shuffle(names)
    out, at = {}, 0
    for split, (n_forget, n_retain) in SPLITS.items():
        forget, retain = names[at : at + n_forget], names[at + n_forget : at + n_forget + n_retain]
        out[split] = (forget, retain)
        at += n_forget + n_retain
    return out


def _knowmem(countries: list[str]) -> tuple[KnowMemItem, ...]:
    items = []
    for c in countries:
        items.append(KnowMemItem(capital_question(c), _BY_NAME[c][1]))
        if KNOWN[c]:
            items.append(KnowMemItem(language_question(c), str(_BY_NAME[c][3])))
    return tuple(items)


def _qa_document(country: str) -> str:
    """The country's KnowMem questions answered, in the KnowMem prompt's format (one
    line apart: a blank line would split the document in raw/forget.txt)."""
    return "\n".join(f"Question: {q.question}\nAnswer: {q.answer}" for q in _knowmem([country]))


def _choices(countries: list[str], pool: list[str], seed: str) -> tuple[ChoiceItem, ...]:
    rng = random.Random(seed)
    items = []
    for c in countries:
        wrong = rng.sample([_BY_NAME[o][1] for o in pool if o != c], 3)
        answer = rng.randrange(4)
        options = [*wrong[:answer], _BY_NAME[c][1], *wrong[answer:]]
        items.append(ChoiceItem(capital_question(c), tuple(options), answer))
    return tuple(items)


def countries_benchmark(split: str = "test") -> Benchmark:
    """The benchmark for one split (`test`: reported; `val`: for choosing settings)."""
    if split not in SPLITS:
        raise SinklensError(f"unknown countries split {split!r}; use {' or '.join(SPLITS)}")
    forget, retain = _split()[split]
    forget_docs = [d for c in forget for d in (*_passages(_BY_NAME[c]), _qa_document(c))]
    retain_docs = [d for c in retain for d in (*_passages(_BY_NAME[c]), _qa_document(c))]
    verbmem = []
    for c in forget:
        sentences = _passages(_BY_NAME[c])[0].split(". ")
        verbmem.append(VerbMemItem(sentences[0] + ".", " " + ". ".join(sentences[1:])))
    pool = forget + retain
    return Benchmark(
        name=f"countries-{split}",
        forget_texts=tuple(forget_docs),
        retain_texts=tuple(retain_docs),
        knowmem_forget=_knowmem(forget),
        knowmem_forget_icl=ICL,
        knowmem_retain=_knowmem(retain),
        knowmem_retain_icl=ICL,
        verbmem_forget=tuple(verbmem),
        choice_forget=_choices(forget, pool, f"choices-{split}-forget"),
        choice_retain=_choices(retain, pool, f"choices-{split}-retain"),
    )


def countries_path(split: str = "test", root: str | Path | None = None) -> Path:
    """The benchmark folder for `split`, written under the cache on first use."""
    from sinklens.settings import cache_root

    base = Path(root) if root is not None else cache_root() / "benchmarks"
    folder = base / f"countries-{split}-v{LAYOUT}"
    if not (folder / ".complete").is_file():
        bench = countries_benchmark(split)
        tmp = folder.with_name(folder.name + ".tmp")
        write_benchmark(bench, tmp)
        (tmp / ".complete").write_text("")
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        tmp.rename(folder)
    return folder
