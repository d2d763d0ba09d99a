"""The `patching` figure: which heads of the prefix θ_b carry the trigger's recovery
(denoising activation patching per head), with the trigger-position sweep beside it."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from sinklens.figures import draw
from sinklens.figures.export import Numbers, result_provenance
from sinklens.study import Study

__all__ = ["compute_patching", "draw_patching"]


def compute_patching(study: Study) -> Numbers:
    from sinklens.batching import pad_id
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
        pad_id(tok),
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
        "provenance": result_provenance(heads),
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
