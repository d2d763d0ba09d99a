"""sinklens's evaluation figures beyond the paper: robustness attacks and PrivLeak.

`robustness`: UE, BE and UT (KnowMem) of θ_o, θ_u and the prefix θ_b before and after each
attack in `ATTACKS_SHOWN` (does quantisation or relearning bring θ_u's knowledge back, and
does it break or strengthen θ_b's trigger?). `privleak`: MUSE's Min-40% AUC and PrivLeak of
the same models against the model retrained without the forget set.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from sinklens.figures import draw
from sinklens.figures.export import Numbers
from sinklens.study import Study
from sinklens.unlearn.zoo import MemberName

__all__ = [
    "ATTACKS_SHOWN",
    "compute_privleak",
    "compute_robustness",
    "draw_privleak",
    "draw_robustness",
]

ATTACKS_SHOWN = ("quantize:bits=4", "quantize:bits=8", "relearn")
METRICS = (
    ("ue", "UE: forget KnowMem"),
    ("be", "BE: triggered forget KnowMem"),
    ("ut", "UT: retain KnowMem"),
)


def _models(study: Study) -> dict[str, Any]:
    """label -> checkpoint folder: θ_o, and θ_u and the prefix θ_b of every method shown."""
    from pathlib import Path

    models: dict[str, Any] = {"θ_o": study.original_path}
    seed = study.config.seeds[0]
    for method in study.methods:
        tag = f" ({method.upper()})" if len(study.methods) > 1 else ""
        if method == study.config.method:
            models[f"θ_u{tag}"] = study.unlearned_path()
            models[f"θ_b prefix{tag}"] = study.backdoored_path("prefix")
        else:
            models[f"θ_u{tag}"] = Path(study.member(MemberName(method, seed)).out)
            models[f"θ_b prefix{tag}"] = Path(study.member(MemberName(method, seed, "prefix")).out)
    return models


def _scores(row: Any) -> Numbers:
    return {
        **{key: getattr(row, f"{key}_km") for key, _ in METRICS},
        **{f"{key}_ci95": row.ci95.get(f"{key}_km") for key, _ in METRICS},
    }


def compute_robustness(study: Study) -> Numbers:
    from sinklens.attacks import parse_attack, run_attack
    from sinklens.evaluate import TriggerSpec, evaluate_benchmark
    from sinklens.provenance import portable_path

    spec = TriggerSpec(study.config.trigger, "prefix", join=study.config.trigger_join)

    def score(net: Any, tok: Any, name: str) -> Any:
        return evaluate_benchmark(
            net,
            tok,
            study.benchmark,
            trigger=spec,
            model_name=name,
            max_items=study.config.eval_items,
        )

    attacks = [parse_attack(a) for a in ATTACKS_SHOWN]
    rows: list[Numbers] = []
    for label, path in _models(study).items():
        row: Numbers = {"label": label, "path": portable_path(path), "after": {}, "change": {}}
        before = None
        for attack in attacks:
            result = run_attack(attack, path, study.benchmark, evaluate=score, before=before)
            before = before or result.before_evaluation  # the same for every attack
            row["before"] = _scores(result.before)
            row["after"][attack.label] = _scores(result.after)
            row["change"][attack.label] = result.effect
        rows.append(row)
    return {
        "attacks": [a.label for a in attacks],
        "settings": {a.label: a.settings() for a in attacks},
        "trigger": spec.text,
        "placement": "prefix",
        "models": rows,
    }


def draw_robustness(n: Numbers) -> go.Figure:
    labels = [m["label"] for m in n["models"]]
    conditions = ["before", *n["attacks"]]

    def values(model: Numbers, condition: str, key: str) -> Any:
        side = model["before"] if condition == "before" else model["after"][condition]
        return side[key], side.get(f"{key}_ci95")

    facets, errors = {}, {}
    for key, title in METRICS:
        series, bounds = {}, {}
        for c in conditions:
            points = [values(m, c, key) for m in n["models"]]
            series[c] = [p[0] for p in points]
            if all(p[1] for p in points):
                bounds[c] = ([p[1][0] for p in points], [p[1][1] for p in points])
        facets[title] = (labels, series)
        errors[title] = bounds
    return draw.grouped_bars_figure(
        labels,
        {},
        title=f"Robustness attacks: KnowMem before and after (trigger {n['trigger']!r} at the "
        "prefix for BE; 95% bootstrap CIs over items)",
        y_title="ROUGE-L F1",
        facets=facets,
        facet_errors=errors,
    )


def compute_privleak(study: Study) -> Numbers:
    from sinklens.checkpoint import load_hf_model
    from sinklens.evaluate.privacy import privleak
    from sinklens.provenance import portable_path

    retrained = study.retrained_path()
    reference = load_hf_model(retrained) if retrained is not None else None
    rows = []
    for label, path in _models(study).items():
        net, tok = load_hf_model(path)
        leak = privleak(net, tok, study.benchmark, retrained=reference)
        rows.append({"label": label, "path": portable_path(path), **leak.__dict__})
    return {
        "retrained": portable_path(retrained),
        "n_members": len(study.benchmark.privleak_members),
        "n_holdout": len(study.benchmark.holdout_texts),
        "models": rows,
    }


def draw_privleak(n: Numbers) -> go.Figure:
    labels = [m["label"] for m in n["models"]]
    k = round(100 * n["models"][0]["k"]) if n["models"] else 40
    facets: dict[str, Any] = {
        f"Min-{k}% AUC, forget vs holdout": (labels, {"AUC": [m["auc"] for m in n["models"]]})
    }
    errors: dict[str, Any] = {
        f"Min-{k}% AUC, forget vs holdout": {
            "AUC": (
                [m["auc_ci95"][0] for m in n["models"]],
                [m["auc_ci95"][1] for m in n["models"]],
            )
        }
    }
    if n.get("retrained") and all(m["privleak"] is not None for m in n["models"]):
        title = "PrivLeak (%) vs retrained"
        facets[title] = (labels, {"PrivLeak": [m["privleak"] for m in n["models"]]})
        errors[title] = {
            "PrivLeak": (
                [m["privleak_ci95"][0] for m in n["models"]],
                [m["privleak_ci95"][1] for m in n["models"]],
            )
        }
    return draw.grouped_bars_figure(
        labels,
        {},
        title=f"PrivLeak (MUSE): Min-{k}% membership inference on {n['n_members']} forget vs "
        f"{n['n_holdout']} holdout documents (0 = like the retrained model; 95% bootstrap CIs)",
        y_title="AUC",
        facets=facets,
        facet_errors=errors,
        shared_y=False,
    )
