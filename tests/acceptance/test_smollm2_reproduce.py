"""A two-step version of `sinklens reproduce --model smollm2`: the real model's whole study
(countries benchmark, zoo, every figure of its default set) on tiny settings, end to end."""

from __future__ import annotations

import json

import pytest

from sinklens.figures.registry import figure_names
from sinklens.reproduce import MODEL_STUDIES, make_figures, model_study_config

pytestmark = pytest.mark.xdist_group("smollm2")


def test_the_real_model_study_writes_every_file(tmp_path, monkeypatch):
    from sinklens.real_models import fetch

    original = fetch("smollm2")  # from the shared cache; everything else in a fresh one
    monkeypatch.setenv("SINKLENS_CACHE", str(tmp_path / "cache"))
    study = MODEL_STUDIES["smollm2"]
    names = [n for n in figure_names() if n not in study.default_skip]
    config = model_study_config(
        "smollm2",
        original=str(original),
        zoo_steps=1,
        eval_items=2,
        n_samples=3,
        window=8,
        patching_pairs=2,
        zoo_settings=(("batch_size", 2), ("max_length", 32)),
    )
    failures: dict[str, str] = {}
    drawn = make_figures(
        config,
        tmp_path / "out",
        names=names,
        formats=("html", "json"),
        on_failure=lambda name, err: failures.setdefault(name, repr(err)),
    )
    assert failures == {}
    assert [d.name for d in drawn] == names
    for name in names:
        numbers = json.loads((tmp_path / "out" / f"{name}.json").read_text())
        assert numbers, name
        assert (tmp_path / "out" / f"{name}.html").stat().st_size > 1000
    index = (tmp_path / "out" / "index.html").read_text()
    assert all(f"{name}.html" in index for name in names)
    sinks = json.loads((tmp_path / "out" / "sinks.json").read_text())
    assert sinks["first_token_is_bos"] is False  # SmolLM2 adds no BOS
    assert len(sinks["layers"]) == 30
