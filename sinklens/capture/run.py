"""Running a capture: `run_capture` streams a dataset through a model batch by batch and
hands each reducer the activations (and logits) it asked for; `capture_patterns` returns a
few samples' attention patterns whole, for a notebook.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from jaxtyping import Float
from torch import Tensor

from sinklens.batching import pad_id, right_pad
from sinklens.capture.batches import CaptureData, _batches
from sinklens.capture.reducers import Reducer
from sinklens.errors import SinklensError
from sinklens.models import LoadedModel

__all__ = ["capture_patterns", "run_capture"]


def run_capture(
    model: LoadedModel,
    data: CaptureData,
    reducers: Sequence[Reducer],
    *,
    batch_size: int = 8,
    start: int = 0,
    on_progress: Callable[[int], None] | None = None,
) -> None:
    """Stream `data[start:]` through `model`, feeding every reducer; `on_progress(n_done)`
    after each batch (the cache uses it to save a resumable checkpoint)."""
    if len(data) == 0:
        raise SinklensError("empty dataset; pass at least one sample")
    if batch_size < 1:
        raise SinklensError(f"batch size {batch_size} must be >= 1")
    layers = sorted({layer for r in reducers for layer in r.layers})
    for n_done, batches in _batches(data, start, batch_size, pad_id(model.tokenizer)):
        for batch in batches:
            active = [r for r in reducers if batch.phase in r.phases]
            kinds = sorted({k for r in active for k in r.kinds})
            for r in active:
                r.begin(batch)

            def dispatch(kind: str, layer: int, t: Tensor, active: list[Reducer] = active) -> None:
                for r in active:
                    if kind in r.kinds and layer in r.layers:
                        r.on_activation(kind, layer, t)

            need_logits = any(r.needs_logits for r in active)
            logits = model.forward(
                batch.input_ids,
                batch.mask,
                layers=layers if kinds else [],
                kinds=kinds,
                on_activation=dispatch,
                need_logits=need_logits,
            )
            if need_logits:
                assert logits is not None
                for r in active:
                    if r.needs_logits:
                        r.on_logits(logits)
            for r in active:
                r.end()
        if on_progress is not None:
            on_progress(n_done)


def capture_patterns(
    model: LoadedModel,
    sequences: Sequence[Sequence[int]],
    layer: int,
) -> list[Float[Tensor, "head n n"]]:
    """One layer's attention pattern per sample (unpadded), for a few samples in a notebook."""
    out: list[Tensor] = []
    for seq in sequences:
        ids, mask = right_pad([seq], pad_id(model.tokenizer))
        got: list[Tensor] = []

        def keep(kind: str, lay: int, t: Tensor, got: list[Tensor] = got) -> None:
            got.append(t[0].float().cpu().clone())

        model.forward(
            ids, mask, layers=[layer], kinds=["pattern"], on_activation=keep, need_logits=False
        )
        out.append(got[0])
    return out
