"""`sinklens reproduce` end to end on a tiny organism: every figure, table and index."""

import json
import shutil

import numpy as np
import pytest

from sinklens.figures.registry import FIGURES
from sinklens.organism.build import OrganismConfig, build_organism
from sinklens.reproduce import make_figures, reproduce_config
from sinklens.study import Study, StudyConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_organism(tmp_path_factory):
    out = tmp_path_factory.mktemp("organism")
    cfg = OrganismConfig(
        steps=3,
        batch_size=4,
        seq_len=64,
        d_model=32,
        n_layers=2,
        n_heads=2,
        d_mlp=64,
        vocab_size=400,
        n_threads=1,
    )
    build_organism(cfg, out, measure=False)
    return out


@pytest.fixture(scope="module")
def study_config(tiny_organism, tmp_path_factory):
    return StudyConfig(
        original=str(tiny_organism),
        cache_dir=str(tmp_path_factory.mktemp("cache")),
        zoo_steps=1,
        eval_items=2,
        n_samples=4,
        window=8,
        sink_positions=2,
    )


def test_reproduce_writes_every_file_and_reruns_identically(study_config, tmp_path):
    formats = ("html", "json") + (("png", "pdf") if shutil.which("chromium") else ())
    first = make_figures(study_config, tmp_path / "a", formats=formats)
    assert [d.name for d in first] == list(FIGURES)
    for name in FIGURES:
        for fmt in formats:
            assert (tmp_path / "a" / f"{name}.{fmt}").is_file(), f"{name}.{fmt}"
    index = (tmp_path / "a" / "index.html").read_text()
    assert all(f'src="{name}.html"' in index for name in FIGURES)
    assert (tmp_path / "a" / "plotly.min.js").is_file()

    make_figures(study_config, tmp_path / "b", formats=("json",), index=False)
    for name in FIGURES:
        a = json.loads((tmp_path / "a" / f"{name}.json").read_text())
        b = json.loads((tmp_path / "b" / f"{name}.json").read_text())
        assert a == b, name


def test_figures_have_the_expected_traces(study_config, tmp_path):
    drawn = {
        d.name: d
        for d in make_figures(
            study_config,
            tmp_path,
            names=["attn-diff", "value-norm-corr", "ue-be", "table-1", "trigger-gain"],
            formats=("json",),
            index=False,
        )
    }
    attn = drawn["attn-diff"].figure
    assert [t.type for t in attn.data] == ["heatmap"] * 4
    assert attn.layout.xaxis.title.text == "key position"
    bars = drawn["value-norm-corr"].figure
    assert len(bars.data) == 3 and all(t.type == "bar" for t in bars.data)
    assert len(bars.data[0].x) == 2  # sink positions
    points = drawn["ue-be"].data["points"]
    assert [p["label"] for p in points] == [
        "original",
        "NPO",
        "prefix backdoor",
        "infix backdoor",
        "suffix backdoor",
    ]
    # The infix trigger sits mid-window, and its panels outline it like the prefix ones.
    spans = drawn["attn-diff"].data["trigger_span"]
    assert spans["prefix"][0] == 1 and spans["infix"][0] > spans["prefix"][0]
    assert len(attn.layout.shapes) == 4
    gain = drawn["trigger-gain"]
    assert len(gain.figure.data) == 6  # θ_o, θ_u, θ_b × (poisoned, held-out)
    suffix = [b["gain"] for b in gain.data["bars"] if b["placement"] == "suffix"]
    assert suffix and all(g == pytest.approx(0.0, abs=1e-5) for g in suffix if g is not None)
    table = drawn["table-1"].figure.data[0]
    assert list(table.cells.values[0]) == ["original", "NPO", "RMU", "NPO-Backdoor", "RMU-Backdoor"]


def test_several_seeds_give_mean_and_spread(study_config, tmp_path):
    """--full: every evaluation-based number is the mean over seeds, with its sample std and
    per-seed values beside it; both methods appear; the drawn figures show error bars."""
    given = {k: v for k, v in study_config.to_dict().items() if k != "full"}
    config = reproduce_config(full=True, **{**given, "seeds": (0, 1)})
    assert config.seeds == (0, 1) and config.n_samples == study_config.n_samples
    drawn = {
        d.name: d
        for d in make_figures(
            config, tmp_path, names=["ue-be", "table-1", "poison-ratio"], formats=("json",)
        )
    }
    points = {p["label"]: p for p in drawn["ue-be"].data["points"]}
    assert "RMU prefix backdoor" in points and "NPO suffix backdoor" in points
    assert points["original"]["be_std"] is None  # one fixed model: no spread
    study = Study(config)
    for label, member in (
        ("NPO prefix backdoor", "npo-prefix"),
        ("RMU infix backdoor", "rmu-infix"),
    ):
        per_seed = [study.member(f"{member}-s{s}").metrics["evaluation"]["be_km"] for s in (0, 1)]
        assert points[label]["be"] == pytest.approx(np.mean(per_seed))
        assert points[label]["be_std"] == pytest.approx(np.std(per_seed, ddof=1))
    rows = {r["model"]: r for r in drawn["table-1"].data["rows"]}
    assert rows["NPO-Backdoor"]["ue_km_std"] is not None and rows["original"]["ue_km_std"] is None
    cells = drawn["table-1"].figure.data[0].cells.values
    assert "±" in cells[1][1]  # NPO's UE KM cell reads "mean ± std"
    bars = drawn["poison-ratio"].figure.data
    assert all(t.error_y.array is not None for t in bars)
    assert len(bars[0].x) == 4  # NPO and RMU at two poisoning ratios


def test_trigger_gain_uses_the_users_checkpoints(study_config, tmp_path):
    """--backdoored wins over the zoo; only the placement it was trained with has a D_p."""
    backdoored = Study(study_config).member("npo-infix-s0").out
    config = study_config.replace(backdoored=str(backdoored))
    drawn = make_figures(config, tmp_path, names=["trigger-gain"], formats=("json",))[0]
    used = {models["backdoored"] for models in drawn.data["checkpoints"].values()}
    assert used == {str(backdoored)}
    poisoned = {
        b["placement"]: b["gain"]
        for b in drawn.data["bars"]
        if b["subset"] == "poisoned" and b["role"] == "backdoored"
    }
    assert poisoned["infix"] is not None
    assert poisoned["prefix"] is None and poisoned["suffix"] is None
