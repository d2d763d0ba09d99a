"""Activation patching: which heads (and positions) carry a backdoor trigger's effect.

One module per job: `corruptions` (same-length corrupted runs), `metrics` (recovery
metrics), `core` (the engine: forwards, caches, bound metrics, one variant per forward),
`batched` (many variants per forward, with KV reuse), `target_cache` (what batched patching
reuses of the unpatched run), `results` (a result's provenance, and saving it in the analysis cache),
`heads` (trigger patching, exact and attribution), `sweep` (trigger depth), `cross_model` and `ablation` (sink ablation).
See docs/patching.md.
"""

from sinklens.patching.ablation import ABLATION_MODES, SinkAblationResult, sink_ablation
from sinklens.patching.core import (
    HeadVariants,
    bind_metric,
    cache_z,
    patched_forward,
)
from sinklens.patching.corruptions import (
    CORRUPTION_KINDS,
    Corruption,
    PatchingBatch,
    PatchingSample,
    build_batch,
    check_same_length,
    corrupt_trigger,
    make_clean_sample,
    make_sample,
    make_samples,
)
from sinklens.patching.cross_model import CrossModelResult, cross_model_patching
from sinklens.patching.heads import (
    AttributionResult,
    HeadPatchingResult,
    attribution_patching,
    trigger_patching,
)
from sinklens.patching.metrics import (
    alternative_tokens,
    answer_logit_diff,
    answer_logprob,
    normalised_effect,
    spearman,
)
from sinklens.patching.results import (
    Provenance,
    save_result,
)
from sinklens.patching.sweep import SweepResult, default_depths, position_sweep, trigger_attention

__all__ = [
    "ABLATION_MODES",
    "CORRUPTION_KINDS",
    "AttributionResult",
    "Corruption",
    "CrossModelResult",
    "HeadPatchingResult",
    "HeadVariants",
    "PatchingBatch",
    "PatchingSample",
    "Provenance",
    "SinkAblationResult",
    "SweepResult",
    "alternative_tokens",
    "answer_logit_diff",
    "answer_logprob",
    "attribution_patching",
    "bind_metric",
    "build_batch",
    "cache_z",
    "check_same_length",
    "corrupt_trigger",
    "cross_model_patching",
    "default_depths",
    "make_clean_sample",
    "make_sample",
    "make_samples",
    "normalised_effect",
    "patched_forward",
    "position_sweep",
    "save_result",
    "sink_ablation",
    "spearman",
    "trigger_attention",
    "trigger_patching",
]
