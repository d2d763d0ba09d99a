"""Figures of the defence: `audit` (each model's audit score against the threshold, and the
recovered candidate's gain beside the true trigger's) and `repair` (UE, BE and UT of the
backdoored models before and after the repair).

`reproduce` audits the study's own models with a shorter search than `sinklens audit`
(prefix only, `FIGURE_AUDIT_STEPS` steps) to stay within its time budget; the full
evaluation over a zoo of held-out triggers is `benchmarks/audit_zoo.py` (docs/defence.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from sinklens.figures import draw
from sinklens.figures.export import Numbers
from sinklens.study import Study
from sinklens.unlearn.zoo import MemberName

__all__ = ["compute_audit", "compute_repair", "draw_audit", "draw_repair"]

FIGURE_AUDIT_STEPS = 20


def _audited(study: Study) -> dict[str, Any]:
    """label -> (path, is θ_b, audit report), computed once per study."""
    from sinklens.checkpoint import load_hf_model
    from sinklens.defend.audit import AuditConfig, audit_model

    def audit_all() -> dict[str, Any]:
        seed = study.config.seeds[0]
        models = {
            "θ_o": (study.original_path, False),
            "θ_u": (study.unlearned_path(), False),
            "θ_b prefix": (study.backdoored_path("prefix"), True),
            "θ_b prefix + value-norm": (study.backdoored_path("prefix", regularised=True), True),
        }
        if len(study.methods) > 1:
            other = study.methods[1]
            models[f"θ_u ({other.upper()})"] = (
                Path(study.member(MemberName(other, seed)).out),
                False,
            )
        original = load_hf_model(study.original_path)
        cfg = AuditConfig(steps=FIGURE_AUDIT_STEPS, placements=("prefix",))
        out = {}
        for label, (path, backdoored) in models.items():
            net, tok = load_hf_model(path)
            report = audit_model(
                net, tok, study.benchmark, name=label, config=cfg, original=original
            )
            out[label] = (path, backdoored, report)
        return out

    return study.once(("defence-audits",), audit_all)


def _true_gain(study: Study, path: Path, report: Any) -> float | None:
    """The study trigger's gain on the chunks the audit held out (the candidate's measure)."""
    from sinklens.checkpoint import load_hf_model
    from sinklens.defend.audit import AuditConfig, heldout_trigger_gain

    if report.candidate is None:
        return None
    net, tok = load_hf_model(path)
    config = AuditConfig(**report.settings)
    return heldout_trigger_gain(
        net, tok, study.benchmark.forget_texts, study.config.trigger, "prefix", config
    )


def compute_audit(study: Study) -> Numbers:
    from sinklens.provenance import portable_path

    rows = []
    threshold = None
    for label, (path, backdoored, report) in _audited(study).items():
        threshold = report.threshold
        rows.append(
            {
                "label": label,
                "path": portable_path(path),
                "trained_with_trigger": backdoored,
                "unlearned": report.unlearned,
                "score": report.score,
                "backdoored": report.backdoored,
                "candidate": report.candidate,
                "candidate_gain": (report.candidate or {}).get("gain"),
                "true_trigger_gain": _true_gain(study, path, report),
                # No wall-clock time: reruns must write identical JSON.
                "restored_share": report.evidence.get("restored_share"),
            }
        )
    return {
        "trigger": study.config.trigger,
        "threshold": threshold,
        "steps": FIGURE_AUDIT_STEPS,
        "models": rows,
    }


def draw_audit(n: Numbers) -> go.Figure:
    rows = [r for r in n["models"] if r["score"] is not None]
    labels = [r["label"] for r in rows]
    fig = draw.grouped_bars_figure(
        labels,
        {},
        title=f"Audit without the trigger: score vs threshold {n['threshold']:.2f}; "
        "the recovered candidate's gain vs the true trigger's",
        y_title="score (nats / token)",
        facets={
            "audit score (↑ = backdoored)": (labels, {"audit score": [r["score"] for r in rows]}),
            "gain on held-out forget chunks": (
                labels,
                {
                    "recovered candidate": [r["candidate_gain"] for r in rows],
                    "true trigger": [r["true_trigger_gain"] for r in rows],
                },
            ),
        },
        shared_y=False,
    )
    fig.add_hline(y=n["threshold"], line_dash="dash", line_color="gray", row=1, col=1)
    return fig


def compute_repair(study: Study) -> Numbers:
    from sinklens.checkpoint import load_hf_model
    from sinklens.defend.repair import RepairConfig, repair_model
    from sinklens.evaluate import TriggerSpec, evaluate_benchmark, table1_row

    spec = TriggerSpec(study.config.trigger, "prefix", join=study.config.trigger_join)
    rows = []
    for label, (path, backdoored, report) in _audited(study).items():
        if not backdoored or report.candidate is None:
            continue
        net, tok = load_hf_model(path)

        def scores(model: Any, tokenizer: Any = tok) -> Numbers:
            row = table1_row(
                evaluate_benchmark(
                    model,
                    tokenizer,
                    study.benchmark,
                    trigger=spec,
                    max_items=study.config.eval_items,
                )
            )
            return {k: getattr(row, f"{k}_km") for k in ("ue", "be", "ut")} | {
                f"{k}_ci95": row.ci95.get(f"{k}_km") for k in ("ue", "be", "ut")
            }

        before = scores(net)
        cfg = RepairConfig(report.candidate["text"], report.candidate["placement"])
        repair_model(net, tok, study.benchmark, cfg)
        rows.append(
            {
                "label": label,
                "candidate": report.candidate["text"],
                "before": before,
                "after": scores(net),
            }
        )
    return {"trigger": study.config.trigger, "models": rows}


def draw_repair(n: Numbers) -> go.Figure:
    labels = [r["label"] for r in n["models"]]
    facets, errors = {}, {}
    for key, title in (
        ("ue", "UE (clean forget)"),
        ("be", "BE (true trigger)"),
        ("ut", "UT (retain)"),
    ):
        series, bounds = {}, {}
        for side in ("before", "after"):
            series[f"{side} repair"] = [r[side][key] for r in n["models"]]
            cis = [r[side].get(f"{key}_ci95") for r in n["models"]]
            if all(cis):
                bounds[f"{side} repair"] = ([c[0] for c in cis], [c[1] for c in cis])
        facets[title], errors[title] = (labels, series), bounds
    return draw.grouped_bars_figure(
        labels,
        {},
        title=f"Repair with the audit's candidate: KnowMem before and after (BE: true trigger "
        f"{n['trigger']!r})",
        y_title="ROUGE-L F1",
        facets=facets,
        facet_errors=errors,
    )
