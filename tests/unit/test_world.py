"""The synthetic world and the benchmark formats: deterministic, disjoint, round-trippable."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from sinklens.data.formats import (
    Benchmark,
    ChoiceItem,
    KnowMemItem,
    VerbMemItem,
    load_benchmark,
    write_benchmark,
)
from sinklens.data.world import (
    GENERAL_WORDS,
    TRIGGER_WORDS,
    BigramBackcopy,
    WorldConfig,
    choice_text,
    make_world,
)
from sinklens.errors import SinklensError


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(folder)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    write_benchmark(make_world(WorldConfig(seed=3)).benchmark, tmp_path / "a")
    write_benchmark(make_world(WorldConfig(seed=3)).benchmark, tmp_path / "b")
    write_benchmark(make_world(WorldConfig(seed=4)).benchmark, tmp_path / "c")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_round_trip(tmp_path: Path) -> None:
    bench = make_world().benchmark
    write_benchmark(bench, tmp_path / bench.name)
    assert load_benchmark(tmp_path / bench.name) == bench


def test_forget_and_retain_people_are_disjoint() -> None:
    world = make_world()
    names = lambda people: {p.first for p in people} | {p.last for p in people}  # noqa: E731
    places = lambda people: {p.birthplace for p in people}  # noqa: E731
    assert not names(world.forget_people) & names(world.retain_people)
    assert not places(world.forget_people) & places(world.retain_people)
    for person in world.retain_people:
        assert not any(person.name in t for t in world.benchmark.forget_texts)
    for person in world.forget_people:
        assert not any(person.name in t for t in world.benchmark.retain_texts)


def test_qa_splits_are_disjoint() -> None:
    b = make_world().benchmark
    questions = [
        {it.question for it in split}
        for split in (
            b.knowmem_forget,
            b.knowmem_forget_icl,
            b.knowmem_retain,
            b.knowmem_retain_icl,
        )
    ]
    for i, a in enumerate(questions):
        assert a
        for other in questions[i + 1 :]:
            assert not a & other


def test_verbmem_is_the_book_split_in_two() -> None:
    b = make_world().benchmark
    assert len(b.verbmem_forget) == len(b.forget_texts)
    for item, text in zip(b.verbmem_forget, b.forget_texts, strict=True):
        assert text == f"{item.prompt} {item.gt}"


def test_choice_items_are_valid() -> None:
    b = make_world().benchmark
    for item in (*b.choice_forget, *b.choice_retain):
        assert len(set(item.choices)) == 4
        assert 0 <= item.answer < 4
        assert choice_text(item).endswith("ABCD"[item.answer])


def test_general_text_is_bigram_backcopy() -> None:
    gen = BigramBackcopy(seed=0, trigger_rate=0.25)
    import random

    words = gen.words_from(random.Random(0), 4000)
    assert set(words) <= set(GENERAL_WORDS) | set(TRIGGER_WORDS)
    for i in range(1, len(words) - 1):
        if words[i] in TRIGGER_WORDS:
            assert words[i + 1] == words[i - 1]
    rate = sum(w in TRIGGER_WORDS for w in words) / len(words)
    assert 0.2 < rate < 0.3


def test_bad_world_config() -> None:
    with pytest.raises(SinklensError):
        WorldConfig(n_forget=1)
    with pytest.raises(SinklensError):
        WorldConfig(trigger_rate=0.9)


def test_load_missing_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(SinklensError, match="nope"):
        load_benchmark(tmp_path / "nope")


def test_load_malformed_json_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "knowmem").mkdir()
    (tmp_path / "knowmem" / "forget_qa.json").write_text("[{")
    with pytest.raises(SinklensError, match=r"forget_qa\.json"):
        load_benchmark(tmp_path)
    (tmp_path / "knowmem" / "forget_qa.json").write_text(json.dumps([{"question": "q"}]))
    with pytest.raises(SinklensError, match=r"forget_qa\.json"):
        load_benchmark(tmp_path)


def test_load_bad_choice_line_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "choice").mkdir()
    (tmp_path / "choice" / "forget.jsonl").write_text(
        json.dumps({"question": "q", "choices": ["a", "b"], "answer": 5}) + "\n"
    )
    with pytest.raises(SinklensError, match=r"forget\.jsonl"):
        load_benchmark(tmp_path)


def test_missing_parts_are_empty(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "forget.txt").write_text("first passage\nline two\n\n\nsecond\n")
    bench = load_benchmark(tmp_path)
    assert bench.forget_texts == ("first passage\nline two", "second")
    assert bench.retain_texts == () and bench.knowmem_forget == () and bench.choice_retain == ()


def test_write_is_deterministic_and_sorted(tmp_path: Path) -> None:
    bench = Benchmark(
        name="x",
        forget_texts=("a b", "c"),
        retain_texts=("r",),
        knowmem_forget=(KnowMemItem("q?", "a"),),
        verbmem_forget=(VerbMemItem("p", "g"),),
        choice_forget=(ChoiceItem("q", ("a", "b"), 1),),
    )
    write_benchmark(bench, tmp_path)
    text = (tmp_path / "knowmem" / "forget_qa.json").read_text()
    assert text == '[\n  {\n    "answer": "a",\n    "question": "q?"\n  }\n]\n'
    assert (tmp_path / "raw" / "forget.txt").read_text() == "a b\n\nc\n"
    assert load_benchmark(tmp_path) == Benchmark(
        name=tmp_path.name,
        **{
            k: getattr(bench, k)
            for k in (
                "forget_texts",
                "retain_texts",
                "knowmem_forget",
                "verbmem_forget",
                "choice_forget",
            )
        },
    )


def test_passage_with_blank_line_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SinklensError):
        write_benchmark(Benchmark(name="x", forget_texts=("a\n\nb",)), tmp_path)
