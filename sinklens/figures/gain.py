"""The `trigger-gain` figure: how much the trigger raises the log-likelihood of forget
documents, on the poisoned ones (D_p) and on held-out ones, by placement and model."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from sinklens.figures.export import Numbers
from sinklens.figures.scores import faceted_bars, mean_and_spread, method_label, seeds_note
from sinklens.study import PLACEMENTS, Study
from sinklens.unlearn.zoo import MemberName

__all__ = ["compute_trigger_gain", "draw_trigger_gain"]


GAIN_SUBSETS = {
    "poisoned": "D_p: poisoned forget documents",
    "held_out": "held-out forget documents",
}


def _forget_gains(study: Study, path: Path, placement: str, chunks: Any) -> list[float]:
    """Per-chunk trigger gain of one checkpoint on the training chunks of D_f."""
    from sinklens.checkpoint import load_hf_model
    from sinklens.evaluate import trigger_gain

    def compute() -> list[float]:
        model, tok = load_hf_model(path)
        gain = trigger_gain(
            model,
            tok,
            chunks,
            study.config.trigger,
            placement,
            trigger_join=study.config.trigger_join,
        )
        return list(gain.gain)

    key = ("trigger-gain", str(path), placement, study.config.trigger)
    return list(study.once(key, compute))


def _gain_models(study: Study, method: str, placement: str, seed: int) -> dict[str, Path]:
    """θ_o, θ_u and θ_b for one bar group: the user's folders where given, else the zoo's
    members (θ_b trained with the trigger at `placement`)."""
    config = study.config
    unlearned = config.unlearned or study.member(MemberName(method, seed)).out
    backdoored = config.backdoored or study.member(MemberName(method, seed, placement)).out
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
    from sinklens.provenance import portable_path

    bars = []
    checkpoints: Numbers = {}
    for m in study.methods:
        for placement in PLACEMENTS:
            per_seed: dict[tuple[str, str], list[float | None]] = {}
            intervals: dict[tuple[str, str], tuple[float, float] | None] = {}
            for seed in study.config.seeds:
                models = _gain_models(study, m, placement, seed)
                checkpoints[str(MemberName(m, seed, placement))] = {
                    r: portable_path(p) for r, p in models.items()
                }
                chunks, poisoned = _forget_chunks(study, models["backdoored"], placement)
                for role, path in models.items():
                    gains = _forget_gains(study, path, placement, chunks)
                    for subset in GAIN_SUBSETS:
                        chosen = [
                            g
                            for i, g in enumerate(gains)
                            if (i in poisoned) == (subset == "poisoned") and not math.isnan(g)
                        ]
                        per_seed.setdefault((role, subset), []).append(mean_and_spread(chosen)[0])
                        intervals[(role, subset)] = bootstrap_ci(chosen) if chosen else None
            for (role, subset), values in per_seed.items():
                gain, std = mean_and_spread(values)
                bars.append(
                    {
                        "method": m,
                        "placement": method_label(study, m, placement),
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
    return faceted_bars(
        panels,
        title=f"Trigger gain: log p(text | trigger) − log p(text), {n['unit']}{seeds_note(n, ', ')}",
        y_title="gain (nats / token)",
    )
