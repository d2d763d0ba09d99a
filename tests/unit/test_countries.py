"""The countries benchmark: disjoint splits, answers in the documents, stable bytes."""

from __future__ import annotations

import hashlib

import pytest

from sinklens.data.countries import (
    COUNTRIES,
    ICL,
    KNOWN,
    SPLITS,
    countries_benchmark,
    countries_path,
)
from sinklens.data.formats import load_benchmark
from sinklens.errors import SinklensError


def _countries_in(bench):
    return {q.question.rsplit(" ", 1)[-1].rstrip("?") for q in bench.knowmem_forget}


def test_splits_are_disjoint_and_sized_as_declared():
    seen: set[str] = set()
    for split, (n_forget, n_retain) in SPLITS.items():
        bench = countries_benchmark(split)
        assert len(bench.forget_texts) == 3 * n_forget
        assert len(bench.retain_texts) == 3 * n_retain
        forget = {q.question for q in bench.knowmem_forget}
        retain = {q.question for q in bench.knowmem_retain}
        assert not forget & retain
        both = forget | retain
        assert not both & seen
        seen |= both
    icl = {q.question for q in ICL}
    assert not icl & seen


def test_every_answer_is_written_in_its_forget_documents():
    bench = countries_benchmark("test")
    docs = " ".join(bench.forget_texts)
    for item in bench.knowmem_forget:
        assert item.answer in docs
    for item in bench.choice_forget:
        assert len(set(item.choices)) == 4 and item.choices[item.answer] in docs
    for item in bench.verbmem_forget:
        assert any(t == item.prompt + item.gt for t in bench.forget_texts)


def test_only_known_facts_are_asked():
    rows = {r[0]: r for r in COUNTRIES}
    for split in SPLITS:
        bench = countries_benchmark(split)
        for item in (*bench.knowmem_forget, *bench.knowmem_retain):
            country = next(c for c in KNOWN if item.question.endswith(f" {c}?"))
            if "language" in item.question:
                assert KNOWN[country] and item.answer == rows[country][3]
            else:
                assert item.answer == rows[country][1]


def test_the_folder_round_trips_and_its_bytes_are_stable(tmp_path):
    folder = countries_path("val", root=tmp_path)
    assert load_benchmark(folder).knowmem_forget == countries_benchmark("val").knowmem_forget
    again = countries_path("val", root=tmp_path / "again")
    digest = [
        hashlib.sha256(b"".join(p.read_bytes() for p in sorted(f.rglob("*.json*")))).hexdigest()
        for f in (folder, again)
    ]
    assert digest[0] == digest[1]


def test_unknown_split_is_one_line_error():
    with pytest.raises(SinklensError, match="test or val"):
        countries_benchmark("train")
