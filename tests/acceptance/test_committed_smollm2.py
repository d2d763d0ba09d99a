"""figures/smollm2/ holds what `sinklens reproduce --model smollm2` makes, checked the way
figures/ is: every PNG has its JSON, every JSON redraws with today's code, its caption is
what today's caption code says of its numbers, it came from the pinned SmolLM2, and the
cheapest numbers (θ_o's first-token α per layer and head) are recomputed here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sinklens.figures.captions import caption
from sinklens.figures.registry import FIGURES
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
    # The model is identified by its GGUF's sha256: the committed figures were made before
    # checkpoint_fingerprint stopped hashing the GGUF's local path (docs/real-model.md).
    from sinklens.real_models import REAL_MODELS

    pinned = REAL_MODELS["smollm2"].gguf_sha256
    for name in ("sinks", "attn-diff", "value-norm-corr"):
        numbers = load(name)
        sources = [
            s
            for prov in (
                numbers["provenance"].values() if name == "attn-diff" else [numbers["provenance"]]
            )
            for s in prov["gguf_sources"].values()
        ]
        assert sources and all(s["sha256"] == pinned for s in sources), name
    for name in KEY_FIGURES:
        run = load(name)["run"]
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
