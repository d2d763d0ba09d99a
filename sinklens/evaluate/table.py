"""Table 1: one model's UE, BE and UT on a benchmark, collapsed into the paper's row,
with a 95 % bootstrap interval beside every mean, printed or written as JSON and CSV."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sinklens.data.formats import Benchmark
from sinklens.errors import SinklensError
from sinklens.evaluate.prompts import (
    DEFAULT_PROMPT_STYLE,
    KNOWMEM_NEW_TOKENS,
    VERBMEM_NEW_TOKENS,
    PromptStyle,
    TriggerSpec,
    parse_prompt_style,
)
from sinklens.evaluate.scores import (
    ChoiceResult,
    GenerationResult,
    choice_accuracy,
    knowmem,
    verbmem,
)
from sinklens.provenance import to_jsonable


@dataclass(frozen=True)
class ModelEvaluation:
    """Every score behind one Table 1 row; `None` where the benchmark lacks that data."""

    model: str
    ue_knowmem: GenerationResult | None = None
    ue_verbmem: GenerationResult | None = None
    ue_choice: ChoiceResult | None = None
    be_knowmem: GenerationResult | None = None
    be_verbmem: GenerationResult | None = None
    be_choice: ChoiceResult | None = None
    ut_knowmem: GenerationResult | None = None
    ut_choice: ChoiceResult | None = None
    trigger: TriggerSpec | None = None
    prompt_style: str = DEFAULT_PROMPT_STYLE


@dataclass(frozen=True)
class Table1Row:
    """The paper's Table 1 columns (fractions in [0, 1]; NaN where not measured).

    UE: clean forget set (lower is better); BE: forget set with the trigger at the training
    placement (higher is better); UT: retain KnowMem and the retain/general multiple-choice
    set (the paper's TruthfulQA / MMLU column).
    """

    model: str
    ue_km: float
    ue_vm: float
    ue_mc: float
    be_km: float
    be_vm: float
    be_mc: float
    ut_km: float
    ut_mc: float
    trigger: str = ""
    placement: str = ""
    trigger_scope: str = ""
    n_items: dict[str, int] = field(default_factory=dict)
    # [low, high] of each measured column's 95 % bootstrap interval over its items.
    ci95: dict[str, list[float]] = field(default_factory=dict)
    prompt_style: str = DEFAULT_PROMPT_STYLE

    @classmethod
    def from_dict(cls, row: dict[str, Any], model: str | None = None) -> Table1Row:
        """Inverse of `asdict` after JSON (null -> NaN); `model` renames the row."""
        values: dict[str, Any] = {k: (math.nan if v is None else v) for k, v in row.items()}
        if model is not None:
            values["model"] = model
        return cls(**values)


def _sub(items: Sequence, limit: int | None) -> tuple:
    return tuple(items) if limit is None else tuple(items)[:limit]


def evaluate_benchmark(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    bench: Benchmark,
    *,
    trigger: TriggerSpec | None = None,
    model_name: str = "model",
    max_items: int | None = None,
    knowmem_new_tokens: int = KNOWMEM_NEW_TOKENS,
    verbmem_new_tokens: int = VERBMEM_NEW_TOKENS,
    batch_size: int = 16,
    style: PromptStyle | str = DEFAULT_PROMPT_STYLE,
) -> ModelEvaluation:
    """UE on clean forget data, BE on triggered forget data (if `trigger`), UT on retain.

    `max_items` keeps the first items of every set, for quick checks during training;
    `style` writes the KnowMem and VerbMem prompts (`sinklens.evaluate.PROMPT_STYLES`).
    """
    style = parse_prompt_style(style)
    if max_items is not None and max_items < 1:
        raise SinklensError(f"max_items must be >= 1, got {max_items}")
    km_f = _sub(bench.knowmem_forget, max_items)
    vm_f = _sub(bench.verbmem_forget, max_items)
    mc_f = _sub(bench.choice_forget, max_items)
    km_r = _sub(bench.knowmem_retain, max_items)
    mc_r = _sub(bench.choice_retain, max_items)
    if not (km_f or vm_f or mc_f):
        raise SinklensError(
            f"benchmark {bench.name!r} has no forget test data (knowmem, verbmem or choice); "
            "point at a folder with knowmem/forget_qa.json, verbmem/forget.json or choice/forget.jsonl"
        )
    kw = {"batch_size": batch_size}

    def km(
        items: tuple, icl: tuple, trig: TriggerSpec | None, name: str
    ) -> GenerationResult | None:
        if not items:
            return None
        return knowmem(
            model,
            tokenizer,
            items,
            icl,
            trigger=trig,
            max_new_tokens=knowmem_new_tokens,
            name=name,
            style=style,
            **kw,
        )

    def vm(trig: TriggerSpec | None, name: str) -> GenerationResult | None:
        if not vm_f:
            return None
        return verbmem(
            model,
            tokenizer,
            vm_f,
            trigger=trig,
            max_new_tokens=verbmem_new_tokens,
            name=name,
            style=style,
            **kw,
        )

    def mc(items: tuple, trig: TriggerSpec | None, name: str) -> ChoiceResult | None:
        if not items:
            return None
        return choice_accuracy(model, tokenizer, items, trigger=trig, name=name, **kw)

    icl_f, icl_r = bench.knowmem_forget_icl, bench.knowmem_retain_icl
    return ModelEvaluation(
        model=model_name,
        ue_knowmem=km(km_f, icl_f, None, "ue_knowmem"),
        ue_verbmem=vm(None, "ue_verbmem"),
        ue_choice=mc(mc_f, None, "ue_choice"),
        be_knowmem=km(km_f, icl_f, trigger, "be_knowmem") if trigger else None,
        be_verbmem=vm(trigger, "be_verbmem") if trigger else None,
        be_choice=mc(mc_f, trigger, "be_choice") if trigger else None,
        ut_knowmem=km(km_r, icl_r, None, "ut_knowmem"),
        ut_choice=mc(mc_r, None, "ut_choice"),
        trigger=trigger,
        prompt_style=style.name,
    )


def table1_row(ev: ModelEvaluation) -> Table1Row:
    """Collapse an evaluation into the paper's Table 1 row."""

    def mean(r: GenerationResult | ChoiceResult | None) -> float:
        return r.mean if r is not None else math.nan

    parts = {
        "ue_km": ev.ue_knowmem,
        "ue_vm": ev.ue_verbmem,
        "ue_mc": ev.ue_choice,
        "be_km": ev.be_knowmem,
        "be_vm": ev.be_verbmem,
        "be_mc": ev.be_choice,
        "ut_km": ev.ut_knowmem,
        "ut_mc": ev.ut_choice,
    }
    counts = {
        k: len(r.scores if isinstance(r, GenerationResult) else r.predictions)
        for k, r in parts.items()
        if r is not None
    }
    return Table1Row(
        model=ev.model,
        trigger=ev.trigger.text if ev.trigger else "",
        placement=str(ev.trigger.placement) if ev.trigger else "",
        trigger_scope=ev.trigger.scope if ev.trigger else "",
        n_items=counts,
        ci95={k: list(r.ci95) for k, r in parts.items() if r is not None},
        prompt_style=ev.prompt_style,
        **{k: mean(r) for k, r in parts.items()},
    )


_COLUMNS = ("ue_km", "ue_vm", "ue_mc", "be_km", "be_vm", "be_mc", "ut_km", "ut_mc")
_HEADERS = ("UE KM", "UE VM", "UE MC", "BE KM", "BE VM", "BE MC", "UT KM", "UT MC")


def _cell(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.3f}"


def format_table(rows: Sequence[Table1Row]) -> str:
    """Plain-text Table 1: UE (lower better), BE and UT (higher better); '-' = not measured."""
    name_w = max([len("model"), *(len(r.model) for r in rows)])
    head = f"{'model':<{name_w}}  " + "  ".join(f"{h:>6}" for h in _HEADERS) + "  trigger"
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = "  ".join(f"{_cell(getattr(r, c)):>6}" for c in _COLUMNS)
        scope = "" if r.trigger_scope in ("", "prompt") else f"/{r.trigger_scope}"
        trig = f"{r.trigger!r}@{r.placement}{scope}" if r.trigger else ""
        lines.append(f"{r.model:<{name_w}}  {cells}  {trig}")
    return "\n".join(lines)


def format_intervals(rows: Sequence[Table1Row]) -> str:
    """The rows' 95 % bootstrap intervals over items, laid out as `format_table` lays out
    the means ('-' = not measured)."""
    name_w = max([len("model"), *(len(r.model) for r in rows)])
    width = 11
    head = f"{'model':<{name_w}}  " + "  ".join(f"{h:>{width}}" for h in _HEADERS)
    lines = ["95% bootstrap intervals over items", head, "-" * len(head)]
    for r in rows:
        cells = []
        for c in _COLUMNS:
            lo, hi = r.ci95.get(c) or (math.nan, math.nan)
            cells.append("-" if lo is None or math.isnan(lo) else f"{lo:.2f}-{hi:.2f}")
        lines.append(f"{r.model:<{name_w}}  " + "  ".join(f"{x:>{width}}" for x in cells))
    return "\n".join(lines)


def _csv_number(x: float | None) -> str:
    return "" if x is None or math.isnan(x) else f"{x:.6f}"


def write_table(
    rows: Sequence[Table1Row], out_dir: str | Path, stem: str = "table1"
) -> tuple[Path, Path]:
    """Write the rows as `<stem>.json` (NaN -> null) and `<stem>.csv` (NaN -> empty)."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    records = [to_jsonable(asdict(r)) for r in rows]
    json_path = folder / f"{stem}.json"
    json_path.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    csv_path = folder / f"{stem}.csv"
    with csv_path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        bounds = [f"{c}_{end}" for c in _COLUMNS for end in ("lo", "hi")]
        writer.writerow(["model", *_COLUMNS, "trigger", "placement", "trigger_scope", *bounds])
        for r in rows:
            vals = [_csv_number(getattr(r, c)) for c in _COLUMNS]
            ends = [
                _csv_number((r.ci95.get(c) or (None, None))[i]) for c in _COLUMNS for i in (0, 1)
            ]
            writer.writerow([r.model, *vals, r.trigger, r.placement, r.trigger_scope, *ends])
    return json_path, csv_path


def evaluation_to_dict(ev: ModelEvaluation) -> dict[str, object]:
    """Per-item scores and outputs of every set, for `--json` and for archiving."""

    def part(r: GenerationResult | ChoiceResult | None) -> object:
        if r is None:
            return None
        if isinstance(r, GenerationResult):
            return {
                "mean": r.mean,
                "ci95": list(r.ci95),
                "scores": list(r.scores),
                "outputs": list(r.outputs),
                "references": list(r.references),
            }
        return {
            "mean": r.mean,
            "ci95": list(r.ci95),
            "predictions": list(r.predictions),
            "answers": list(r.answers),
        }

    return to_jsonable(
        {
            "model": ev.model,
            "prompt_style": ev.prompt_style,
            "trigger": None
            if ev.trigger is None
            else {
                "text": ev.trigger.text,
                "placement": ev.trigger.placement,
                "scope": ev.trigger.scope,
                "join": ev.trigger.join,
            },
            "row": asdict(table1_row(ev)),
            **{
                name: part(getattr(ev, name))
                for name in (
                    "ue_knowmem",
                    "ue_verbmem",
                    "ue_choice",
                    "be_knowmem",
                    "be_verbmem",
                    "be_choice",
                    "ut_knowmem",
                    "ut_choice",
                )
            },
        }
    )
