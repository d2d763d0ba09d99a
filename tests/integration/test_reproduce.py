"""`sinklens reproduce` end to end on a tiny organism: every figure, table and index."""

import json
import shutil

import pytest

from sinklens.figures.paper import FIGURES
from sinklens.organism.build import OrganismConfig, build_organism
from sinklens.reproduce import make_figures
from sinklens.study import StudyConfig

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
            names=["attn-diff", "value-norm-corr", "ue-be", "table-1"],
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
    table = drawn["table-1"].figure.data[0]
    assert list(table.cells.values[0]) == ["original", "NPO", "RMU", "NPO-Backdoor", "RMU-Backdoor"]
