"""figures/ holds what `sinklens reproduce` makes today, checked from the JSON, not the pixels.

Every committed PNG has its JSON; every JSON redraws with today's drawing code into the
same traces; it was computed from today's shipped organism; and the cheapest of them (the
original model's sink statistics) is recomputed and compared number by number.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from sinklens.checkpoint import checkpoint_fingerprint
from sinklens.figures.registry import FIGURES
from sinklens.organism import organism_path

FIGURES_DIR = Path(__file__).parents[2] / "figures"
KEY_FIGURES = ("ue-be", "attn-diff", "logits-by-position", "value-norm-corr", "sinks", "table-1")


def load(name):
    return json.loads((FIGURES_DIR / f"{name}.json").read_text())


def fingerprints(node):
    """Every `fingerprints` mapping anywhere in a provenance tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "fingerprints" and isinstance(value, dict):
                yield value
            else:
                yield from fingerprints(value)
    elif isinstance(node, list):
        for value in node:
            yield from fingerprints(value)


@pytest.mark.parametrize("name", KEY_FIGURES)
def test_key_figure_is_committed_with_its_numbers(name):
    assert (FIGURES_DIR / f"{name}.png").is_file(), (
        f"figures/{name}.png is missing; run make figures"
    )
    assert (FIGURES_DIR / f"{name}.json").is_file(), f"figures/{name}.json is missing"


def test_every_committed_png_has_json():
    for png in FIGURES_DIR.glob("*.png"):
        assert png.with_suffix(".json").is_file(), png.name


@pytest.mark.parametrize("name", KEY_FIGURES)
def test_json_redraws_with_todays_code(name):
    figure = FIGURES[name].draw(load(name))
    assert figure.data, f"{name} redraws empty"


def test_figures_come_from_the_shipped_organism():
    today = checkpoint_fingerprint(organism_path())
    found = [
        fp["original"]
        for name in KEY_FIGURES
        for fp in fingerprints(load(name))
        if "original" in fp
    ]
    assert found, "no provenance with the original model's fingerprint"
    assert set(found) == {today}, "figures/ was made from another organism; run make figures"


@pytest.mark.slow
def test_sink_numbers_match_a_recomputation():
    from sinklens.analyze import sink_statistics
    from sinklens.data.formats import load_benchmark
    from sinklens.models import load_models
    from sinklens.organism import world_path

    saved = load("sinks")
    settings = saved["provenance"]["settings"]
    n = saved["provenance"]["n_samples"]
    texts = list(load_benchmark(world_path()).general_texts)[: max(n.values())]
    models = load_models({"original": organism_path()})
    res = sink_statistics(
        models, texts, window=saved["window"], max_length=settings.get("max_length")
    )
    np.testing.assert_allclose(
        res.alpha["original"][:, :, 0].numpy(),
        np.asarray(saved["alpha_first_token"]["original"]),
        atol=1e-4,
    )
