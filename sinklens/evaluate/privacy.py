"""PrivLeak (MUSE): does membership of the forget set still leak after unlearning?

A Min-K% Prob membership-inference attack (Shi et al. 2024) scores each document by the
mean log-probability of its k % least likely tokens; training documents score higher. The
AUC of telling holdout documents (never trained on) from forget documents by that score is
MUSE's `forget_holdout_Min-40%`: near 0 for a model that still knows the forget set (its
forget documents score above every holdout one), near 0.5 for a model that never saw it.
PrivLeak compares it with a model retrained without the forget set:

    PrivLeak = (AUC(model) − AUC(retrained)) / AUC(retrained) × 100 %

so 0 is a perfect unlearner, a large negative value a model that still leaks membership
(MUSE reports about −100 % for its un-unlearned targets), a positive value one that
over-unlearned. Computed as in `muse_bench/metrics/privleak.py`: each document tokenised
with BOS, k % of its predicted tokens (at least one) averaged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sinklens.batching import pad_id
from sinklens.data.formats import Benchmark
from sinklens.errors import SinklensError
from sinklens.evaluate.generation import token_logprobs
from sinklens.evaluate.intervals import BOOTSTRAP_LEVEL, BOOTSTRAP_RESAMPLES

__all__ = ["MIN_K", "PrivLeak", "min_k_scores", "privleak", "separation_auc"]

MIN_K = 0.4  # MUSE's default key, forget_holdout_Min-40%


def min_k_scores(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    k: float = MIN_K,
    max_length: int = 512,
    batch_size: int = 8,
) -> list[float]:
    """Min-K% Prob of each text: the mean of its lowest `k` share of token log-probs
    (nats; higher means more likely a training document)."""
    if not 0 < k <= 1:
        raise SinklensError(f"Min-K% needs k in (0, 1], got {k}; MUSE uses 0.4")
    ids = [list(tokenizer(t)["input_ids"])[:max_length] for t in texts]
    if any(len(x) < 2 for x in ids):
        raise SinklensError("a membership-inference document has under 2 tokens; remove it")
    scores = []
    for logprobs in token_logprobs(model, ids, pad_id(tokenizer), batch_size):
        lowest = np.sort(logprobs.double().numpy())[: max(1, int(len(logprobs) * k))]
        scores.append(float(lowest.mean()))
    return scores


def separation_auc(
    members: Sequence[float] | np.ndarray, holdout: Sequence[float] | np.ndarray
) -> float:
    """P(a holdout document scores above a member), ties counting half: MUSE's AUC with
    members labelled 0 and holdout 1 (the Mann-Whitney U statistic over all pairs)."""
    m = np.asarray(members, dtype=np.float64)[:, None]
    h = np.asarray(holdout, dtype=np.float64)[None, :]
    if m.size == 0 or h.size == 0:
        return math.nan
    return float(((h > m) + 0.5 * (h == m)).mean())


@dataclass(frozen=True)
class PrivLeak:
    """One model's membership leak on a benchmark's forget vs holdout documents."""

    k: float
    auc: float
    auc_ci95: tuple[float, float]
    member_scores: tuple[float, ...]
    holdout_scores: tuple[float, ...]
    # With a retrained reference; None without one (the AUC alone is still reported).
    auc_retrain: float | None = None
    privleak: float | None = None  # percent
    privleak_ci95: tuple[float, float] | None = None
    retrain_member_scores: tuple[float, ...] = ()
    retrain_holdout_scores: tuple[float, ...] = ()


def _relative(auc: float, reference: float) -> float:
    return (auc - reference) / reference * 100 if reference > 0 else math.nan


def privleak(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    bench: Benchmark,
    *,
    retrained: tuple[PreTrainedModel, PreTrainedTokenizerBase] | None = None,
    k: float = MIN_K,
    max_length: int = 512,
    batch_size: int = 8,
    seed: int = 0,
) -> PrivLeak:
    """PrivLeak of `model` against `retrained` (model, tokenizer) on `bench`'s forget
    (members) and holdout documents, with bootstrap intervals that resample both sets."""
    members, holdout = bench.privleak_members, bench.holdout_texts
    if not members or not holdout:
        missing = "forget documents (raw/forget.txt)" if not members else "holdout documents"
        raise SinklensError(
            f"PrivLeak needs {missing} in benchmark {bench.name!r}; add raw/holdout.txt "
            "(or MUSE's privleak/holdout.json) with forget-like texts no model was trained on"
        )

    def scores(net: PreTrainedModel, tok: PreTrainedTokenizerBase) -> tuple[np.ndarray, ...]:
        return tuple(
            np.asarray(
                min_k_scores(net, tok, texts, k=k, max_length=max_length, batch_size=batch_size)
            )
            for texts in (members, holdout)
        )

    mem, hold = scores(model, tokenizer)
    ref = scores(*retrained) if retrained is not None else None
    rng = np.random.default_rng(seed)
    aucs, leaks = [], []
    for _ in range(BOOTSTRAP_RESAMPLES):
        i = rng.integers(0, len(mem), len(mem))
        j = rng.integers(0, len(hold), len(hold))
        aucs.append(separation_auc(mem[i], hold[j]))
        if ref is not None:
            leaks.append(_relative(aucs[-1], separation_auc(ref[0][i], ref[1][j])))
    tail = 100 * (1 - BOOTSTRAP_LEVEL) / 2

    def interval(values: list[float]) -> tuple[float, float]:
        finite = [v for v in values if math.isfinite(v)]
        if not finite:
            return math.nan, math.nan
        lo, hi = np.percentile(finite, [tail, 100 - tail])
        return float(lo), float(hi)

    auc = separation_auc(mem, hold)
    result = PrivLeak(
        k=k,
        auc=auc,
        auc_ci95=interval(aucs),
        member_scores=tuple(mem.tolist()),
        holdout_scores=tuple(hold.tolist()),
    )
    if ref is None:
        return result
    auc_ref = separation_auc(*ref)
    return PrivLeak(
        **{
            **result.__dict__,
            "auc_retrain": auc_ref,
            "privleak": _relative(auc, auc_ref),
            "privleak_ci95": interval(leaks),
            "retrain_member_scores": tuple(ref[0].tolist()),
            "retrain_holdout_scores": tuple(ref[1].tolist()),
        }
    )
