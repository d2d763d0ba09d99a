import json
import shutil

import numpy as np
import pytest

from sinklens.errors import SinklensError
from sinklens.figures import draw
from sinklens.figures.export import Drawn, save_figures, to_jsonable, write_index


def test_attention_difference_panels_share_a_zero_centred_scale():
    a = np.array([[0.0, 0.1], [0.2, -0.4]])
    fig = draw.attention_difference_figure(
        {"original": a, "backdoored": a / 2}, title="t", trigger_spans={"original": (1, 2)}
    )
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    assert len(heatmaps) == 2
    assert all(h.zmin == -0.4 and h.zmax == 0.4 for h in heatmaps)
    assert fig.layout.xaxis.title.text == "key position"
    assert fig.layout.yaxis.autorange == "reversed"
    assert len(fig.layout.shapes) == 1


def test_head_grid_has_one_panel_per_head():
    fig = draw.head_grid_figure(np.zeros((6, 3, 3)), title="t", columns=4)
    assert len(fig.data) == 6


def test_curves_with_bands_and_shading():
    fig = draw.curves_figure(
        {
            "prefix": {
                "clean": [1, 2, 3],
                "triggered": {"y": [1, 2, 4], "low": [0, 1, 3], "high": [2, 3, 5]},
            }
        },
        title="t",
        shade={"prefix": (1, 3)},
    )
    names = [t.name for t in fig.data if t.mode == "lines+markers"]
    assert names == ["clean", "triggered"]
    assert any(t.fill == "toself" for t in fig.data)


def test_grouped_bars_error_bars():
    fig = draw.grouped_bars_figure(
        ["pos 0", "pos 1"],
        {"r": [0.5, 0.7]},
        title="t",
        y_title="r",
        errors={"r": ([0.4, 0.6], [0.6, 0.9])},
    )
    bar = fig.data[0]
    assert list(bar.error_y.array) == pytest.approx([0.1, 0.2])
    assert list(bar.error_y.arrayminus) == pytest.approx([0.1, 0.1])


def test_tradeoff_shades_the_desired_regions():
    points = [
        {"label": "original", "ue": 0.9, "be": 0.9, "ut": 0.9},
        {"label": "NPO", "ue": 0.1, "be": 0.1, "ut": 0.8},
        {"label": "prefix", "ue": 0.1, "be": 0.8, "ut": 0.8},
    ]
    fig = draw.tradeoff_figure(points, title="t", references=("original", "NPO"))
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(rects) == 2
    assert rects[0].x0 == pytest.approx(0.5) and rects[0].y1 == pytest.approx(
        0.5
    )  # high BE, low UE
    assert rects[1].y0 == pytest.approx(0.85)  # high BE, high UT
    assert len([t for t in fig.data if t.type == "scatter"]) == 6


def test_table_formats_numbers():
    fig = draw.table_figure(["model", "KM"], [["orig", 0.123456], ["npo", 1]], title="t")
    assert list(fig.data[0].cells.values[1]) == ["0.12", "1"]


def test_to_jsonable_is_deterministic_and_plain():
    value = {"b": np.float32(1 / 3), "a": np.arange(2), "nan": float("nan")}
    assert (
        json.dumps(to_jsonable(value), sort_keys=True)
        == '{"a": [0, 1], "b": 0.33333334, "nan": null}'
    )


def test_save_figures_offline_html_and_json(tmp_path):
    fig = draw.heatmap_figure(np.eye(2), title="t", x_title="head", y_title="layer")
    drawn = [Drawn("one", fig, {"values": np.eye(2)}), Drawn("two", fig, {"values": [1]})]
    save_figures(drawn, tmp_path, formats=("html", "json"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "one.html",
        "one.json",
        "plotly.min.js",
        "two.html",
        "two.json",
    ]
    page = (tmp_path / "one.html").read_text()
    assert 'src="plotly.min.js"' in page and "cdn" not in page.lower()
    assert json.loads((tmp_path / "one.json").read_text()) == {"values": [[1.0, 0.0], [0.0, 1.0]]}
    index = write_index(drawn, tmp_path).read_text()
    assert 'src="one.html"' in index and 'src="two.html"' in index


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="static export needs chromium (CI installs it)"
)
def test_save_figures_static(tmp_path):
    fig = draw.heatmap_figure(np.eye(2), title="t", x_title="head", y_title="layer")
    save_figures([Drawn("one", fig, {})], tmp_path, formats=("png", "pdf"))
    assert (tmp_path / "one.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "one.pdf").read_bytes()[:4] == b"%PDF"


def test_output_path_that_is_a_file(tmp_path):
    target = tmp_path / "figures"
    target.write_text("keep me")
    with pytest.raises(SinklensError, match="is a file"):
        save_figures([], target)
    assert target.read_text() == "keep me"


def test_unknown_format(tmp_path):
    with pytest.raises(SinklensError, match="unknown figure format"):
        save_figures([], tmp_path, formats=("svgz",))


def test_symbols_are_drawn_with_subscripts():
    import plotly.graph_objects as go

    from sinklens.figures.draw import with_subscripts

    fig = go.Figure(go.Bar(x=["θ_b vs θ_u on D_f"], y=[1.0], name="θ_o"))
    fig.update_layout(title="r of θ_b")
    out = with_subscripts(fig).to_plotly_json()
    assert out["data"][0]["x"] == ["θ<sub>b</sub> vs θ<sub>u</sub> on D<sub>f</sub>"]
    assert out["data"][0]["name"] == "θ<sub>o</sub>"
    assert out["layout"]["title"]["text"] == "r of θ<sub>b</sub>"
    assert out["data"][0]["y"] == [1.0]
