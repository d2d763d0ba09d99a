"""Bootstrap confidence intervals over items, as MUSE reports them for its means.

Every UE, BE, UT and trigger-gain number is a mean over items (questions, passages,
documents), so its uncertainty is the items': the percentile bootstrap resamples the items
with replacement and reads the interval off the resampled means. The resampling is seeded,
so the same scores always give the same interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["BOOTSTRAP_LEVEL", "BOOTSTRAP_RESAMPLES", "bootstrap_ci", "paired_bootstrap_ci"]

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_LEVEL = 0.95


def _percentiles(means: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap_ci(
    values: Sequence[float],
    *,
    level: float = BOOTSTRAP_LEVEL,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of `values`; NaNs are left out (as the
    means leave them out). No values: (nan, nan); one value: that value twice."""
    finite = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if finite.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    index = rng.integers(0, finite.size, size=(resamples, finite.size))
    return _percentiles(finite[index].mean(axis=1), level)


def paired_bootstrap_ci(
    after: Sequence[float],
    before: Sequence[float],
    *,
    level: float = BOOTSTRAP_LEVEL,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Interval of mean(after) − mean(before) over the same items, resampled in pairs (an
    attack's effect on one model's scores; a trigger's on one model's answers)."""
    if len(after) != len(before):
        raise ValueError(f"paired scores differ in length: {len(after)} vs {len(before)}")
    diffs = [a - b for a, b in zip(after, before, strict=True)]
    return bootstrap_ci(diffs, level=level, resamples=resamples, seed=seed)
