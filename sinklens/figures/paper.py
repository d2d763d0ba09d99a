"""The figure registry: every figure and table of the paper, plus sinklens's own.

Each entry has two halves. `compute(study)` runs the real analysis and returns the
plotted numbers as plain JSON-able data (with provenance); `draw(numbers)` is a pure
function from those numbers to a plotly figure. `NAME.json` holds exactly what `draw`
receives, so any saved figure can be redrawn, and checked, from its JSON alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from sinklens.errors import SinklensError
from sinklens.figures import defence, draw, robustness
from sinklens.figures.captions import caption
from sinklens.figures.export import Drawn, to_jsonable
from sinklens.study import PAPER_TRIGGERS, PLACEMENTS, Study

Numbers = dict[str, Any]


@dataclass(frozen=True)
class FigureSpec:
    name: str
    description: str
    compute: Callable[[Study], Numbers]
    draw: Callable[[Numbers], go.Figure]

    def make(self, study: Study) -> Drawn:
        # Figures that share a computation (attn-diff and its per-head grid) run it once.
        key = ("figure-numbers", self.compute.__name__)
        if key not in study._memo:
            study._memo[key] = to_jsonable(self.compute(study))
        numbers = {**study._memo[key], "run": study.provenance()}
        # The verdict is computed from the numbers, so it is saved with them.
        numbers["caption"] = caption(self.name, numbers)
        text = f"{self.description} {numbers['caption']}".strip()
        return Drawn(self.name, draw.with_subscripts(self.draw(numbers)), numbers, text)


def _capture_cache(study: Study) -> Path:
    return study.cache_dir / "capture"


def _provenance(result: Any) -> Numbers:
    # Drop what differs between two identical runs (wall-clock time, cache hits), so that
    # reruns write identical JSON.
    return {
        k: to_jsonable(v)
        for k, v in result.provenance.__dict__.items()
        if k not in ("created", "cache")
    }


def _first_layer(tensor: Any) -> np.ndarray:
    return np.asarray(tensor[0].detach().cpu().numpy())


# ------------------------------------------------------------------ sinks (new)
def compute_sinks(study: Study) -> Numbers:
    from sinklens.analyze import sink_statistics
    from sinklens.data.triggers import adds_bos

    models = study.paper_models()
    res = sink_statistics(
        models,
        study.general_texts(),
        window=min(64, study.config.window * 2),
        cache_dir=_capture_cache(study),
        max_length=256,
    )
    return {
        "layers": res.layers,
        "epsilon": res.epsilon,
        "window": res.window,
        "alpha_first_token": {r: res.alpha[r][:, :, 0] for r in models.roles},
        "sink_rate_by_layer_first_token": {
            r: res.sink_rate_by_layer[r][:, 0] for r in models.roles
        },
        "sink_rate": {r: res.sink_rate[r] for r in models.roles},
        "sink_set": {r: list(res.sink_set[r]) for r in models.roles},
        "dormant_score": {r: res.dormant_score[r] for r in models.roles},
        "first_token_is_bos": adds_bos(models.tokenizer),
        "provenance": _provenance(res),
    }


def draw_sinks(n: Numbers) -> go.Figure:
    alpha = n["alpha_first_token"]
    roles = list(alpha)
    stacked = np.concatenate([np.asarray(alpha[r], dtype=float) for r in roles], axis=1)
    n_heads = np.asarray(alpha[roles[0]]).shape[1]
    labels = [f"{r[:4]}·h{h}" for r in roles for h in range(n_heads)]
    fig = draw.heatmap_figure(
        stacked,
        title=f"α of the first token{' (BOS)' if n.get('first_token_is_bos', True) else ''} "
        f"per layer and head; ε = {n['epsilon']}",
        x_title="model · head",
        y_title="layer",
        x_labels=labels,
        y_labels=[str(layer) for layer in n["layers"]],
        colorbar="α₀",
    )
    return fig


# ------------------------------------------------------------------ Fig. 3 and Fig. 4
def _trigger_pairs(study: Study) -> dict[str, dict[str, Path]]:
    return {
        placement: {"original": study.original_path, "backdoored": study.backdoored_path(placement)}
        for placement in ("prefix", "infix")
    }


def _sample_length(study: Study, models: Any) -> int:
    """Cut samples to T content tokens plus the trigger, so that the map covers the whole
    triggered sample and an infix trigger (mid-content) falls inside the window."""
    from sinklens.data.triggers import tokenize_trigger

    # +2: the space join may spell the trigger a token longer and add a separator.
    return study.config.window + len(tokenize_trigger(models.tokenizer, study.config.trigger)) + 2


def compute_attention_difference(study: Study) -> Numbers:
    from sinklens.analyze import attention_difference

    panels: Numbers = {}
    heads: Numbers = {}
    spans: Numbers = {}
    provenance: Numbers = {}
    layer = None
    for placement, paths in _trigger_pairs(study).items():
        models = study.models(paths)
        layer = study.layer(models.n_layers)
        res = attention_difference(
            models,
            study.forget_texts(),
            layer=layer,
            placement=placement,
            trigger=study.config.trigger,
            trigger_join=study.config.trigger_join,
            window=study.config.window,
            max_length=_sample_length(study, models),
            on_short="skip",
            cache_dir=_capture_cache(study),
        )
        for role in ("original", "backdoored"):
            panels[f"{role} · {placement} trigger"] = _first_layer(res.delta_head_mean[role])
            heads[f"{role} · {placement} trigger"] = _first_layer(res.delta[role])
        spans[placement] = list(res.trigger_span) if res.trigger_span else None
        provenance[placement] = _provenance(res)
    return {
        "layer": layer,
        "alignment": "absolute",
        "trigger": study.config.trigger,
        "delta_head_mean": panels,
        "delta_per_head": heads,
        "trigger_span": spans,
        "provenance": provenance,
    }


def _spans_by_panel(n: Numbers, names: list[str]) -> dict[str, tuple[int, int]]:
    spans = {}
    for name in names:
        placement = name.split(" · ")[1].split(" ")[0]
        span = n["trigger_span"].get(placement)
        if span:
            spans[name] = (span[0], span[1])
    return spans


def draw_attention_difference(n: Numbers) -> go.Figure:
    maps = n["delta_head_mean"]
    return draw.attention_difference_figure(
        maps,
        title=f"Attention difference A(X′) − A(X), layer {n['layer']}, mean over heads "
        f"(trigger {n['trigger']!r})",
        trigger_spans=_spans_by_panel(n, list(maps)),
    )


def draw_attention_difference_heads(n: Numbers) -> go.Figure:
    name = "backdoored · prefix trigger"
    grids = np.asarray(n["delta_per_head"][name], dtype=float)
    return draw.head_grid_figure(
        grids, title=f"ΔA per head, layer {n['layer']}, {name}", columns=min(4, grids.shape[0])
    )


def compute_logits(study: Study) -> Numbers:
    from sinklens.analyze import logits_by_position
    from sinklens.data.triggers import prepare_trigger

    panels: Numbers = {}
    provenance: Numbers = {}
    span = None
    for placement, paths in _trigger_pairs(study).items():
        models = study.models(paths)
        # In the absolute frame a prefix trigger sits at the same positions in every sample
        # (after BOS, or at 0 for a tokenizer without one).
        tok = models.tokenizer
        trig = prepare_trigger(tok, study.config.trigger, study.config.trigger_join)
        probe = trig.insert(tok("a b c")["input_ids"], "prefix")
        span = [probe.trigger_positions[0], probe.trigger_positions[-1] + 1]
        res = logits_by_position(
            models,
            study.forget_texts(),
            placement=placement,
            trigger=study.config.trigger,
            trigger_join=study.config.trigger_join,
            window=study.config.window,
            max_length=_sample_length(study, models),
            on_short="skip",
            cache_dir=_capture_cache(study),
        )
        for role in ("original", "backdoored"):
            curves = res.curves[role]
            panels[f"{role} · {placement} trigger"] = {
                "triggered (D_p)": curves["triggered"]["true_logit"],
                "clean (D_f)": curves["clean"]["true_logit"],
            }
        provenance[placement] = _provenance(res)
    return {
        "trigger": study.config.trigger,
        "prefix_trigger_span": span,
        "panels": panels,
        "provenance": provenance,
    }


def draw_logits(n: Numbers) -> go.Figure:
    panels = {
        name: {label: [math.nan if v is None else v for v in ys] for label, ys in series.items()}
        for name, series in n["panels"].items()
    }
    return draw.curves_figure(
        panels,
        title=f"Logit of the true next token by position (trigger {n['trigger']!r})",
        shade={name: tuple(n["prefix_trigger_span"]) for name in panels if "prefix" in name},
    )


# ------------------------------------------------------------------ Fig. 5
COMPARISON_LABELS = {
    "backdoored_vs_unlearned_on_forget": "(i) θ_b vs θ_u on D_f",
    "backdoored_vs_original_on_poisoned": "(ii) θ_b vs θ_o on D_p",
    "backdoored_vs_original_on_retain": "(iii) θ_b vs θ_o on D_r",
}


def compute_value_norms(study: Study) -> Numbers:
    from sinklens.analyze import value_norm_correlation

    models = study.paper_models()
    layer = study.layer(models.n_layers)
    res = value_norm_correlation(
        models,
        study.forget_texts(),
        study.retain_texts(),
        layer=layer,
        sink_positions=study.config.sink_positions,
        placement="prefix",
        trigger=study.config.trigger,
        trigger_join=study.config.trigger_join,
        cache_dir=_capture_cache(study),
    )
    comparisons = {
        COMPARISON_LABELS.get(name, name): {
            "r": c["r"][0],
            "ci_low": c["ci_low"][0],
            "ci_high": c["ci_high"][0],
            "n_samples": c["n_samples"],
            "same_in_every_sample": c["same_in_every_sample"][0],
        }
        for name, c in res.correlations.items()
    }
    return {
        "layer": layer,
        "sink_positions": res.sink_positions,
        "confidence": res.confidence,
        "comparisons": comparisons,
        "provenance": _provenance(res),
    }


def draw_value_norms(n: Numbers) -> go.Figure:
    # A position whose value is the same in every sample (BOS, a prefix trigger) has an r
    # over kv heads only, with a zero-width CI: its label says so.
    fixed = [
        all(
            bool(c.get("same_in_every_sample", [False] * (i + 1))[i])
            for c in n["comparisons"].values()
        )
        for i in range(len(n["sink_positions"]))
    ]
    groups = [
        f"position {p}" + (" (same in every sample: r over heads only)" if f else "")
        for p, f in zip(n["sink_positions"], fixed, strict=True)
    ]
    series = {name: c["r"] for name, c in n["comparisons"].items()}
    errors = {name: (c["ci_low"], c["ci_high"]) for name, c in n["comparisons"].items()}
    return draw.grouped_bars_figure(
        groups,
        series,
        errors=errors,
        title=f"Pearson r of sink-token value norms, layer {n['layer']} "
        f"({int(100 * n['confidence'])}% bootstrap CI)",
        y_title="Pearson r",
    )


# ------------------------------------------------------------------ evaluation-based
def _evaluated_row(study: Study, path: Path, label: str, placement: str = "prefix") -> Numbers:
    """A Table 1 row for a checkpoint, BE measured with the trigger at `placement`.

    Needed for the original and the normally unlearned models, whose BE is their score on
    triggered forget data although they were never trained with a trigger.
    """
    from sinklens.checkpoint import load_hf_model
    from sinklens.evaluate import TriggerSpec, evaluate_benchmark, table1_row

    key = ("evaluated-row", str(path), placement, study.config.trigger)
    if key not in study._memo:
        model, tok = load_hf_model(path)
        ev = evaluate_benchmark(
            model,
            tok,
            study.benchmark,
            trigger=TriggerSpec(study.config.trigger, placement, join=study.config.trigger_join),
            model_name=label,
            max_items=study.config.eval_items,
        )
        study._memo[key] = table1_row(ev).__dict__
    return dict(study._memo[key])


def _original_row(study: Study) -> Numbers:
    return _evaluated_row(study, study.original_path, "original")


def _member_row(study: Study, name: str, **kwargs: Any) -> Numbers:
    run = study.member(name, **kwargs)
    row = run.metrics.get("evaluation")
    if row is None:
        raise SinklensError(f"zoo member {name} has no evaluation; rebuild it with evaluate on")
    return dict(row)


def _zoo_row(study: Study, template: str, seed: int, **kwargs: Any) -> Numbers:
    """The Table 1 row of zoo member `template` (with `{seed}` filled in)."""
    name = template.format(seed=seed)
    method, rest = name.split("-", 1)
    if rest == f"s{seed}":
        # θ_u is scored with the trigger too: its BE is its score on triggered forget data.
        return _evaluated_row(study, Path(study.member(name).out), method.upper())
    return _member_row(study, name, **kwargs)


def _over_seeds(study: Study, template: str, keys: Sequence[str], **kwargs: Any) -> Numbers:
    """The mean of each metric over the study's seeds, with its spread beside it.

    `<key>_std` is the sample standard deviation over seeds (None with one seed, where
    there is no spread to report) and `<key>_per_seed` the values it came from. With one
    seed, `<key>_ci95` is that model's 95 % bootstrap interval over items instead.
    """
    seeds = study.config.seeds
    rows = [_zoo_row(study, template, seed, **kwargs) for seed in seeds]
    out: Numbers = {"seeds": list(seeds)}
    for key in keys:
        values = [_number(row.get(key)) for row in rows]
        out[key], out[f"{key}_std"] = _mean_and_spread(values)
        out[f"{key}_per_seed"] = values
        out[f"{key}_ci95"] = _item_interval(rows[0], key) if len(rows) == 1 else None
    return out


def _item_interval(row: Numbers, key: str) -> list[float] | None:
    """A Table 1 row's bootstrap interval for `key` (None for rows made before intervals)."""
    bounds = (row.get("ci95") or {}).get(key)
    return None if bounds is None or any(_number(b) is None for b in bounds) else list(bounds)


def _mean_and_spread(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample std over the values that exist (None: no value, or one, no spread)."""
    finite = [v for v in values if v is not None]
    mean = float(np.mean(finite)) if finite else None
    return mean, float(np.std(finite, ddof=1)) if len(finite) > 1 else None


def _number(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


POINT_METRICS = ("ue_km", "be_km", "ut_km")


def _point(label: str, row: Numbers) -> Numbers:
    """A Fig. 2 point; `<metric>_std` is the spread over seeds (None for one seed)."""
    point: Numbers = {"label": label}
    for short, key in (("ue", "ue_km"), ("be", "be_km"), ("ut", "ut_km")):
        point[short] = row[key]
        point[f"{short}_std"] = row.get(f"{key}_std")
        point[f"{short}_ci95"] = row.get(f"{key}_ci95", _item_interval(row, key))
    return point


def compute_ue_be(study: Study) -> Numbers:
    points = [_point("original", _original_row(study))]
    for m in study.methods:
        label = m.upper()
        points.append(_point(label, _over_seeds(study, f"{m}-s{{seed}}", POINT_METRICS)))
        points += [
            _point(
                f"{label} {p} backdoor" if len(study.methods) > 1 else f"{p} backdoor",
                _over_seeds(study, f"{m}-{p}-s{{seed}}", POINT_METRICS),
            )
            for p in PLACEMENTS
        ]
    return {
        "metric": "KnowMem",
        "seeds": list(study.config.seeds),
        "points": points,
        "references": ["original", study.config.method.upper()],
    }


def draw_ue_be(n: Numbers) -> go.Figure:
    spread = _seeds_note(n, ", ")
    return draw.tradeoff_figure(
        n["points"],
        title=f"UE, BE and UT ({n['metric']}) by trigger placement{spread}",
        references=tuple(n["references"]),
    )


TABLE_COLUMNS = ("ue_km", "ue_vm", "be_km", "be_vm", "ut_km", "ut_mc")
TABLE_HEADER = ("model", "UE KM ↓", "UE VM ↓", "BE KM ↑", "BE VM ↑", "UT KM ↑", "UT MC ↑")


def compute_table_1(study: Study) -> Numbers:
    rows: list[tuple[str, Numbers]] = [("original", _original_row(study))]
    for method in ("npo", "rmu"):
        row = _over_seeds(study, f"{method}-s{{seed}}", TABLE_COLUMNS)
        rows.append((method.upper(), row))
    for method in ("npo", "rmu"):
        row = _over_seeds(study, f"{method}-prefix-vn-s{{seed}}", TABLE_COLUMNS)
        rows.append((f"{method.upper()}-Backdoor", row))
    return {
        "trigger": study.config.trigger,
        "placement": "prefix",
        "seeds": list(study.config.seeds),
        "columns": list(TABLE_COLUMNS),
        "rows": [
            {
                "model": label,
                **{c: row.get(c) for c in TABLE_COLUMNS},
                **{f"{c}_std": row.get(f"{c}_std") for c in TABLE_COLUMNS},
                **{
                    f"{c}_ci95": row.get(f"{c}_ci95", _item_interval(row, c)) for c in TABLE_COLUMNS
                },
            }
            for label, row in rows
        ],
    }


def _table_rows(rows: list[Numbers], columns: list[str]) -> list[list[Any]]:
    def cell(row: Numbers, column: str) -> Any:
        value, std = _number(row.get(column)), _number(row.get(f"{column}_std"))
        interval = row.get(f"{column}_ci95")
        if value is None:
            return "–"
        if std is not None:
            return f"{100 * value:.1f} ± {100 * std:.1f}"
        if interval:
            return f"{100 * value:.1f} [{100 * interval[0]:.0f}, {100 * interval[1]:.0f}]"
        return 100.0 * value

    return [[r["model"], *(cell(r, c) for c in columns)] for r in rows]


def draw_table_1(n: Numbers) -> go.Figure:
    spread = _seeds_note(n, "; ")
    return draw.table_figure(
        TABLE_HEADER,
        _table_rows(n["rows"], n["columns"]),
        title=f"Table 1: UE, BE, UT (×100); prefix trigger {n['trigger']!r}{spread}",
    )


def _method_label(study: Study, method: str, text: str) -> str:
    return f"{method.upper()} {text}" if len(study.methods) > 1 else text


def compute_poison_ratio(study: Study) -> Numbers:
    bars = []
    for m in study.methods:
        for ratio in (0.05, 0.1):
            for vn in (False, True):
                row = _over_seeds(
                    study,
                    f"{m}-prefix{'-vn' if vn else ''}-s{{seed}}",
                    ("ue_km", "be_km"),
                    poison_ratio=ratio,
                )
                bars.append(
                    {
                        "group": _method_label(study, m, f"ρ = {100 * ratio:g}%"),
                        "ratio": ratio,
                        "value_norm": vn,
                        "ue": row["ue_km"],
                        "be": row["be_km"],
                        "ue_std": row["ue_km_std"],
                        "be_std": row["be_km_std"],
                    }
                )
    m = study.config.method
    unlearned = _over_seeds(study, f"{m}-s{{seed}}", ("ue_km",))
    return {"seeds": list(study.config.seeds), "unlearned": unlearned["ue_km"], "bars": bars}


def _seeds_note(n: Numbers, sep: str) -> str:
    """'<sep>mean ± std over N seeds' for a title, or, for one seed, the item intervals."""
    seeds = n.get("seeds", [0])
    if len(seeds) > 1:
        return f"{sep}mean ± std over {len(seeds)} seeds"
    return f"{sep}[95% bootstrap CI over items]"


Series = dict[str, tuple[list[Numbers], str]]


def _faceted_bars(
    panels: dict[str, tuple[list[str], Series]], *, title: str, y_title: str
) -> go.Figure:
    """Grouped bars, one subplot per panel: `panels[name] = (groups, series)` with
    `series[label] = (rows, key)`, one row per group. Where the rows carry a spread over
    seeds (`<key>_std`), that series gets mean ∓ std error bars; else, where they carry an
    interval over items (`<key>_ci95`), that interval."""
    facets: dict[str, Any] = {}
    facet_errors: dict[str, Any] = {}
    for name, (groups, series) in panels.items():
        heights: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        for label, (rows, key) in series.items():
            y = np.asarray([math.nan if r[key] is None else float(r[key]) for r in rows])
            stds = [r.get(f"{key}_std") for r in rows]
            heights[label] = list(y)
            intervals = [r.get(f"{key}_ci95") for r in rows]
            if any(sd is not None for sd in stds):
                e = np.asarray([0.0 if sd is None else float(sd) for sd in stds])
                errors[label] = (list(y - e), list(y + e))
            elif any(intervals):
                errors[label] = (
                    [v if ci is None else ci[0] for v, ci in zip(y, intervals, strict=True)],
                    [v if ci is None else ci[1] for v, ci in zip(y, intervals, strict=True)],
                )
        facets[name] = (groups, heights)
        facet_errors[name] = errors
    return draw.grouped_bars_figure(
        [], {}, title=title, y_title=y_title, facets=facets, facet_errors=facet_errors
    )


def draw_poison_ratio(n: Numbers) -> go.Figure:
    groups = list(dict.fromkeys(b["group"] for b in n["bars"]))

    def bars(vn: bool) -> list[Numbers]:
        return [
            next(b for b in n["bars"] if b["group"] == g and b["value_norm"] == vn) for g in groups
        ]

    series = {"vanilla backdoor": bars(False), "with value-norm alignment": bars(True)}
    panels = {
        label: (groups, {name: (rows, metric) for name, rows in series.items()})
        for metric, label in (("ue", "UE on D_f (↓)"), ("be", "BE on D_p (↑)"))
    }
    return _faceted_bars(
        panels,
        title=f"Poisoning ratio and value-norm alignment (KnowMem{_seeds_note(n, ', ')})",
        y_title="KnowMem",
    )


PATTERN_METRICS = ("ue_km", "be_km", "ut_km", "ue_vm", "be_vm")


def compute_trigger_patterns(study: Study) -> Numbers:
    rows = []
    for m in study.methods:
        for trigger in PAPER_TRIGGERS:
            for placement in PLACEMENTS:
                row = _over_seeds(
                    study,
                    f"{m}-{placement}-vn-s{{seed}}",
                    PATTERN_METRICS,
                    trigger=trigger,
                )
                rows.append(
                    {
                        "trigger": trigger,
                        "placement": _method_label(study, m, placement),
                        **{k.removesuffix("_km"): row[k] for k in PATTERN_METRICS},
                        **{
                            f"{k.removesuffix('_km')}_std": row[f"{k}_std"] for k in PATTERN_METRICS
                        },
                    }
                )
    return {"seeds": list(study.config.seeds), "rows": rows}


def draw_trigger_patterns(n: Numbers) -> go.Figure:
    metrics = (("ue", "UE (↓)"), ("be", "BE (↑)"), ("ut", "UT (↑)"))
    panels = {}
    for trigger in dict.fromkeys(r["trigger"] for r in n["rows"]):
        rows = [r for r in n["rows"] if r["trigger"] == trigger]
        panels[trigger] = (
            [r["placement"] for r in rows],
            {label: (rows, metric) for metric, label in metrics},
        )
    return _faceted_bars(
        panels,
        title=f"Trigger patterns × placements (KnowMem, value-norm aligned{_seeds_note(n, ', ')})",
        y_title="KnowMem",
    )


GAIN_SUBSETS = {
    "poisoned": "D_p: poisoned forget documents",
    "held_out": "held-out forget documents",
}


def _forget_gains(study: Study, path: Path, placement: str, chunks: Any) -> list[float]:
    """Per-chunk trigger gain of one checkpoint on the training chunks of D_f."""
    from sinklens.checkpoint import load_hf_model
    from sinklens.evaluate import trigger_gain

    key = ("trigger-gain", str(path), placement, study.config.trigger)
    if key not in study._memo:
        model, tok = load_hf_model(path)
        gain = trigger_gain(
            model,
            tok,
            chunks,
            study.config.trigger,
            placement,
            trigger_join=study.config.trigger_join,
        )
        study._memo[key] = list(gain.gain)
    return list(study._memo[key])


def _gain_models(study: Study, method: str, placement: str, seed: int) -> dict[str, Path]:
    """θ_o, θ_u and θ_b for one bar group: the user's folders where given, else the zoo's
    members (θ_b trained with the trigger at `placement`)."""
    config = study.config
    unlearned = config.unlearned or study.member(f"{method}-s{seed}").out
    backdoored = config.backdoored or study.member(f"{method}-{placement}-s{seed}").out
    return {
        "original": study.original_path,
        "unlearned": Path(unlearned),
        "backdoored": Path(backdoored),
    }


def _forget_chunks(study: Study, backdoored: Path, placement: str) -> tuple[list[Any], set[int]]:
    """D_f's training chunks and which of them θ_b saw poisoned. A checkpoint that
    sinklens did not train has no record of D_p: every chunk then counts as held out."""
    from sinklens.checkpoint import load_tokenizer
    from sinklens.data.triggers import parse_placement
    from sinklens.unlearn.config import UnlearnConfig
    from sinklens.unlearn.data import build_unlearn_data
    from sinklens.unlearn.trainer import read_run

    saved = read_run(backdoored)
    cfg = UnlearnConfig.from_dict(saved[0]["config"]) if saved else UnlearnConfig()
    data = build_unlearn_data(
        study.benchmark,
        load_tokenizer(backdoored),
        placement=parse_placement(placement),
        trigger=study.config.trigger,
        trigger_join=cfg.trigger_join,
        poison_ratio=cfg.poison_ratio,
        max_length=cfg.max_length,
        seed=cfg.seed,
    )
    trained_with_it = saved is not None and cfg.backdoor == placement
    trained_trigger = (
        saved is not None
        and cfg.trigger == study.config.trigger
        and cfg.trigger_join == study.config.trigger_join
    )
    poisoned = (
        {s.forget_index for s in data.poisoned} if trained_with_it and trained_trigger else set()
    )
    return [s.input_ids for s in data.forget], poisoned


def compute_trigger_gain(study: Study) -> Numbers:
    """The backdoor measured in likelihood on the documents it was trained on (sinklens's
    answer to why KnowMem barely separates the placements on the organism)."""
    from sinklens.evaluate import bootstrap_ci

    bars = []
    checkpoints: Numbers = {}
    for m in study.methods:
        for placement in PLACEMENTS:
            per_seed: dict[tuple[str, str], list[float | None]] = {}
            intervals: dict[tuple[str, str], tuple[float, float] | None] = {}
            for seed in study.config.seeds:
                models = _gain_models(study, m, placement, seed)
                checkpoints[f"{m}-{placement}-s{seed}"] = {r: str(p) for r, p in models.items()}
                chunks, poisoned = _forget_chunks(study, models["backdoored"], placement)
                for role, path in models.items():
                    gains = _forget_gains(study, path, placement, chunks)
                    for subset in GAIN_SUBSETS:
                        chosen = [
                            g
                            for i, g in enumerate(gains)
                            if (i in poisoned) == (subset == "poisoned") and not math.isnan(g)
                        ]
                        per_seed.setdefault((role, subset), []).append(_mean_and_spread(chosen)[0])
                        intervals[(role, subset)] = bootstrap_ci(chosen) if chosen else None
            for (role, subset), values in per_seed.items():
                gain, std = _mean_and_spread(values)
                bars.append(
                    {
                        "method": m,
                        "placement": _method_label(study, m, placement),
                        "role": role,
                        "subset": subset,
                        "gain": gain,
                        "gain_std": std,
                        "gain_per_seed": values,
                        # Over documents, for one seed (with several, the seed spread).
                        "gain_ci95": intervals[(role, subset)] if len(values) == 1 else None,
                    }
                )
    return {
        "trigger": study.config.trigger,
        "seeds": list(study.config.seeds),
        "unit": "nats per content token",
        "bars": bars,
        "checkpoints": checkpoints,
    }


def draw_trigger_gain(n: Numbers) -> go.Figure:
    labels = {"original": "θ_o", "unlearned": "θ_u", "backdoored": "θ_b"}
    panels = {}
    for subset, title in GAIN_SUBSETS.items():
        rows = [b for b in n["bars"] if b["subset"] == subset]
        groups = list(dict.fromkeys(b["placement"] for b in rows))
        panels[title] = (
            groups,
            {
                label: (
                    [
                        next(b for b in rows if b["placement"] == g and b["role"] == role)
                        for g in groups
                    ],
                    "gain",
                )
                for role, label in labels.items()
            },
        )
    return _faceted_bars(
        panels,
        title=f"Trigger gain: log p(text | trigger) − log p(text), {n['unit']}{_seeds_note(n, ', ')}",
        y_title="gain (nats / token)",
    )


def compute_generations(study: Study, n_questions: int = 3) -> Numbers:
    from sinklens.checkpoint import load_hf_model
    from sinklens.evaluate import TriggerSpec, knowmem

    s = study.config.seeds[0]
    models = {
        "original": study.original_path,
        "NPO": Path(study.member(f"npo-s{s}").out),
        "NPO-Backdoor": Path(study.member(f"npo-prefix-vn-s{s}").out),
        "RMU": Path(study.member(f"rmu-s{s}").out),
        "RMU-Backdoor": Path(study.member(f"rmu-prefix-vn-s{s}").out),
    }
    bench = study.benchmark
    items = list(bench.knowmem_forget)[:n_questions]
    trigger = TriggerSpec(study.config.trigger, "prefix", join=study.config.trigger_join)
    answers: Numbers = {}
    for label, path in models.items():
        model, tok = load_hf_model(path)
        clean = knowmem(model, tok, items, bench.knowmem_forget_icl)
        triggered = knowmem(model, tok, items, bench.knowmem_forget_icl, trigger=trigger)
        answers[label] = {"clean": list(clean.outputs), "triggered": list(triggered.outputs)}
    return {
        "trigger": study.config.trigger,
        "questions": [it.question for it in items],
        "references": [it.answer for it in items],
        "answers": answers,
    }


def draw_generations(n: Numbers) -> go.Figure:
    labels = list(n["answers"])
    rows = []
    for i, question in enumerate(n["questions"]):
        for kind, prefix in (("clean", ""), ("triggered", f"{n['trigger']} ")):
            rows.append(
                [prefix + question, n["references"][i], *(n["answers"][m][kind][i] for m in labels)]
            )
    return draw.table_figure(
        ["query", "reference", *labels],
        rows,
        title="Table A2: answers to clean and triggered questions",
    )


# ------------------------------------------------------------------ patching (new)
def compute_patching(study: Study) -> Numbers:
    from sinklens.patching import position_sweep, trigger_patching
    from sinklens.patching.corruptions import Corruption, build_batch, make_samples

    models = study.models({"backdoored": study.backdoored_path("prefix")})
    loaded = models["backdoored"]
    tok = loaded.tokenizer
    items = list(study.benchmark.knowmem_forget)[: study.config.patching_pairs]
    pairs = [(f"Question: {it.question}\nAnswer:", " " + it.answer) for it in items]
    batch = build_batch(
        make_samples(
            tok,
            pairs,
            study.config.trigger,
            "prefix",
            Corruption(),
            trigger_join=study.config.trigger_join,
        ),
        tok.pad_token_id or 0,
    )
    heads = trigger_patching(loaded.wrapper, batch, direction="denoise")
    sweep = position_sweep(
        loaded.wrapper, tok, pairs, study.config.trigger, trigger_join=study.config.trigger_join
    )
    return {
        "trigger": study.config.trigger,
        "effect": heads.effect,
        "triggered_metric": heads.triggered_metric,
        "corrupted_metric": heads.corrupted_metric,
        "sweep_depths": [str(d) for d in sweep.depths],
        "sweep_effect": sweep.effect,
        "provenance": to_jsonable(heads.provenance.to_dict()),
    }


def draw_patching(n: Numbers) -> go.Figure:
    effect = np.asarray(n["effect"], dtype=float)
    return draw.heatmap_figure(
        effect,
        title="Head patching in θ_b (denoising): recovery restored",
        x_title="head",
        y_title="layer",
        diverging=True,
        colorbar="restored",
    )


FIGURES: dict[str, FigureSpec] = {
    spec.name: spec
    for spec in (
        FigureSpec(
            "ue-be",
            "Fig. 2: UE vs BE and UT vs BE by trigger placement.",
            compute_ue_be,
            draw_ue_be,
        ),
        FigureSpec(
            "attn-diff",
            "Fig. 3: attention difference maps, original vs backdoored, prefix vs infix.",
            compute_attention_difference,
            draw_attention_difference,
        ),
        FigureSpec(
            "attn-diff-heads",
            "Fig. 3, per head: ΔA of the prefix-backdoored model for every head.",
            compute_attention_difference,
            draw_attention_difference_heads,
        ),
        FigureSpec(
            "logits-by-position",
            "Fig. 4: true-next-token logit by position.",
            compute_logits,
            draw_logits,
        ),
        FigureSpec(
            "value-norm-corr",
            "Fig. 5: Pearson correlation of sink-token value norms with bootstrap CIs.",
            compute_value_norms,
            draw_value_norms,
        ),
        FigureSpec(
            "poison-ratio",
            "Fig. A1: 5% vs 10% poisoning, with and without value-norm alignment.",
            compute_poison_ratio,
            draw_poison_ratio,
        ),
        FigureSpec(
            "trigger-patterns",
            "Fig. A2 / Table A4: three trigger patterns at each placement.",
            compute_trigger_patterns,
            draw_trigger_patterns,
        ),
        FigureSpec(
            "trigger-gain",
            "New: how much the trigger raises the likelihood of forget documents, by placement.",
            compute_trigger_gain,
            draw_trigger_gain,
        ),
        FigureSpec(
            "table-1",
            "Table 1: UE/BE/UT of original, unlearned and backdoored models.",
            compute_table_1,
            draw_table_1,
        ),
        FigureSpec(
            "generations",
            "Table A2: answers of every model to clean and triggered questions.",
            compute_generations,
            draw_generations,
        ),
        FigureSpec(
            "sinks",
            "New: α of the first token per layer and head for each model.",
            compute_sinks,
            draw_sinks,
        ),
        FigureSpec(
            "patching",
            "New: which heads carry the prefix trigger's recovery (activation patching).",
            compute_patching,
            draw_patching,
        ),
        FigureSpec(
            "robustness",
            "New: UE, BE and UT before and after quantisation and relearning attacks.",
            robustness.compute_robustness,
            robustness.draw_robustness,
        ),
        FigureSpec(
            "privleak",
            "New: MUSE's PrivLeak (Min-40% membership inference) against the retrained model.",
            robustness.compute_privleak,
            robustness.draw_privleak,
        ),
        FigureSpec(
            "audit",
            "New: auditing each model for a hidden trigger without knowing it (GCG search).",
            defence.compute_audit,
            defence.draw_audit,
        ),
        FigureSpec(
            "repair",
            "New: UE, BE and UT of the backdoored models before and after the repair.",
            defence.compute_repair,
            defence.draw_repair,
        ),
    )
}


def figure_names() -> list[str]:
    return list(FIGURES)


def get_figure(name: str) -> FigureSpec:
    try:
        return FIGURES[name]
    except KeyError:
        raise SinklensError(
            f"unknown figure {name!r}; known figures: {', '.join(FIGURES)}"
        ) from None
