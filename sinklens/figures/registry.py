"""The figure registry: every figure and table of the paper, plus sinklens's own, in the
order `reproduce` makes them. Each family of figures lives in its own module (attention,
scores, gain, patching, robustness, defence).

Each entry has two halves. `compute(study)` runs the real analysis and returns the
plotted numbers as plain JSON-able data (with provenance); `draw(numbers)` is a pure
function from those numbers to a plotly figure. `NAME.json` holds exactly what `draw`
receives, so any saved figure can be redrawn, and checked, from its JSON alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import plotly.graph_objects as go

from sinklens.errors import SinklensError
from sinklens.figures import attention, defence, draw, gain, patching, robustness, scores
from sinklens.figures.captions import caption
from sinklens.figures.export import Drawn, Numbers, to_jsonable
from sinklens.study import Study

__all__ = ["FIGURES", "FIGURE_OPTIONS", "FigureSpec", "figure_names", "get_figure"]

# Study settings that only some figures read; `sinklens figure NAME` refuses one that NAME
# does not (`--layer` on `sinks` would otherwise be silently ignored).
FIGURE_OPTIONS = ("layer", "retrained")


@dataclass(frozen=True)
class FigureSpec:
    name: str
    description: str
    compute: Callable[[Study], Numbers]
    draw: Callable[[Numbers], go.Figure]
    options: tuple[str, ...] = ()  # which of FIGURE_OPTIONS it reads

    def __post_init__(self) -> None:
        unknown = set(self.options) - set(FIGURE_OPTIONS)
        assert not unknown, f"bug in sinklens: figure {self.name} declares {unknown}"

    def check_options(self, given: dict[str, object]) -> None:
        """Refuse, in one line, a figure-specific option this figure does not read."""
        for option, value in given.items():
            if value is not None and option not in self.options:
                users = [n for n, s in FIGURES.items() if option in s.options]
                flag = "--" + option.replace("_", "-")
                raise SinklensError(
                    f"figure {self.name} does not use {flag}; drop it (figures that use it: "
                    f"{', '.join(users)})"
                )

    def make(self, study: Study) -> Drawn:
        key = ("figure-numbers", self.compute.__module__, self.compute.__name__)
        computed = study.once(key, lambda: to_jsonable(self.compute(study)))
        numbers = {**computed, "run": study.provenance()}
        # The verdict is computed from the numbers, so it is saved with them.
        numbers["caption"] = caption(self.name, numbers)
        text = f"{self.description} {numbers['caption']}".strip()
        return Drawn(
            self.name, draw.with_subscripts(draw.fit_title(self.draw(numbers))), numbers, text
        )


FIGURES: dict[str, FigureSpec] = {
    spec.name: spec
    for spec in (
        FigureSpec(
            "ue-be",
            "Fig. 2: UE vs BE and UT vs BE by trigger placement.",
            scores.compute_ue_be,
            scores.draw_ue_be,
        ),
        FigureSpec(
            "attn-diff",
            "Fig. 3: attention difference maps, original vs backdoored, prefix vs infix.",
            attention.compute_attention_difference,
            attention.draw_attention_difference,
            options=("layer",),
        ),
        FigureSpec(
            "attn-diff-heads",
            "Fig. 3, per head: ΔA of the prefix-backdoored model for every head.",
            attention.compute_attention_difference,
            attention.draw_attention_difference_heads,
            options=("layer",),
        ),
        FigureSpec(
            "logits-by-position",
            "Fig. 4: true-next-token logit by position.",
            attention.compute_logits,
            attention.draw_logits,
        ),
        FigureSpec(
            "value-norm-corr",
            "Fig. 5: Pearson correlation of sink-token value norms with bootstrap CIs.",
            attention.compute_value_norms,
            attention.draw_value_norms,
            options=("layer",),
        ),
        FigureSpec(
            "poison-ratio",
            "Fig. A1: 5% vs 10% poisoning, with and without value-norm alignment.",
            scores.compute_poison_ratio,
            scores.draw_poison_ratio,
        ),
        FigureSpec(
            "trigger-patterns",
            "Fig. A2 / Table A4: three trigger patterns at each placement.",
            scores.compute_trigger_patterns,
            scores.draw_trigger_patterns,
        ),
        FigureSpec(
            "trigger-gain",
            "New: how much the trigger raises the likelihood of forget documents, by placement.",
            gain.compute_trigger_gain,
            gain.draw_trigger_gain,
        ),
        FigureSpec(
            "table-1",
            "Table 1: UE/BE/UT of original, unlearned and backdoored models.",
            scores.compute_table_1,
            scores.draw_table_1,
        ),
        FigureSpec(
            "generations",
            "Table A2: answers of every model to clean and triggered questions.",
            scores.compute_generations,
            scores.draw_generations,
        ),
        FigureSpec(
            "sinks",
            "New: α of the first token per layer and head for each model.",
            attention.compute_sinks,
            attention.draw_sinks,
        ),
        FigureSpec(
            "patching",
            "New: which heads carry the prefix trigger's recovery (activation patching).",
            patching.compute_patching,
            patching.draw_patching,
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
            options=("retrained",),
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
