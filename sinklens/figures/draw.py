"""Pure drawing functions: numbers in, plotly figure out, no side effects.

Each function takes plain arrays (numpy or anything `np.asarray` accepts) and labels, so a
notebook can draw its own numbers with them as easily as `sinklens reproduce` does.
Positions on axes are 0-based token indices, as everywhere in sinklens.
"""

from __future__ import annotations

import html
import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

DIVERGING = "RdBu_r"
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f")


def _symmetric_limit(arrays: Sequence[np.ndarray]) -> float:
    finite = [np.nanmax(np.abs(a)) for a in arrays if np.size(a)]
    limit = float(max(finite, default=0.0))
    return limit if limit > 0 else 1.0


def attention_difference_figure(
    maps: Mapping[str, Any],
    *,
    title: str,
    trigger_spans: Mapping[str, tuple[int, int]] | None = None,
) -> go.Figure:
    """Side-by-side ΔA heatmaps (query × key), one shared zero-centred colour scale.

    `trigger_spans[panel] = (start, stop)` outlines the trigger's keys in that panel.
    """
    panels = {name: np.asarray(m, dtype=float) for name, m in maps.items()}
    limit = _symmetric_limit(list(panels.values()))
    fig = make_subplots(
        rows=1, cols=len(panels), subplot_titles=list(panels), horizontal_spacing=0.06
    )
    for col, (name, grid) in enumerate(panels.items(), start=1):
        fig.add_trace(
            go.Heatmap(
                z=grid,
                zmin=-limit,
                zmax=limit,
                colorscale=DIVERGING,
                showscale=col == len(panels),
                colorbar={"title": "ΔA"},
                hovertemplate="query %{y}<br>key %{x}<br>ΔA %{z:.4f}<extra>" + name + "</extra>",
            ),
            row=1,
            col=col,
        )
        span = (trigger_spans or {}).get(name)
        if span is not None:
            fig.add_vrect(
                x0=span[0] - 0.5,
                x1=span[1] - 0.5,
                line_width=1.5,
                line_color="black",
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text="key position", row=1, col=col)
        fig.update_yaxes(
            title_text="query position" if col == 1 else None, autorange="reversed", row=1, col=col
        )
    fig.update_layout(title=title, width=max(520, 430 * len(panels)), height=470)
    return fig


def head_grid_figure(
    maps: Any,
    *,
    title: str,
    head_labels: Sequence[str] | None = None,
    columns: int = 4,
) -> go.Figure:
    """One ΔA heatmap per head (`maps` is head × query × key), shared colour scale."""
    grids = np.asarray(maps, dtype=float)
    n = grids.shape[0]
    labels = list(head_labels or [f"head {h}" for h in range(n)])
    rows = (n + columns - 1) // columns
    limit = _symmetric_limit([grids])
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=labels, vertical_spacing=0.08)
    for h in range(n):
        fig.add_trace(
            go.Heatmap(
                z=grids[h],
                zmin=-limit,
                zmax=limit,
                colorscale=DIVERGING,
                showscale=h == 0,
                colorbar={"title": "ΔA"},
            ),
            row=h // columns + 1,
            col=h % columns + 1,
        )
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=title, width=260 * columns, height=250 * rows + 80)
    return fig


def curves_figure(
    panels: Mapping[str, Mapping[str, Any]],
    *,
    title: str,
    x_title: str = "token position",
    y_title: str = "logit of the true next token",
    shade: Mapping[str, tuple[int, int]] | None = None,
) -> go.Figure:
    """Line panels: `panels[panel][series] = values` drawn against position 0..n-1.

    A series given as a dict with `y`, optional `x`, `low` and `high` gets a band.
    `shade[panel] = (start, stop)` highlights the trigger positions.
    """
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=list(panels), shared_yaxes=True)
    for col, (panel, series) in enumerate(panels.items(), start=1):
        for i, (label, values) in enumerate(series.items()):
            spec = values if isinstance(values, Mapping) else {"y": values}
            y = np.asarray(spec["y"], dtype=float)
            x = np.asarray(spec.get("x", np.arange(len(y))))
            color = PALETTE[i % len(PALETTE)]
            if "low" in spec and "high" in spec:
                fig.add_trace(
                    go.Scatter(
                        x=np.concatenate([x, x[::-1]]),
                        y=np.concatenate(
                            [np.asarray(spec["high"], float), np.asarray(spec["low"], float)[::-1]]
                        ),
                        fill="toself",
                        line={"width": 0},
                        fillcolor=color,
                        opacity=0.2,
                        showlegend=False,
                        hoverinfo="skip",
                    ),
                    row=1,
                    col=col,
                )
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines+markers",
                    name=label,
                    legendgroup=label,
                    line={"color": color},
                    marker={"size": 4},
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
        span = (shade or {}).get(panel)
        if span is not None:
            fig.add_vrect(
                x0=span[0] - 0.5,
                x1=span[1] - 0.5,
                fillcolor="gray",
                opacity=0.15,
                line_width=0,
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text=x_title, row=1, col=col)
    fig.update_yaxes(title_text=y_title, row=1, col=1)
    fig.update_layout(title=title, width=max(520, 430 * len(panels)), height=430)
    return fig


def grouped_bars_figure(
    groups: Sequence[str],
    series: Mapping[str, Any],
    *,
    title: str,
    y_title: str,
    errors: Mapping[str, tuple[Any, Any]] | None = None,
    facets: Mapping[str, tuple[Sequence[str], Mapping[str, Any]]] | None = None,
    facet_errors: Mapping[str, Mapping[str, tuple[Any, Any]]] | None = None,
    shared_y: bool = True,
) -> go.Figure:
    """Bars per group, one colour per series; `errors[series] = (low, high)` as error bars.

    With `facets`, one subplot per facet, each `(groups, series)`, and error bars from
    `facet_errors[facet][series]`; `groups`, `series` and `errors` are then ignored.
    `shared_y=False` gives each facet its own y axis (facets in different units).
    """
    panels = facets or {"": (groups, series)}
    panel_errors = (facet_errors or {}) if facets else {"": errors or {}}
    fig = make_subplots(
        rows=1, cols=len(panels), subplot_titles=[p for p in panels], shared_yaxes=shared_y
    )
    shown: set[str] = set()  # each series in the legend once, whichever facet has it first
    for col, (panel, (panel_groups, panel_series)) in enumerate(panels.items(), start=1):
        for i, (label, values) in enumerate(panel_series.items()):
            y = np.asarray(values, dtype=float)
            error = None
            bounds = panel_errors.get(panel, {}).get(label)
            if bounds is not None:
                low, high = (np.asarray(e, dtype=float) for e in bounds)
                error = {
                    "type": "data",
                    "symmetric": False,
                    "array": high - y,
                    "arrayminus": y - low,
                }
            fig.add_trace(
                go.Bar(
                    x=list(panel_groups),
                    y=y,
                    name=label,
                    legendgroup=label,
                    error_y=error,
                    marker_color=PALETTE[i % len(PALETTE)],
                    showlegend=label not in shown,
                ),
                row=1,
                col=col,
            )
            shown.add(label)
    fig.update_yaxes(title_text=y_title, row=1, col=1)
    fig.update_layout(title=title, barmode="group", width=max(820, 420 * len(panels)), height=430)
    return fig


def _spread(
    std: float | None, value: float | None = None, interval: Sequence[float] | None = None
) -> dict[str, Any] | None:
    """A ± std error bar (the spread over seeds); else, given one, the interval over items
    around `value`; else none."""
    if std is not None:
        return {"type": "data", "array": [std], "visible": True}
    if interval is None or value is None:
        return None
    low, high = interval
    return {
        "type": "data",
        "symmetric": False,
        "array": [high - value],
        "arrayminus": [value - low],
        "visible": True,
    }


def tradeoff_figure(
    points: Sequence[Mapping[str, Any]],
    *,
    title: str,
    references: tuple[str, str],
) -> go.Figure:
    """The paper's Fig. 2: UE vs BE (a) and UT vs BE (b), desired regions shaded.

    `points` hold `label`, `be`, `ue`, `ut`, optionally `be_std`, `ue_std`, `ut_std` (error
    bars: the spread over seeds) or, without those, `be_ci95` etc. (intervals over items). The two reference models (original, normally
    unlearned) split each axis at the midpoint of their values; the desired region is
    high BE with low UE in (a), and high BE with high UT in (b).
    """
    by_label = {p["label"]: p for p in points}
    ref_a, ref_b = (by_label[r] for r in references)
    cut = {k: (float(ref_a[k]) + float(ref_b[k])) / 2 for k in ("be", "ue", "ut")}
    fig = make_subplots(rows=1, cols=2, subplot_titles=["(a) UE vs BE", "(b) UT vs BE"])
    for col, (metric, desired_high) in enumerate((("ue", False), ("ut", True)), start=1):
        values = [float(p[metric]) for p in points] + [float(p["be"]) for p in points]
        top = max(1.0, max(values) * 1.05)
        y0, y1 = (cut[metric], top) if desired_high else (0.0, cut[metric])
        fig.add_shape(
            type="rect",
            x0=cut["be"],
            x1=top,
            y0=y0,
            y1=y1,
            fillcolor="#2ca02c",
            opacity=0.12,
            line_width=0,
            row=1,
            col=col,
        )
        fig.add_vline(x=cut["be"], line_dash="dot", line_color="gray", row=1, col=col)
        fig.add_hline(y=cut[metric], line_dash="dot", line_color="gray", row=1, col=col)
        for i, p in enumerate(points):
            fig.add_trace(
                go.Scatter(
                    x=[p["be"]],
                    y=[p[metric]],
                    error_x=_spread(p.get("be_std"), p["be"], p.get("be_ci95")),
                    error_y=_spread(p.get(f"{metric}_std"), p[metric], p.get(f"{metric}_ci95")),
                    # Past a handful of points the labels overlap; the legend names them.
                    mode="markers+text" if len(points) <= 6 else "markers",
                    text=[p["label"]],
                    textposition="top center",
                    name=p["label"],
                    legendgroup=p["label"],
                    marker={
                        "size": 12,
                        "color": PALETTE[i % len(PALETTE)],
                        "symbol": ("circle", "diamond", "square")[i // len(PALETTE) % 3],
                    },
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
        # A little room below 0 so that points at BE = 0 (suffix) are not cut in half.
        fig.update_xaxes(title_text="BE on D_p (↑)", range=[-0.04, top], row=1, col=col)
        fig.update_yaxes(
            title_text="UE on D_f (↓)" if metric == "ue" else "UT on D_r (↑)",
            range=[0, top],
            row=1,
            col=col,
        )
    fig.update_layout(title=title, width=1000, height=470)
    return fig


def heatmap_figure(
    values: Any,
    *,
    title: str,
    x_title: str,
    y_title: str,
    x_labels: Sequence[Any] | None = None,
    y_labels: Sequence[Any] | None = None,
    diverging: bool = False,
    colorbar: str = "",
) -> go.Figure:
    """A single labelled heatmap (e.g. α per layer × head, patching effect per layer × head)."""
    grid = np.asarray(values, dtype=float)
    extra: dict[str, Any] = {"colorscale": "Viridis"}
    if diverging:
        limit = _symmetric_limit([grid])
        extra = {"colorscale": DIVERGING, "zmin": -limit, "zmax": limit}
    fig = go.Figure(
        go.Heatmap(
            z=grid,
            x=list(x_labels) if x_labels is not None else None,
            y=list(y_labels) if y_labels is not None else None,
            colorbar={"title": colorbar},
            texttemplate="%{z:.2f}" if grid.size <= 400 else None,
            **extra,
        )
    )
    # Integer ticks (layers, heads) without category axes: kaleido cannot rasterise a
    # heatmap whose axes are categorical but whose coordinates are implicit.
    fig.update_xaxes(title_text=x_title, dtick=1 if x_labels is None else None)
    fig.update_yaxes(
        title_text=y_title, dtick=1 if y_labels is None else None, autorange="reversed"
    )
    fig.update_layout(
        title=title,
        width=max(480, 60 * grid.shape[-1] + 200),
        height=max(380, 45 * grid.shape[0] + 160),
    )
    return fig


def table_figure(header: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str) -> go.Figure:
    """A plotly table (the paper's Table 1 / Table A2 format); numbers shown with 2 decimals."""

    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.2f}"
        # Model outputs can hold control characters, which make plotly.js refuse to render,
        # and '<', which it would read as markup.
        text = "".join(c if c.isprintable() else "·" for c in str(value))
        return html.escape(text, quote=False)

    columns: list[list[str]] = [[fmt(row[c]) for row in rows] for c in range(len(header))]
    width = max(700, 140 * len(header))
    fig = go.Figure(
        go.Table(
            header={"values": list(header), "fill_color": "#dde5f0", "align": "left"},
            cells={"values": columns, "align": "left"},
        )
    )
    # As tall as its rows once long cells (generated answers) wrap: plotly splits the width
    # evenly between columns and wraps at about TABLE_CHAR_PX per character.
    column_px = (width - 2 * TABLE_MARGIN_PX) / max(1, len(header))
    chars = max(1, int(column_px / TABLE_CHAR_PX))
    lines = [max(math.ceil(len(col[r]) / chars) for col in columns) for r in range(len(rows))]
    body = sum(TABLE_ROW_PX + TABLE_LINE_PX * (n - 1) for n in lines) if lines else TABLE_ROW_PX
    fig.update_layout(
        title=title,
        width=width,
        height=TABLE_TOP_PX + TABLE_ROW_PX + body,
        margin={"l": TABLE_MARGIN_PX, "r": TABLE_MARGIN_PX, "t": TABLE_TOP_PX - 20, "b": 20},
    )
    return fig


# Table geometry at plotly's default 12 px cell font (measured in chromium, with room).
TABLE_MARGIN_PX = 60
TABLE_CHAR_PX = 7.5
TABLE_ROW_PX = 32
TABLE_LINE_PX = 16
TABLE_TOP_PX = 110
# Titles at plotly's default 17 px font are about this wide per character.
TITLE_CHAR_PX = 8.5


def fit_title(fig: go.Figure) -> go.Figure:
    """Wrap a title that is wider than its figure at word boundaries (plotly never wraps
    titles, so a long one runs off the canvas)."""
    text, width = fig.layout.title.text, fig.layout.width
    if not text or not width or "<br>" in text:
        return fig
    chars = max(20, int((width - 40) / TITLE_CHAR_PX))
    if len(text) > chars:
        lines = textwrap.wrap(text, chars)
        top = fig.layout.margin.t if fig.layout.margin.t is not None else 100  # plotly's
        fig.update_layout(title_text="<br>".join(lines), margin_t=max(top, 60 + 30 * len(lines)))
    return fig


_SUBSCRIPTS = {f"θ_{s}": f"θ<sub>{s}</sub>" for s in ("o", "u", "b", "p")} | {
    f"D_{s}": f"D<sub>{s}</sub>" for s in ("f", "r", "p")
}


def _subscripted(node: Any) -> Any:
    if isinstance(node, str):
        for plain, marked in _SUBSCRIPTS.items():
            node = node.replace(plain, marked)
        return node
    if isinstance(node, dict):
        return {k: _subscripted(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(_subscripted(v) for v in node)
    return node


def with_subscripts(fig: go.Figure) -> go.Figure:
    """θ_b, D_f, … written as θ with a subscript in every title, label, legend and cell (the
    numbers' JSON keeps the plain names)."""
    return go.Figure(_subscripted(fig.to_plotly_json()))
