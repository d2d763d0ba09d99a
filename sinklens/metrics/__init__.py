"""Pure metric functions on tensors: usable from a notebook on any model's activations."""

from sinklens.metrics.attention import (
    ALIGNMENTS,
    Alignment,
    attention_difference,
    attention_difference_terms,
    head_average,
    masked_mean,
)
from sinklens.metrics.logits import STAT_NAMES, align_positions, next_token_stats
from sinklens.metrics.sinks import (
    dormant_head_score,
    head_output_norms,
    sink_alpha,
    sink_rate,
    sink_set,
)
from sinklens.metrics.values import norm_correlation, pearson, value_norms

__all__ = [
    "ALIGNMENTS",
    "STAT_NAMES",
    "Alignment",
    "align_positions",
    "attention_difference",
    "attention_difference_terms",
    "dormant_head_score",
    "head_average",
    "head_output_norms",
    "masked_mean",
    "next_token_stats",
    "norm_correlation",
    "pearson",
    "sink_alpha",
    "sink_rate",
    "sink_set",
    "value_norms",
]
