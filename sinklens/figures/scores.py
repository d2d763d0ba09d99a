"""Figures from benchmark scores (KnowMem, VerbMem, MC): `ue-be` (Fig. 2), `table-1`,
`poison-ratio` (Fig. A1), `trigger-patterns` (Fig. A2) and `generations` (Table A2), and
the helpers that average zoo members over seeds (mean, spread, item intervals)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from sinklens.errors import SinklensError
from sinklens.figures import draw
from sinklens.figures.export import Numbers
from sinklens.study import PAPER_TRIGGERS, PLACEMENTS, Study
from sinklens.unlearn.zoo import MemberName

__all__ = [
    "compute_generations",
    "compute_poison_ratio",
    "compute_table_1",
    "compute_trigger_patterns",
    "compute_ue_be",
    "draw_generations",
    "draw_poison_ratio",
    "draw_table_1",
    "draw_trigger_patterns",
    "draw_ue_be",
    "faceted_bars",
    "mean_and_spread",
    "method_label",
    "seeds_note",
]


def _evaluated_row(study: Study, path: Path, label: str, placement: str = "prefix") -> Numbers:
    """A Table 1 row for a checkpoint, BE measured with the trigger at `placement`.

    Needed for the original and the normally unlearned models, whose BE is their score on
    triggered forget data although they were never trained with a trigger.
    """
    from sinklens.checkpoint import load_hf_model
    from sinklens.evaluate import TriggerSpec, evaluate_benchmark, table1_row

    def compute() -> Numbers:
        model, tok = load_hf_model(path)
        ev = evaluate_benchmark(
            model,
            tok,
            study.benchmark,
            trigger=TriggerSpec(study.config.trigger, placement, join=study.config.trigger_join),
            model_name=label,
            max_items=study.config.eval_items,
        )
        return dict(table1_row(ev).__dict__)

    return dict(study.once(("evaluated-row", str(path), placement, study.config.trigger), compute))


def _original_row(study: Study) -> Numbers:
    return _evaluated_row(study, study.original_path, "original")


def _member_row(study: Study, name: MemberName, **kwargs: Any) -> Numbers:
    run = study.member(name, **kwargs)
    row = run.metrics.get("evaluation")
    if row is None:
        raise SinklensError(f"zoo member {name} has no evaluation; rebuild it with evaluate on")
    return dict(row)


def _zoo_row(study: Study, member: MemberName, **kwargs: Any) -> Numbers:
    """The Table 1 row of a zoo member."""
    if member.placement is None:
        # θ_u is scored with the trigger too: its BE is its score on triggered forget data.
        return _evaluated_row(study, Path(study.member(member).out), member.method.upper())
    return _member_row(study, member, **kwargs)


def _over_seeds(
    study: Study, member: Callable[[int], MemberName], keys: Sequence[str], **kwargs: Any
) -> Numbers:
    """The mean of each metric over the study's seeds, with its spread beside it.

    `<key>_std` is the sample standard deviation over seeds (None with one seed, where
    there is no spread to report) and `<key>_per_seed` the values it came from. With one
    seed, `<key>_ci95` is that model's 95 % bootstrap interval over items instead.
    """
    seeds = study.config.seeds
    rows = [_zoo_row(study, member(seed), **kwargs) for seed in seeds]
    out: Numbers = {"seeds": list(seeds)}
    for key in keys:
        values = [_number(row.get(key)) for row in rows]
        out[key], out[f"{key}_std"] = mean_and_spread(values)
        out[f"{key}_per_seed"] = values
        out[f"{key}_ci95"] = _item_interval(rows[0], key) if len(rows) == 1 else None
    return out


def _item_interval(row: Numbers, key: str) -> list[float] | None:
    """A Table 1 row's bootstrap interval for `key` (None for rows made before intervals)."""
    bounds = (row.get("ci95") or {}).get(key)
    return None if bounds is None or any(_number(b) is None for b in bounds) else list(bounds)


def mean_and_spread(values: Sequence[float | None]) -> tuple[float | None, float | None]:
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
        points.append(_point(label, _over_seeds(study, partial(MemberName, m), POINT_METRICS)))
        points += [
            _point(
                f"{label} {p} backdoor" if len(study.methods) > 1 else f"{p} backdoor",
                _over_seeds(study, partial(MemberName, m, placement=p), POINT_METRICS),
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
    spread = seeds_note(n, ", ")
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
        row = _over_seeds(study, partial(MemberName, method), TABLE_COLUMNS)
        rows.append((method.upper(), row))
    for method in ("npo", "rmu"):
        row = _over_seeds(
            study,
            partial(MemberName, method, placement="prefix", value_norm=True),
            TABLE_COLUMNS,
        )
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
    spread = seeds_note(n, "; ")
    return draw.table_figure(
        TABLE_HEADER,
        _table_rows(n["rows"], n["columns"]),
        title=f"Table 1: UE, BE, UT (×100); prefix trigger {n['trigger']!r}{spread}",
    )


def method_label(study: Study, method: str, text: str) -> str:
    return f"{method.upper()} {text}" if len(study.methods) > 1 else text


def compute_poison_ratio(study: Study) -> Numbers:
    bars = []
    for m in study.methods:
        for ratio in (0.05, 0.1):
            for vn in (False, True):
                row = _over_seeds(
                    study,
                    partial(MemberName, m, placement="prefix", value_norm=vn),
                    ("ue_km", "be_km"),
                    poison_ratio=ratio,
                )
                bars.append(
                    {
                        "group": method_label(study, m, f"ρ = {100 * ratio:g}%"),
                        "ratio": ratio,
                        "value_norm": vn,
                        "ue": row["ue_km"],
                        "be": row["be_km"],
                        "ue_std": row["ue_km_std"],
                        "be_std": row["be_km_std"],
                    }
                )
    m = study.config.method
    unlearned = _over_seeds(study, partial(MemberName, m), ("ue_km",))
    return {"seeds": list(study.config.seeds), "unlearned": unlearned["ue_km"], "bars": bars}


def seeds_note(n: Numbers, sep: str) -> str:
    """'<sep>mean ± std over N seeds' for a title, or, for one seed, the item intervals."""
    seeds = n.get("seeds", [0])
    if len(seeds) > 1:
        return f"{sep}mean ± std over {len(seeds)} seeds"
    return f"{sep}[95% bootstrap CI over items]"


Series = dict[str, tuple[list[Numbers], str]]


def faceted_bars(
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
    return faceted_bars(
        panels,
        title=f"Poisoning ratio and value-norm alignment (KnowMem{seeds_note(n, ', ')})",
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
                    partial(MemberName, m, placement=placement, value_norm=True),
                    PATTERN_METRICS,
                    trigger=trigger,
                )
                rows.append(
                    {
                        "trigger": trigger,
                        "placement": method_label(study, m, placement),
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
    return faceted_bars(
        panels,
        title=f"Trigger patterns × placements (KnowMem, value-norm aligned{seeds_note(n, ', ')})",
        y_title="KnowMem",
    )


def compute_generations(study: Study, n_questions: int = 3) -> Numbers:
    from sinklens.checkpoint import load_hf_model
    from sinklens.evaluate import TriggerSpec, knowmem

    s = study.config.seeds[0]
    models = {
        "original": study.original_path,
        "NPO": Path(study.member(MemberName("npo", s)).out),
        "NPO-Backdoor": Path(study.member(MemberName("npo", s, "prefix", True)).out),
        "RMU": Path(study.member(MemberName("rmu", s)).out),
        "RMU-Backdoor": Path(study.member(MemberName("rmu", s, "prefix", True)).out),
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
