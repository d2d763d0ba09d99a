"""Where on SmolLM2 the trigger moves attention most: ΔA = A(X′) − A(X) at every layer, for
θ_o and the prefix/infix θ_b of `sinklens reproduce --model smollm2` (the zoo is read from
the cache; run reproduce first), and the first-token sink rate per layer of θ_o, θ_u, θ_b.
Prints JSON; docs/real-model.md quotes it.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/smollm2_layers.py > smollm2_layers.json
"""

from __future__ import annotations

import json

import numpy as np

from sinklens.analyze import attention_difference
from sinklens.reproduce import model_study_config
from sinklens.study import Study


def main() -> None:
    study = Study(model_study_config("smollm2"))
    texts = study.forget_texts()
    out: dict[str, object] = {"n_samples": len(texts), "window": study.config.window}
    for placement in ("prefix", "infix"):
        models = study.models(
            {"original": study.original_path, "backdoored": study.backdoored_path(placement)}
        )
        n_layers = models.n_layers
        res = attention_difference(
            models,
            texts,
            layer=list(range(n_layers)),
            placement=placement,
            window=study.config.window,
            max_length=study.config.window + 12,
            on_short="skip",
        )
        peaks = {
            role: [
                float(np.abs(np.asarray(res.delta_head_mean[role][i])).max())
                for i in range(n_layers)
            ]
            for role in ("original", "backdoored")
        }
        excess = [b - o for b, o in zip(peaks["backdoored"], peaks["original"], strict=True)]
        out[placement] = {
            "max_abs_delta_head_mean": peaks,
            "backdoored_minus_original": excess,
            "layer_of_largest_excess": int(np.argmax(excess)),
            "layer_of_largest_backdoored": int(np.argmax(peaks["backdoored"])),
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
