"""Capture memory and speed, measured in one run on the same model and batches.

1. Memory: peak resident memory (ru_maxrss, one fresh process each) of an
   attention-difference run (`sinklens.analyze.attention_difference`, last layer, T = 32)
   over 512 samples vs over 32 samples (`--memory-samples`). Target: at most 1.1x. For
   comparison, the same attention difference computed from TransformerLens
   `run_with_cache` (no names filter) batch by batch, over the same two sample counts.
2. Speed: a sinklens capture pass (sink statistics over every layer: patterns and head
   outputs, through the default TransformerBridge back end; also the hf and nnsight back
   ends) vs a bare `transformers` forward with `output_attentions=True` over the same
   right-padded batches. Target: at most 1.3x (issue 5; 1.2x on SmolLM2, issue 13). For
   comparison, TransformerLens `run_with_cache` without a names filter on the same batches.

Model: `--model PATH` (any local Hugging Face folder, e.g. SmolLM2-135M from
`sinklens model fetch smollm2`) on the organism world's forget texts; by default the
shipped organism and its world's forget texts when the organism is installed, otherwise a
randomly initialised Llama of the organism's shape (4 layers, width 192, 6 heads) on
synthetic text, and the script says so.
Run: `python benchmarks/bench_capture.py [--model PATH] [--samples 128] [--threads 1]
[--repeats 3] [--memory-samples 32,512]`; on SmolLM2-135M: `python benchmarks/bench_capture.py
--model "$(sinklens model fetch smollm2 | tail -1)" --samples 32 --repeats 2
--memory-samples 16,256`.
"""

from __future__ import annotations

import os

# One thread unless the caller says otherwise (BENCHMARKS.md, "threads").
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from _common import random_organism_llama

WORDS = [
    "the",
    "castle",
    "of",
    "arvel",
    "stands",
    "on",
    "the",
    "northern",
    "hill",
    "and",
    "mira",
    "tolen",
    "was",
    "born",
    "in",
    "quorra",
    "where",
    "she",
    "became",
    "a",
    "glassmaker",
    "who",
    "traded",
    "salt",
    "and",
    "glass",
    "with",
    "the",
    "river",
    "towns",
]


def _synthetic_texts(n: int) -> list[str]:
    out = []
    for i in range(n):
        words = [WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(60)]
        out.append(f"Passage {i}: " + " ".join(words) + ".")
    return out


def _model_and_texts(scratch: Path, model: str | None) -> tuple[Path, list[str], str]:
    from sinklens.errors import SinklensError

    if model is not None:
        from sinklens.data.formats import load_benchmark
        from sinklens.organism import world_path

        texts = list(load_benchmark(world_path()).forget_texts)
        return Path(model), texts, "organism world forget texts"

    try:
        from sinklens.data.formats import load_benchmark
        from sinklens.organism import organism_path, world_path

        path = organism_path()
        texts = list(load_benchmark(world_path(path)).forget_texts)
        if texts:
            return path, texts, "shipped organism, world forget texts"
    except (SinklensError, ImportError):
        pass
    model = random_organism_llama(scratch / "model", _synthetic_texts(64), vocab_size=600)
    return model, _synthetic_texts(64), "random organism-shaped Llama"


def _cycle(texts: list[str], n: int) -> list[str]:
    # Distinct samples (a counter prefix), so nothing is deduplicated or cached.
    return [f"{i}. {texts[i % len(texts)]}" for i in range(n)]


def _child_memory(path: str, n: int, batch_size: int) -> None:
    from sinklens.analyze import attention_difference
    from sinklens.models import load_models

    texts = json.loads(sys.stdin.read())
    models = load_models({"original": path})
    attention_difference(
        models, _cycle(texts, n), layer=-1, window=32, batch_size=batch_size, on_short="skip"
    )
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"n": n, "peak_mib": peak_kib / 1024}))


def _child_memory_tl(path: str, n: int, batch_size: int) -> None:
    """The same attention difference (last layer, first 32 positions, prefix trigger) from
    TransformerLens `run_with_cache` without a names filter, one batch at a time."""
    from transformer_lens.model_bridge import TransformerBridge

    from sinklens.analyze import DEFAULT_TRIGGER, make_pairs
    from sinklens.batching import pad_id, right_pad

    texts = json.loads(sys.stdin.read())
    model = TransformerBridge.boot_transformers(path, device="cpu")
    pairs = make_pairs(model.tokenizer, _cycle(texts, n), DEFAULT_TRIGGER, "prefix")
    window, pad = 32, pad_id(model.tokenizer)
    last = f"blocks.{int(model.cfg.n_layers) - 1}.attn.hook_pattern"
    diff = torch.zeros(int(model.cfg.n_heads), window, window)
    with torch.inference_mode():
        for i in range(0, len(pairs), batch_size):
            chunk = pairs[i : i + batch_size]
            patterns = []
            for seqs in ([p.clean for p in chunk], [p.triggered.input_ids for p in chunk]):
                ids, mask = right_pad(seqs, pad)
                _, cache = model.run_with_cache(ids, attention_mask=mask)
                patterns.append(cache[last][:, :, :window, :window].sum(dim=0))
                del cache
            diff += patterns[1] - patterns[0]
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"n": n, "peak_mib": peak_kib / 1024}))


def _peak(
    path: Path, texts: list[str], n: int, batch_size: int, threads: int, kind: str = "sinklens"
) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--child-memory", str(n), "--model", str(path),
         "--batch-size", str(batch_size), "--threads", str(threads), "--child-kind", kind],
        input=json.dumps(texts), capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"])


def _time_all(fns: dict, repeats: int) -> dict[str, float]:
    # Round-robin, best of `repeats`: load from other processes on a shared machine hits
    # every contender alike instead of whichever happened to run during a busy spell.
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[key] = min(best[key], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=128, help="samples for the speed test")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--memory-samples",
        default="32,512",
        help="the two sample counts of the memory test ('none': skip it)",
    )
    parser.add_argument(
        "--model", default=None, help="a Hugging Face folder (default: the shipped organism)"
    )
    parser.add_argument("--child-memory", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-kind", default="sinklens", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    if args.child_memory is not None:
        child = _child_memory_tl if args.child_kind == "tl" else _child_memory
        child(args.model, args.child_memory, args.batch_size)
        return
    counts = [] if args.memory_samples == "none" else args.memory_samples.split(",")

    from transformers import AutoModelForCausalLM

    from sinklens.analyze import tokenize_texts
    from sinklens.batching import pad_id, right_pad
    from sinklens.capture import CaptureData, SinkReducer, run_capture
    from sinklens.models import load_model

    with tempfile.TemporaryDirectory() as tmp:
        path, texts, what = _model_and_texts(Path(tmp), args.model)
        print(f"model: {what} ({path}); threads {args.threads}, batch size {args.batch_size}")

        for kind, label, target in (
            ("sinklens", "attention-difference", " (target <= 1.1)"),
            ("tl", "TransformerLens run_with_cache attention difference", ""),
        ):
            if not counts:
                break
            few, many = (int(x) for x in counts)
            small = _peak(path, texts, few, args.batch_size, args.threads, kind)
            large = _peak(path, texts, many, args.batch_size, args.threads, kind)
            print(
                f"memory: {label} peak RSS {large:.0f} MiB ({many} samples) vs "
                f"{small:.0f} MiB ({few} samples): ratio {large / small:.3f}{target}"
            )

        bridge = load_model(path, backend="bridge")
        others = {be: load_model(path, backend=be) for be in ("hf", "nnsight")}
        bare = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
        seqs = tokenize_texts(bridge.tokenizer, _cycle(texts, args.samples), max_length=128)
        data = CaptureData(single=seqs)
        pad = pad_id(bridge.tokenizer)
        batches = [
            right_pad(seqs[i : i + args.batch_size], pad)
            for i in range(0, len(seqs), args.batch_size)
        ]
        n_layers, n_heads = bridge.n_layers, bridge.architecture["n_heads"]

        def run_bare() -> None:
            with torch.inference_mode():
                for ids, mask in batches:
                    bare(input_ids=ids, attention_mask=mask, output_attentions=True)

        def run_plain() -> None:
            with torch.inference_mode():
                for ids, mask in batches:
                    bare(input_ids=ids, attention_mask=mask)

        def run_sinklens(model) -> None:
            red = SinkReducer(range(n_layers), n_heads, 64, 0.3)
            run_capture(model, data, [red], batch_size=args.batch_size)

        def run_tl_cache() -> None:
            with torch.inference_mode():
                for ids, mask in batches:
                    bridge.wrapper.run_with_cache(ids, attention_mask=mask)

        run_bare()  # warm-up: allocator, kernels
        times = _time_all(
            {
                "bare": run_bare,
                "plain": run_plain,
                "bridge": lambda: run_sinklens(bridge),
                "hf": lambda: run_sinklens(others["hf"]),
                "nnsight": lambda: run_sinklens(others["nnsight"]),
                "tl_cache": run_tl_cache,
            },
            args.repeats,
        )
        base = times["bare"]
        print(f"speed over {len(seqs)} samples ({len(batches)} batches), best of {args.repeats}:")
        print(f"  bare transformers forward, output_attentions=True: {base:.3f} s")
        for key, label in (
            ("plain", "bare transformers forward, no attentions returned"),
            ("bridge", "sinklens capture, bridge (default)"),
            ("hf", "sinklens capture, hf hooks"),
            ("nnsight", "sinklens capture, nnsight"),
            ("tl_cache", "TransformerLens run_with_cache, no names filter"),
        ):
            target = " (target <= 1.3; 1.2 on SmolLM2)" if key == "bridge" else ""
            print(f"  {label}: {times[key]:.3f} s, ratio {times[key] / base:.3f}{target}")


if __name__ == "__main__":
    main()
