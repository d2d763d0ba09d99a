"""Reducers: each folds one phase's activations into running statistics as they stream past.

A reducer sees one layer's activation at a time, as the model produces it, and folds it into
running sums and counts; padding is masked out of every statistic. Only `ValueNormReducer`
and `ActivationReducer` keep anything per sample, and only for the layers, hook kinds and
positions asked for. On a paired dataset a reducer keeps the clean batch's first T×T
attention entries (or its logit statistics) until the triggered batch arrives.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor

from sinklens.capture.batches import Batch
from sinklens.errors import SinklensError
from sinklens.metrics.attention import Alignment, attention_difference_terms, pad_square
from sinklens.metrics.logits import align_positions, next_token_stats, window_positions
from sinklens.metrics.sinks import head_output_norms, sink_alpha
from sinklens.metrics.values import value_norms

__all__ = [
    "ActivationReducer",
    "AttentionDiffReducer",
    "LogitReducer",
    "Reducer",
    "SinkReducer",
    "ValueNormReducer",
]


class Reducer(ABC):
    """Folds one phase's activations into running statistics; subclasses say what they need."""

    name = "reducer"
    phases: tuple[str, ...] = ("single",)
    kinds: tuple[str, ...] = ()
    needs_logits = False

    def __init__(self, layers: Sequence[int]) -> None:
        self.layers = tuple(int(x) for x in layers)
        self.batch: Batch | None = None

    def begin(self, batch: Batch) -> None:
        self.batch = batch

    def on_activation(self, kind: str, layer: int, t: Tensor) -> None:
        del kind, layer, t

    def on_logits(self, logits: Tensor) -> None:
        del logits

    def end(self) -> None:  # noqa: B027 - most reducers fold everything in on_activation
        """Called after each batch of each phase."""

    @abstractmethod
    def state(self) -> dict[str, Tensor]:
        """The running statistics as named tensors (what the cache stores and resumes)."""

    def load_state(self, state: dict[str, Tensor]) -> None:
        for key, value in state.items():
            setattr(self, key, value.clone())


class SinkReducer(Reducer):
    """α_k sums, Sink_k counts (ε) over the first `window` positions, and head output norms."""

    name = "sinks"
    kinds = ("pattern", "head_out")

    def __init__(self, layers: Sequence[int], n_heads: int, window: int, epsilon: float) -> None:
        super().__init__(layers)
        n_l = len(self.layers)
        self.window = window
        self.epsilon = epsilon
        self.alpha_sum = torch.zeros(n_l, n_heads, window, dtype=torch.float64)
        self.above_sum = torch.zeros(n_l, n_heads, window, dtype=torch.float64)
        self.key_count = torch.zeros(window, dtype=torch.float64)
        self.norm_sum = torch.zeros(n_l, n_heads, dtype=torch.float64)
        self.n_samples = torch.zeros((), dtype=torch.float64)
        self._index = {layer: i for i, layer in enumerate(self.layers)}

    def begin(self, batch: Batch) -> None:
        super().begin(batch)
        w = self.window
        pos = torch.arange(w)
        self.key_count += (pos[None, :] < batch.lengths[:, None].cpu()).sum(dim=0)
        self.n_samples += batch.lengths.shape[0]

    def on_activation(self, kind: str, layer: int, t: Tensor) -> None:
        assert self.batch is not None
        i = self._index[layer]
        valid = self.batch.valid.to(t.device)
        if kind == "pattern":
            w = min(self.window, t.shape[-1])
            # Causal attention: the first w rows do not depend on later tokens, so this is
            # alpha on the sample truncated to w tokens, as Gu et al. measure it.
            pat = t[:, :, :w, :w].float()
            alpha = sink_alpha(pat[:, None], valid[:, :w])[:, 0]  # b h k
            key_ok = valid[:, None, :w].to(alpha.dtype)
            self.alpha_sum[i, :, :w] += (alpha * key_ok).sum(dim=0).double().cpu()
            self.above_sum[i, :, :w] += (
                ((alpha > self.epsilon).to(alpha.dtype) * key_ok).sum(dim=0).double().cpu()
            )
        elif kind == "head_out":
            self.norm_sum[i] += head_output_norms(t, valid).sum(dim=0).double().cpu()

    def state(self) -> dict[str, Tensor]:
        return {
            "alpha_sum": self.alpha_sum,
            "above_sum": self.above_sum,
            "key_count": self.key_count,
            "norm_sum": self.norm_sum,
            "n_samples": self.n_samples,
        }


class AttentionDiffReducer(Reducer):
    """Running sum of A(X′) − A(X) over the first `window` positions, and per-cell counts."""

    name = "attention_diff"
    phases = ("clean", "triggered")
    kinds = ("pattern",)

    def __init__(
        self, layers: Sequence[int], n_heads: int, window: int, alignment: Alignment
    ) -> None:
        super().__init__(layers)
        self.window = window
        self.alignment = alignment
        n_l = len(self.layers)
        self.diff_sum = torch.zeros(n_l, n_heads, window, window, dtype=torch.float64)
        self.cell_count = torch.zeros(window, window, dtype=torch.float64)
        self.clean_sum = torch.zeros(n_l, n_heads, window, window, dtype=torch.float64)
        self.trig_sum = torch.zeros(n_l, n_heads, window, window, dtype=torch.float64)
        self._clean: dict[int, Tensor] = {}
        self._index = {layer: i for i, layer in enumerate(self.layers)}

    def on_activation(self, kind: str, layer: int, t: Tensor) -> None:
        batch = self.batch
        assert batch is not None
        w = self.window
        if batch.phase == "clean":
            # s(p) <= p for every inserted trigger, so the clean map's first w×w block suffices.
            self._clean[layer] = t[:, :, :w, :w].float().clone()
            return
        assert batch.source_index is not None and batch.clean_lengths is not None
        clean = self._clean.pop(layer)
        trig = t.float()
        diff, valid = attention_difference_terms(
            clean[:, None],
            trig[:, None, :, :w, :w],
            batch.source_index.to(t.device),
            batch.clean_lengths.to(t.device),
            batch.lengths.to(t.device),
            w,
            self.alignment,
        )
        i = self._index[layer]
        vmask = valid[:, None].to(trig.dtype)  # b 1 w w
        trig_w = pad_square(trig[:, :, :w, :w], w) * vmask
        self.diff_sum[i] += diff[:, 0].sum(dim=0).double().cpu()
        self.trig_sum[i] += trig_w.sum(dim=0).double().cpu()
        # The clean map in the same frame: A(X) = A(X′) − ΔA cell by cell.
        self.clean_sum[i] += (trig_w - diff[:, 0]).sum(dim=0).double().cpu()
        if layer == self.layers[0]:
            self.cell_count += valid.to(torch.float64).sum(dim=0).cpu()

    def state(self) -> dict[str, Tensor]:
        return {
            "diff_sum": self.diff_sum,
            "cell_count": self.cell_count,
            "clean_sum": self.clean_sum,
            "trig_sum": self.trig_sum,
        }


class LogitReducer(Reducer):
    """Per-position sums of true-next-token logit, log-prob and max logit, for X′ and X."""

    name = "logits"
    phases = ("clean", "triggered")
    needs_logits = True

    def __init__(self, window: int, alignment: Alignment) -> None:
        super().__init__(())
        self.window = window
        self.alignment = alignment
        self.stat_sum = torch.zeros(2, window, 3, dtype=torch.float64)  # [triggered, clean]
        self.stat_count = torch.zeros(2, window, dtype=torch.float64)
        self._clean: tuple[Tensor, Tensor] | None = None

    def on_logits(self, logits: Tensor) -> None:
        batch = self.batch
        assert batch is not None
        valid = batch.valid.to(logits.device)
        stats, ok = next_token_stats(logits, batch.input_ids.to(logits.device), valid)
        if batch.phase == "clean":
            self._clean = (stats, ok)
            return
        assert self._clean is not None and batch.source_index is not None
        trig, trig_ok = window_positions(stats, ok, self.window)
        clean, clean_ok = align_positions(
            self._clean[0],
            self._clean[1],
            batch.source_index.to(logits.device),
            batch.lengths.to(logits.device),
            self.window,
            self.alignment,
        )
        self._clean = None
        for row, (vals, okm) in enumerate(((trig, trig_ok), (clean, clean_ok))):
            self.stat_sum[row] += (vals * okm[..., None]).sum(dim=0).double().cpu()
            self.stat_count[row] += okm.to(torch.float64).sum(dim=0).cpu()

    def state(self) -> dict[str, Tensor]:
        return {"stat_sum": self.stat_sum, "stat_count": self.stat_count}


class ValueNormReducer(Reducer):
    """‖v_i‖ per sample, layer, kv head and requested position: the only per-sample state."""

    name = "value_norms"
    kinds = ("value",)

    def __init__(self, layers: Sequence[int], positions: Sequence[int]) -> None:
        super().__init__(layers)
        self.positions = tuple(int(p) for p in positions)
        self.norms = torch.zeros(0, len(self.layers), 0, len(self.positions))
        self._parts: list[Tensor] = []
        self._current: dict[int, Tensor] = {}

    def begin(self, batch: Batch) -> None:
        super().begin(batch)
        need = max(self.positions) + 1
        short = int((batch.lengths < need).sum())
        if short:
            raise SinklensError(
                f"{short} sample(s) have fewer than {need} tokens, so sink position "
                f"{need - 1} does not exist; drop short samples or use earlier sink positions"
            )

    def on_activation(self, kind: str, layer: int, t: Tensor) -> None:
        self._current[layer] = value_norms(t, self.positions).cpu()  # b kv P

    def end(self) -> None:
        if self._current:
            block = torch.stack([self._current[layer] for layer in self.layers], dim=1)
            self._parts.append(block)
            self._current = {}

    def state(self) -> dict[str, Tensor]:
        if self._parts:
            existing = [self.norms] if self.norms.numel() else []
            self.norms = torch.cat([*existing, *self._parts], dim=0)
            self._parts = []
        return {"norms": self.norms}


class ActivationReducer(Reducer):
    """Per-sample activations of one kind at the positions asked for (e.g. sink tokens).

    `values` is [sample, layer, position, heads, d_head] for `value` (kv heads) and
    `head_out` (query heads); positions past a sample's end are zero and marked False in
    `present` [sample, position].
    """

    name = "activations"

    def __init__(self, layers: Sequence[int], kind: str, positions: Sequence[int]) -> None:
        super().__init__(layers)
        if kind not in ("value", "head_out"):
            raise SinklensError(f"cannot record {kind!r} per sample; use value or head_out")
        self.kinds = (kind,)
        self.positions = tuple(int(p) for p in positions)
        self.values = torch.zeros(0)
        self.present = torch.zeros(0, dtype=torch.bool)
        self._parts: list[tuple[Tensor, Tensor]] = []
        self._current: dict[int, Tensor] = {}

    def on_activation(self, kind: str, layer: int, t: Tensor) -> None:
        assert self.batch is not None
        n = t.shape[1]
        idx = torch.tensor([min(p, n - 1) for p in self.positions], device=t.device)
        picked = t.index_select(1, idx).float().cpu()  # b P heads d
        here = torch.tensor(self.positions)[None, :] < self.batch.lengths.cpu()[:, None]
        self._current[layer] = picked * here[:, :, None, None]

    def end(self) -> None:
        if self._current:
            assert self.batch is not None
            block = torch.stack([self._current[layer] for layer in self.layers], dim=1)
            here = torch.tensor(self.positions)[None, :] < self.batch.lengths.cpu()[:, None]
            self._parts.append((block, here))
            self._current = {}

    def state(self) -> dict[str, Tensor]:
        if self._parts:
            values = [p[0] for p in self._parts]
            present = [p[1] for p in self._parts]
            if self.values.numel():
                values.insert(0, self.values)
                present.insert(0, self.present)
            self.values = torch.cat(values, dim=0)
            self.present = torch.cat(present, dim=0)
            self._parts = []
        return {"values": self.values, "present": self.present}
