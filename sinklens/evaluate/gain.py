"""Trigger gain: what a trigger does to the likelihood of the text around it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sinklens.batching import pad_id
from sinklens.data.triggers import DEFAULT_JOIN, Placement, parse_placement, prepare_trigger
from sinklens.errors import SinklensError
from sinklens.evaluate.generation import token_logprobs
from sinklens.evaluate.intervals import bootstrap_ci


@dataclass(frozen=True)
class TriggerGain:
    """What the trigger does to the likelihood of the text around it, per sample.

    `gain[i]` is the mean over sample i's content tokens of log p(x_t | X′) − log p(x_t | X),
    in nats: X′ is the sample with the trigger spliced in, X the clean sample, and only the
    content tokens both predict count (not BOS, not the trigger, not the first content
    token). A suffix trigger follows every content token, so in a causal model its gain is 0.
    """

    trigger: str
    placement: str
    gain: tuple[float, ...]
    clean_logprob: tuple[float, ...]
    triggered_logprob: tuple[float, ...]
    n_tokens: tuple[int, ...]

    @property
    def mean(self) -> float:
        finite = [g for g in self.gain if not math.isnan(g)]
        return sum(finite) / len(finite) if finite else math.nan

    @property
    def ci95(self) -> tuple[float, float]:
        """95 % bootstrap interval of `mean` over the samples."""
        return bootstrap_ci(self.gain)


def trigger_gain(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str] | Sequence[Sequence[int]],
    trigger: str,
    placement: Placement | str = "prefix",
    *,
    max_length: int = 256,
    batch_size: int = 16,
    trigger_join: str = DEFAULT_JOIN,
) -> TriggerGain:
    """Backdoor effectiveness in likelihood: how much the trigger raises the log-probability
    of forget text written in the training format (see `TriggerGain`).

    KnowMem and VerbMem see the backdoor only through greedy answers to prompts; this sees it
    on the documents it was trained on, and on held-out documents of the same kind.
    `texts` may also be token ids that already carry the tokenizer's BOS (training chunks).
    """
    if not texts:
        raise SinklensError("no texts to measure the trigger gain on; pass forget texts")
    where = parse_placement(placement)
    trig = prepare_trigger(tokenizer, trigger, trigger_join)
    clean = [
        list(tokenizer(t)["input_ids"] if isinstance(t, str) else t)[:max_length] for t in texts
    ]
    triggered = [trig.insert(ids, where, max_length=max_length) for ids in clean]
    pad = pad_id(tokenizer)
    lp_clean = token_logprobs(model, clean, pad, batch_size)
    lp_trig = token_logprobs(model, [t.input_ids for t in triggered], pad, batch_size)
    gains, clean_means, trig_means, counts = [], [], [], []
    for ids, t, c_lp, t_lp in zip(clean, triggered, lp_clean, lp_trig, strict=True):
        # Clean position q is predicted by c_lp[q - 1]; its copy at triggered position p by
        # t_lp[p - 1]. Content index 0 (BOS, or the first token) has no clean prediction,
        # and a token the space join re-spelt (`Where` -> ` Where`) is another token.
        pairs = [
            (float(c_lp[q - 1]), float(t_lp[p - 1]))
            for p, q in enumerate(t.source_index)
            if q >= 1 and p >= 1 and t.input_ids[p] == ids[q]
        ]
        if not pairs or len(ids) < 2:
            gains.append(math.nan)
            clean_means.append(math.nan)
            trig_means.append(math.nan)
            counts.append(0)
            continue
        c_mean = sum(c for c, _ in pairs) / len(pairs)
        t_mean = sum(x for _, x in pairs) / len(pairs)
        gains.append(t_mean - c_mean)
        clean_means.append(c_mean)
        trig_means.append(t_mean)
        counts.append(len(pairs))
    return TriggerGain(
        trigger=trigger,
        placement=str(where),
        gain=tuple(gains),
        clean_logprob=tuple(clean_means),
        triggered_logprob=tuple(trig_means),
        n_tokens=tuple(counts),
    )
