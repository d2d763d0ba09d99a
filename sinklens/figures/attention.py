"""Figures from captured activations: `sinks` (α of the first token per layer and head),
`attn-diff` and `attn-diff-heads` (Fig. 3: A(X′) − A(X), prefix vs infix trigger),
`logits-by-position` (Fig. 4) and `value-norm-corr` (Fig. 5)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from sinklens.figures import draw
from sinklens.figures.export import Numbers, result_provenance
from sinklens.study import Study

__all__ = [
    "compute_attention_difference",
    "compute_logits",
    "compute_sinks",
    "compute_value_norms",
    "draw_attention_difference",
    "draw_attention_difference_heads",
    "draw_logits",
    "draw_sinks",
    "draw_value_norms",
]


def _capture_cache(study: Study) -> Path:
    return study.cache_dir / "capture"


def _first_layer(tensor: Any) -> np.ndarray:
    return np.asarray(tensor[0].detach().cpu().numpy())


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
        "provenance": result_provenance(res),
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


def _triggered_run(study: Study, models: Any, placement: str) -> dict[str, Any]:
    """The settings Fig. 3 and Fig. 4 share: the study's trigger at `placement` on forget
    texts cut to the window, samples too short for it skipped, the study's capture cache."""
    return {
        "placement": placement,
        "trigger": study.config.trigger,
        "trigger_join": study.config.trigger_join,
        "window": study.config.window,
        "max_length": _sample_length(study, models),
        "on_short": "skip",
        "cache_dir": _capture_cache(study),
    }


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
            models, study.forget_texts(), layer=layer, **_triggered_run(study, models, placement)
        )
        for role in ("original", "backdoored"):
            panels[f"{role} · {placement} trigger"] = _first_layer(res.delta_head_mean[role])
            heads[f"{role} · {placement} trigger"] = _first_layer(res.delta[role])
        spans[placement] = list(res.trigger_span) if res.trigger_span else None
        provenance[placement] = result_provenance(res)
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
            models, study.forget_texts(), **_triggered_run(study, models, placement)
        )
        for role in ("original", "backdoored"):
            curves = res.curves[role]
            panels[f"{role} · {placement} trigger"] = {
                "triggered (D_p)": curves["triggered"]["true_logit"],
                "clean (D_f)": curves["clean"]["true_logit"],
            }
        provenance[placement] = result_provenance(res)
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
        "provenance": result_provenance(res),
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
