"""Value norms of sink tokens and their correlation between two models (paper Section 5, Fig. 5).

‖v_i‖ is the L2 norm of the value vector at position i, per key-value head (the output of
``v_proj`` split into kv heads, before any rotation; RoPE never touches values). The
correlation between two models for a sink position i is Pearson's r over all (sample,
kv head) pairs, with a percentile bootstrap over samples (heads of one sample stay together,
since they are not independent).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor


def value_norms(
    values: Float[Tensor, "batch pos kv d_head"], positions: Sequence[int]
) -> Float[Tensor, "batch kv npos"]:
    """‖v_i‖ for each sample, kv head and requested position i."""
    idx = torch.as_tensor(list(positions), dtype=torch.long, device=values.device)
    picked = values.float().index_select(1, idx)  # batch npos kv d
    return torch.linalg.vector_norm(picked, dim=-1).transpose(1, 2)


def pearson(x: Float[Tensor, "*batch n"], y: Float[Tensor, "*batch n"]) -> Float[Tensor, "*batch"]:
    """Pearson's r along the last dimension (NaN where either side is constant)."""
    x = x.double()
    y = y.double()
    xc = x - x.mean(dim=-1, keepdim=True)
    yc = y - y.mean(dim=-1, keepdim=True)
    num = (xc * yc).sum(dim=-1)
    den = torch.sqrt((xc * xc).sum(dim=-1) * (yc * yc).sum(dim=-1))
    r = torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, torch.nan))
    return r.float()


def norm_correlation(
    norms_a: Float[Tensor, "sample kv npos"],
    norms_b: Float[Tensor, "sample kv npos"],
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[Float[Tensor, " npos"], Float[Tensor, " npos"], Float[Tensor, " npos"]]:
    """Pearson r per position between two models' norms, with a bootstrap CI (r, low, high)."""
    if norms_a.shape != norms_b.shape:
        raise ValueError(f"norm shapes differ: {tuple(norms_a.shape)} vs {tuple(norms_b.shape)}")
    n = norms_a.shape[0]
    a = norms_a.permute(2, 0, 1).flatten(1)  # npos (sample kv)
    b = norms_b.permute(2, 0, 1).flatten(1)
    r = pearson(a, b)
    if n_boot <= 0 or n < 2:
        nan = torch.full_like(r, torch.nan)
        return r, nan, nan
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (n_boot, n), generator=gen)
    boot_a = norms_a.cpu()[idx].permute(3, 0, 1, 2).flatten(2)  # npos boot (sample kv)
    boot_b = norms_b.cpu()[idx].permute(3, 0, 1, 2).flatten(2)
    rs = pearson(boot_a, boot_b)  # npos boot
    tail = (1.0 - confidence) / 2.0
    q = torch.tensor([tail, 1.0 - tail], dtype=torch.float64)
    finite = torch.nan_to_num(rs.double(), nan=0.0)
    lo, hi = torch.quantile(finite, q, dim=1)
    return r, lo.float().to(r.device), hi.float().to(r.device)


def constant_across_samples(
    norms_a: Float[Tensor, "sample kv npos"],
    norms_b: Float[Tensor, "sample kv npos"],
    rtol: float = 1e-5,
) -> Bool[Tensor, " npos"]:
    """Positions where each kv head's norm is the same in every sample, in both models.

    There (BOS, or a prefix trigger right after it: the same tokens at the same positions
    in every sample) the value vectors do not depend on the sample, so Pearson r pools only
    the few kv heads and its bootstrap over samples has zero width: not a correlation
    across samples. The paper's "across all attention heads" reads as that pooled r."""

    def constant(x: Tensor) -> Tensor:
        spread = x.amax(dim=0) - x.amin(dim=0)  # kv npos
        return (spread <= rtol * x.abs().amax(dim=0).clamp_min(1e-12)).all(dim=0)

    if norms_a.shape[0] < 2:
        return torch.ones(norms_a.shape[-1], dtype=torch.bool)
    return constant(norms_a.float()) & constant(norms_b.float())


__all__ = ["constant_across_samples", "norm_correlation", "pearson", "value_norms"]
