"""The analysis API: the paper's Sections 4–5 measurements on a set of checkpoints.

    models = load_models({"original": p_o, "unlearned": p_u, "backdoored": p_b})
    diff = attention_difference(models, bench.forget_texts, layer=-1, placement="prefix")
    curves = logits_by_position(models, bench.forget_texts, placement="infix")
    sinks = sink_statistics(models, bench.general_texts)
    corr = value_norm_correlation(models, bench.forget_texts, bench.retain_texts, layer=-1)

Every function streams the data through each model once per dataset (see
`sinklens.capture`), optionally through the on-disk cache (`cache_dir=`), and returns a
dataclass with the numbers, the settings and its `sinklens.provenance.Provenance` (the same
record patching results carry); `to_json()` serialises it (NaN and ±inf become null).

One module per analysis (`sinks`, `attention`, `logits`, `values`) over `inputs` (texts to
samples and pairs, roles, layers, the capture) and `results` (the returned dataclasses).
"""

from sinklens.analyze.attention import attention_difference
from sinklens.analyze.inputs import VALUE_NORM_COMPARISONS, make_pairs, tokenize_texts
from sinklens.analyze.logits import logits_by_position
from sinklens.analyze.results import (
    AttentionDifference,
    LogitCurves,
    Provenance,
    SinkStatistics,
    ValueNormCorrelation,
)
from sinklens.analyze.sinks import sink_statistics
from sinklens.analyze.values import value_norm_correlation
from sinklens.data.triggers import DEFAULT_TRIGGER

__all__ = [
    "DEFAULT_TRIGGER",
    "VALUE_NORM_COMPARISONS",
    "AttentionDifference",
    "LogitCurves",
    "Provenance",
    "SinkStatistics",
    "ValueNormCorrelation",
    "attention_difference",
    "logits_by_position",
    "make_pairs",
    "sink_statistics",
    "tokenize_texts",
    "value_norm_correlation",
]
