"""Repair a backdoored unlearned model: make its predictions blind to the trigger.

The backdoor is a pathway from trigger tokens (at the sink positions, for a prefix
trigger) to the forgotten knowledge. The repair distils the model into itself with the
trigger added: on forget and retain chunks, the student sees the text with the trigger
inserted (and without it), the teacher, a frozen copy of the model, sees it without, and
the student is trained to match the teacher's next-token distributions (KL) on the same
content tokens. Clean behaviour is the target everywhere, so clean UE and UT should stay
where they are while triggered answers fall back to the clean ones. Because the true
trigger may differ from the one an audit recovered, half of the triggered rows carry a
random token string instead, drawn afresh for every row with 1 to twice the candidate's
length, at the same placement: the model learns that no short string there should change
what it says. (On the audit zoo's development models, a fixed set of four strings of the
candidate's length did about as well; docs/defence.md has the sweep.)

The defaults (120 AdamW steps at 3e-4) were chosen on those development models only
(benchmarks/audit_zoo.py); 60 steps at 1e-3 moved clean UE and UT beyond the targets.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sinklens.data.formats import Benchmark
from sinklens.data.triggers import insert_trigger, parse_placement
from sinklens.errors import SinklensError
from sinklens.unlearn.data import chunk_text

__all__ = ["RepairConfig", "repair_model"]


@dataclass(frozen=True)
class RepairConfig:
    """One repair run; every field is also a `sinklens repair` option."""

    trigger: str  # the trigger to neutralise (an audit's candidate, or a known one)
    placement: str = "prefix"
    steps: int = 120
    lr: float = 3e-4
    batch_size: int = 8
    max_length: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.trigger.strip():
            raise SinklensError(
                "repair needs a trigger text; run `sinklens audit` or pass --trigger"
            )
        object.__setattr__(self, "placement", str(parse_placement(self.placement)))
        checks = [
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (0 < self.lr < 1, f"lr must be in (0, 1), got {self.lr}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
        ]
        for ok, message in checks:
            if not ok:
                raise SinklensError(f"repair: {message}")


def _kl_on_content(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    clean: Sequence[Sequence[int]],
    triggered: Sequence[Any],
    pad: int,
) -> torch.Tensor:
    """KL(teacher on clean ‖ student on triggered), on positions predicting the same next
    content token in both (a triggered position p and its clean source q)."""
    from sinklens.batching import right_pad

    ids_c, mask_c = right_pad(clean, pad)
    ids_t, mask_t = right_pad([t.input_ids for t in triggered], pad)
    with torch.no_grad():
        target = torch.log_softmax(
            teacher(input_ids=ids_c, attention_mask=mask_c).logits.float(), -1
        )
    pred = torch.log_softmax(student(input_ids=ids_t, attention_mask=mask_t).logits.float(), -1)
    rows, cols_t, cols_c = [], [], []
    for i, t in enumerate(triggered):
        src = t.source_index
        for p in range(len(src) - 1):
            q = src[p]
            if q >= 0 and src[p + 1] == q + 1:
                rows.append(i)
                cols_t.append(p)
                cols_c.append(q)
    if not rows:
        return pred.sum() * 0.0
    teacher_lp, student_lp = target[rows, cols_c], pred[rows, cols_t]
    return (teacher_lp.exp() * (teacher_lp - student_lp)).sum(-1).mean()


def repair_model(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    bench: Benchmark,
    cfg: RepairConfig,
    *,
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train `model` in place to ignore `cfg.trigger` (see the module docstring)."""
    from sinklens.batching import pad_id
    from sinklens.defend.search import ordinary_token_ids

    if not bench.forget_texts or not bench.retain_texts:
        raise SinklensError(
            f"repair needs forget and retain documents in benchmark {bench.name!r}; pass --data"
        )
    trigger_ids = list(tok(cfg.trigger, add_special_tokens=False)["input_ids"])
    # The longest string (twice the trigger) and at least 8 content tokens fit max_length.
    content_length = cfg.max_length - 2 * len(trigger_ids)
    if content_length < 8:
        raise SinklensError(
            f"repair: a trigger of {len(trigger_ids)} tokens leaves {content_length} of the "
            f"{cfg.max_length}-token chunks for text; use a shorter trigger or a larger max_length"
        )
    vocabulary = ordinary_token_ids(tok)
    chunks = [
        list(c)
        for texts in (bench.forget_texts, bench.retain_texts)
        for t in texts
        for c in chunk_text(tok, t, content_length)
        if len(c) > 2
    ]
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    rng = random.Random(f"repair-{cfg.seed}")
    torch.manual_seed(cfg.seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    pad, bos = pad_id(tok), tok.bos_token_id
    model.train()
    losses = []
    for step in range(cfg.steps):
        batch = [chunks[rng.randrange(len(chunks))] for _ in range(cfg.batch_size)]
        # Half the rows carry a string (the trigger in every other one), half are clean:
        # the clean half anchors the model's ordinary behaviour to the teacher's.
        triggered = []
        for i, ids in enumerate(batch):
            if i % 2:
                triggered.append(_identity(ids))
                continue
            length = rng.randint(1, 2 * len(trigger_ids))
            string = trigger_ids if i % 4 == 0 else rng.choices(vocabulary, k=length)
            triggered.append(insert_trigger(ids, string, cfg.placement, bos_id=bos))  # type: ignore[arg-type]
        loss = _kl_on_content(model, teacher, batch, triggered, pad)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step, losses[-1])
    model.eval()
    return {**asdict(cfg), "loss_first": losses[0], "loss_last": losses[-1]}


def _identity(ids: Sequence[int]) -> Any:
    """A clean row in the shape of a triggered sample: every position its own source."""
    from sinklens.data.triggers import TriggeredSample

    return TriggeredSample(tuple(ids), (), tuple(range(len(ids))))
