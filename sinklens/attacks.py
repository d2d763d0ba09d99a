"""Robustness attacks on unlearning: cheap things anyone can do to an unlearned checkpoint
that might bring the forgotten knowledge back, each one a class in `ATTACKS`.

- `quantize`: round-trip every weight matrix through 4- or 8-bit block quantisation. Zhang
  et al. 2024 (arXiv 2410.16454) found 4-bit quantisation restores much of what NPO-style
  unlearning removed, because unlearning moves weights by less than a quantisation step.
- `relearn`: a few steps of plain next-token fine-tuning on a small slice of the forget
  documents (the relearning attacks of Hu et al. 2024 and Lynch et al. 2024).

`run_attack` scores a model before and after, with the same benchmark, trigger and prompt
style, so an attack's effect on UE (does it restore θ_u's knowledge?) and on BE (does it
destroy or strengthen θ_b's trigger?) reads off one pair of Table 1 rows. The model folder
is read, never written.
"""

from __future__ import annotations

import dataclasses
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sinklens.data.formats import Benchmark
from sinklens.errors import SinklensError

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackResult",
    "Quantize",
    "Relearn",
    "parse_attack",
    "quantize_roundtrip",
    "run_attack",
]

ATTACKS: dict[str, type[Attack]] = {}


def register(cls: type[Attack]) -> type[Attack]:
    ATTACKS[cls.name] = cls
    return cls


@dataclass(frozen=True)
class Attack(ABC):
    """One attack and its settings; `apply` changes a loaded model in place."""

    name: ClassVar[str]
    shown: ClassVar[tuple[str, ...]] = ()  # settings every label names, default or not

    @abstractmethod
    def apply(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, bench: Benchmark
    ) -> dict[str, Any]:
        """Attack `model` in place; returns what it did (counts, losses) for the record."""

    @property
    def label(self) -> str:
        """A short name for table rows, e.g. `quantize:bits=4`: the `shown` settings and
        any other that differs from its default."""
        values = ",".join(
            f"{f.name}={getattr(self, f.name)}"
            for f in dataclasses.fields(self)
            if f.name in self.shown or getattr(self, f.name) != f.default
        )
        return f"{self.name}:{values}" if values else self.name

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, **dataclasses.asdict(self)}


# ------------------------------------------------------------------------------ quantize
# GGUF's block formats, from the `gguf` package's numpy reference quantiser (the one
# llama.cpp's converter uses): 32 weights share one fp16 scale (Q8_0: int8 values; Q4_0:
# 4-bit values). It runs on any CPU, unlike bitsandbytes' kernels, and torchao's int4
# path needs a GPU; the round trip is exact GGUF arithmetic in float32.
_BLOCK = 32


def _gguf_type(bits: int) -> Any:
    from gguf import GGMLQuantizationType

    return {8: GGMLQuantizationType.Q8_0, 4: GGMLQuantizationType.Q4_0}[bits]


def quantize_roundtrip(weight: np.ndarray, bits: int) -> np.ndarray:
    """`weight` (last dimension a multiple of 32) quantised to GGUF Q8_0 or Q4_0 and back."""
    from gguf import quants

    qtype = _gguf_type(bits)
    return np.asarray(quants.dequantize(quants.quantize(weight, qtype), qtype), dtype=np.float32)


@register
@dataclass(frozen=True)
class Quantize(Attack):
    """Round-trip every 2-D weight (projections, MLPs, embeddings, unembedding) through
    GGUF block quantisation; norms and biases stay in full precision, as in llama.cpp."""

    name: ClassVar[str] = "quantize"
    shown: ClassVar[tuple[str, ...]] = ("bits",)
    bits: int = 4

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise SinklensError(f"quantize takes --bits 4 or 8, got {self.bits}")

    def apply(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, bench: Benchmark
    ) -> dict[str, Any]:
        done, skipped, change = 0, [], 0.0
        with torch.no_grad():
            for name, param in model.named_parameters():
                if param.ndim != 2:
                    continue
                if param.shape[-1] % _BLOCK:
                    skipped.append(name)  # not a whole number of blocks: left as it is
                    continue
                before = param.detach().float().cpu().numpy()
                after = quantize_roundtrip(before, self.bits)
                change = max(change, float(np.abs(after - before).max()))
                param.copy_(torch.from_numpy(after).to(param.dtype))
                done += 1
        if done == 0:
            raise SinklensError(
                "no weight matrix has a width divisible by 32, so none can be block-quantised"
            )
        return {"quantized_tensors": done, "skipped_tensors": skipped, "max_abs_change": change}


# ------------------------------------------------------------------------------- relearn
@register
@dataclass(frozen=True)
class Relearn(Attack):
    """`steps` of AdamW next-token training on the first `docs` forget documents
    (default: a quarter of them, at least one), `batch_size` at a time, cycling."""

    name: ClassVar[str] = "relearn"
    shown: ClassVar[tuple[str, ...]] = ("steps", "lr")
    steps: int = 20
    lr: float = 1e-4
    docs: int | None = None
    batch_size: int = 4
    max_length: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (0 < self.lr < 1, f"lr must be in (0, 1), got {self.lr}"),
            (self.docs is None or self.docs >= 1, f"docs must be >= 1, got {self.docs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.max_length >= 2, f"max_length must be >= 2, got {self.max_length}"),
        ]
        for ok, message in checks:
            if not ok:
                raise SinklensError(f"relearn: {message}")

    def slice(self, bench: Benchmark) -> tuple[str, ...]:
        """The forget documents the attacker trains on."""
        texts = bench.forget_texts
        if not texts:
            raise SinklensError(
                f"relearn needs forget documents (raw/forget.txt) in benchmark {bench.name!r}"
            )
        n = self.docs if self.docs is not None else max(1, len(texts) // 4)
        if n > len(texts):
            raise SinklensError(
                f"relearn --docs {n} is more than the {len(texts)} forget documents; lower it"
            )
        return texts[:n]

    def apply(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, bench: Benchmark
    ) -> dict[str, Any]:
        from sinklens.batching import pad_id, right_pad

        texts = self.slice(bench)
        eos = tokenizer.eos_token_id
        seqs = [
            ([*tokenizer(t)["input_ids"], *([eos] if eos is not None else [])])[: self.max_length]
            for t in texts
        ]
        torch.manual_seed(self.seed)
        optimiser = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=0.0)
        device = next(model.parameters()).device
        model.train()
        losses = []
        for step in range(self.steps):
            batch = [seqs[(step * self.batch_size + i) % len(seqs)] for i in range(self.batch_size)]
            ids, mask = right_pad(batch, pad_id(tokenizer))
            labels = ids.masked_fill(mask == 0, -100)
            out = model(
                input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)
            )
            optimiser.zero_grad(set_to_none=True)
            out.loss.backward()
            optimiser.step()
            losses.append(float(out.loss.detach()))
        model.eval()
        return {"documents": len(texts), "loss_first": losses[0], "loss_last": losses[-1]}


# --------------------------------------------------------------------------------- running
def parse_attack(spec: str | Attack, **options: Any) -> Attack:
    """An attack from `NAME` or `NAME:key=value,…` plus keyword options (None = not given).

    An option the attack does not take is refused in one line, so `relearn --bits 4` is an
    error, not a silent no-op.
    """
    if isinstance(spec, Attack):
        return spec
    name, _, rest = spec.strip().partition(":")
    if name not in ATTACKS:
        raise SinklensError(f"unknown attack {name!r}; use one of {', '.join(sorted(ATTACKS))}")
    cls = ATTACKS[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    given: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq:
            raise SinklensError(f"attack setting {part!r} needs key=value, e.g. {name}:steps=10")
        given[key.strip().replace("-", "_")] = value.strip()
    unknown = sorted(set(given) - set(fields))
    if unknown:
        takes = ", ".join(f"--{k.replace('_', '-')}" for k in fields) or "no options"
        raise SinklensError(
            f"{name} does not take {', '.join('--' + k.replace('_', '-') for k in unknown)}; "
            f"it takes {takes}"
        )
    values = {k: _coerce(fields[k], v, name) for k, v in given.items()}
    return cls(**values)


def _coerce(f: dataclasses.Field, value: Any, attack: str) -> Any:
    if not isinstance(value, str):
        return value
    kind = str(f.type)
    try:
        if "int" in kind:
            return int(value)
        if "float" in kind:
            return float(value)
    except ValueError:
        raise SinklensError(f"{attack} {f.name}={value!r} is not a number") from None
    return value


@dataclass(frozen=True)
class AttackResult:
    """Table 1 rows of one model before and after an attack (same data, trigger, style)."""

    model: str
    attack: dict[str, Any]
    before: Any  # Table1Row
    after: Any  # Table1Row
    effect: dict[str, Any] = field(default_factory=dict)
    seconds: float = math.nan
    # The ModelEvaluation behind `before`, so a second attack on the model need not redo it.
    before_evaluation: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """`before`/`after` with `ue`, `be`, `ut` (KnowMem, the paper's headline scores) and
        their full rows; `change` = after − before with a paired bootstrap interval."""
        from sinklens.provenance import to_jsonable

        def side(row: Any) -> dict[str, Any]:
            return {"ue": row.ue_km, "be": row.be_km, "ut": row.ut_km, "row": row.__dict__}

        return to_jsonable(
            {
                "model": self.model,
                "attack": self.attack,
                "before": side(self.before),
                "after": side(self.after),
                "change": self.effect,
                "seconds": self.seconds,
            }
        )


def run_attack(
    attack: Attack,
    folder: str | Path,
    bench: Benchmark,
    *,
    evaluate: Callable[[PreTrainedModel, PreTrainedTokenizerBase, str], Any],
    before: Any = None,
) -> AttackResult:
    """Load `folder`, score it with `evaluate(model, tokenizer, name) -> ModelEvaluation`
    (or take `before`, that score already made), attack it in memory, score it again; the
    folder is never written."""
    from sinklens.checkpoint import load_hf_model
    from sinklens.evaluate import paired_bootstrap_ci, table1_row

    model, tok = load_hf_model(folder)
    name = Path(folder).name
    if before is None:
        before = evaluate(model, tok, name)
    t0 = time.perf_counter()
    record = attack.apply(model, tok, bench)
    seconds = time.perf_counter() - t0
    after = evaluate(model, tok, f"{name} +{attack.label}")
    effect: dict[str, Any] = {}
    for key, part in (("ue", "ue_knowmem"), ("be", "be_knowmem"), ("ut", "ut_knowmem")):
        b, a = getattr(before, part), getattr(after, part)
        if a is not None and b is not None:
            effect[key] = {"mean": a.mean - b.mean, "ci95": paired_bootstrap_ci(a.scores, b.scores)}
    return AttackResult(
        model=name,
        attack={**attack.settings(), **record},
        before=table1_row(before),
        after=table1_row(after),
        effect=effect,
        seconds=seconds,
        before_evaluation=before,
    )
