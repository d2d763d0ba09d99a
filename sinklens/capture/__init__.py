"""Streaming capture: run a dataset through a model in batches and reduce on the fly.

Batches are right-padded with an attention mask, and padding is masked out of every
statistic. Each reducer sees one layer's activation at a time, as the model produces it,
and folds it into running sums and counts. Only `ValueNormReducer` and `ActivationReducer`
keep anything per sample, and only for the layers, hook kinds and positions asked for.
Memory therefore does not grow with the number of samples (beyond those few floats per
sample), and no whole-dataset, all-layer attention pattern ever exists: a 32-layer, 32-head model at 2,048 tokens would need about
17 GB per prompt for that in float32.

A paired dataset (clean X and triggered X′) runs each batch twice, clean first, so a
reducer can keep the clean batch's first T×T attention entries until the triggered batch
arrives.

One module per job: `batches` (the data and its padded batches), `reducers` (the running
statistics) and `run` (streaming the batches through a model).
"""

from sinklens.capture.batches import Batch, CaptureData, PairedSample
from sinklens.capture.reducers import (
    ActivationReducer,
    AttentionDiffReducer,
    LogitReducer,
    Reducer,
    SinkReducer,
    ValueNormReducer,
)
from sinklens.capture.run import capture_patterns, run_capture

__all__ = [
    "ActivationReducer",
    "AttentionDiffReducer",
    "Batch",
    "CaptureData",
    "LogitReducer",
    "PairedSample",
    "Reducer",
    "SinkReducer",
    "ValueNormReducer",
    "capture_patterns",
    "run_capture",
]
