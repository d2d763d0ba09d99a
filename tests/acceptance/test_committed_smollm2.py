"""figures/smollm2/ holds what `sinklens reproduce --model smollm2` makes, checked the way
figures/ is: every PNG has its JSON, every JSON redraws with today's code, its caption is
what today's caption code says of its numbers, it came from the pinned SmolLM2, and the
cheapest numbers (θ_o's first-token α per layer and head) are recomputed here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sinklens.checkpoint import checkpoint_fingerprint
from sinklens.figures.captions import caption
from sinklens.figures.paper import FIGURES
from sinklens.reproduce import MODEL_STUDIES

pytestmark = pytest.mark.xdist_group("smollm2")

FIGURES_DIR = Path(__file__).parents[2] / "figures" / "smollm2"
KEY_FIGURES = ("ue-be", "table-1", "trigger-gain", "sinks", "attn-diff", "patching")


def load(name):
    return json.loads((FIGURES_DIR / f"{name}.json").read_text())


@pytest.mark.parametrize("name", KEY_FIGURES)
def test_key_figure_is_committed_and_redraws(name):
    assert (FIGURES_DIR / f"{name}.png").is_file(), f"figures/smollm2/{name}.png is missing"
    numbers = load(name)
    assert FIGURES[name].draw(numbers).data
    assert numbers["caption"] == caption(name, numbers)


def test_every_committed_png_has_json():
    for png in FIGURES_DIR.glob("*.png"):
        assert png.with_suffix(".json").is_file(), png.name


def test_the_study_ran_on_the_pinned_model_and_benchmark():
    from sinklens.real_models import fetch

    fingerprint = checkpoint_fingerprint(fetch("smollm2"))
    for name in KEY_FIGURES:
        run = load(name)["run"]
        assert run["original_fingerprint"] == fingerprint, name
        assert run["data"].endswith("countries-test-v2"), run["data"]
        settings = dict((k, v) for k, v in run["study"]["zoo_settings"])
        assert settings == {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in MODEL_STUDIES["smollm2"].zoo_settings
        }


def test_the_original_models_sinks_are_recomputed():
    from sinklens.analyze import sink_statistics
    from sinklens.data.countries import countries_path
    from sinklens.data.formats import load_benchmark
    from sinklens.models import load_models
    from sinklens.real_models import fetch

    saved = load("sinks")
    settings = saved["provenance"]["settings"]
    models = load_models({"original": fetch("smollm2")})
    texts = list(load_benchmark(countries_path("test")).retain_texts)[
        : saved["run"]["study"]["n_samples"]
    ]
    res = sink_statistics(
        models, texts, window=saved["window"], max_length=settings.get("max_length", 256)
    )
    alpha = np.asarray(res.alpha["original"][:, :, 0], dtype=float)
    np.testing.assert_allclose(alpha, np.asarray(saved["alpha_first_token"]["original"]), atol=1e-4)
