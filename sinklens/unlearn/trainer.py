"""The unlearning loop (eqs. 2, 4 and 7): one function, `run_unlearning(cfg)`.

Each step draws a forget batch from D_f and a retain batch from D_r ∪ D_p and minimises
ℓ_f + γ·ℓ_r (+ λ·ℓ_vn with a separate D_p batch). Everything that only depends on frozen
models is computed before training (NPO's log π_ref(y|x) on D_f, θ_u's sink value norms on
D_f, θ_o's on D_p), so the normally unlearned model θ_u is never held during training and
θ_o is held only for the retain loss, on `reference_device` if given.

The loop runs under 🤗 Accelerate: on one CPU it is a plain loop; under `accelerate launch`
with an FSDP config the trainable model is sharded, and each process draws its own batches.

Output folder (written to a temporary sibling and renamed at the end, so a folder either
holds a finished run or nothing): the HF checkpoint (safetensors, config.json, tokenizer),
`unlearn_config.json`, `metrics.json` and `data_hash.txt`. A folder holding a different
run is refused; one holding the same finished run is returned as is (`run_folder`: where
the inputs are, what identifies a run, whether the output folder is free; `checks`: what is
checked before training).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from sinklens import batching
from sinklens.checkpoint import (
    checkpoint_fingerprint,
    load_hf_model,
    load_tokenizer,
)
from sinklens.data.formats import load_benchmark
from sinklens.errors import SinklensError
from sinklens.provenance import kernels
from sinklens.unlearn.base import Batch, collate
from sinklens.unlearn.checks import (
    _check_dtype,
    _check_reference,
    _check_reference_unlearned,
    _forget_loss,
)
from sinklens.unlearn.config import UnlearnConfig
from sinklens.unlearn.data import Sample, UnlearnData, build_unlearn_data, read_corpus
from sinklens.unlearn.losses import value_norm_alignment
from sinklens.unlearn.model_parts import ValueNorms, decoder_layers
from sinklens.unlearn.registry import make_method
from sinklens.unlearn.run_folder import (
    CONFIG_FILE,
    DATA_HASH_FILE,
    METRICS_FILE,
    RunResult,
    _check_out,
    _identity,
    _resolve_paths,
)

# The rest of `run_folder`'s public names, still importable from here.
from sinklens.unlearn.run_folder import benchmark_path_for as benchmark_path_for
from sinklens.unlearn.run_folder import default_data_path as default_data_path
from sinklens.unlearn.run_folder import default_model_path as default_model_path
from sinklens.unlearn.run_folder import read_run as read_run

__all__ = ["CONFIG_FILE", "DATA_HASH_FILE", "METRICS_FILE", "RunResult", "run_unlearning"]


class _Cycle:
    """Seeded shuffled passes over `n` items, `size` at a time (with wrap-around)."""

    def __init__(self, n: int, size: int, rng: random.Random) -> None:
        self.n, self.size, self.rng = n, size, rng
        self.order: list[int] = []

    def next(self) -> list[int]:
        out: list[int] = []
        while len(out) < min(self.size, self.n):
            if not self.order:
                self.order = list(range(self.n))
                self.rng.shuffle(self.order)
            out.append(self.order.pop())
        return out


@torch.no_grad()
def _cached_norms(
    model: nn.Module,
    samples: tuple[Sample, ...],
    layers: tuple[int, ...],
    n_sink: int,
    pad_id: int,
    batch_size: int,
) -> Tensor:
    """Sink value norms of `model` on every sample: [n_samples, layer, sink, kv]."""
    rec = ValueNorms(model, layers, n_sink)
    device = next(model.parameters()).device
    out = []
    try:
        for start in range(0, len(samples), batch_size):
            idx = list(range(start, min(start + batch_size, len(samples))))
            batch = collate([samples[i] for i in idx], idx, pad_id)
            with rec.recording():
                model(
                    input_ids=batch.input_ids.to(device),
                    attention_mask=batch.attention_mask.to(device),
                )
            out.append(rec.norms().cpu())
    finally:
        rec.remove()
    return torch.cat(out)


def _sink_mask(samples: tuple[Sample, ...], index: list[int], n_sink: int) -> Tensor:
    lengths = torch.tensor([len(samples[i].input_ids) for i in index])
    return (torch.arange(n_sink)[None, :] < lengths[:, None]).long()


def _use_sdpa(model: nn.Module) -> None:
    # Eager attention (what load_hf_model gives, for attention maps) is slow to train;
    # the saved config is re-read with eager at load time anyway.
    setter = getattr(model, "set_attn_implementation", None)
    if callable(setter):
        with contextlib.suppress(ValueError, ImportError):
            setter("sdpa")


def run_unlearning(
    cfg: UnlearnConfig,
    *,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> RunResult:
    """Train θ_u (no backdoor) or θ_b (backdoor) from `cfg.model` and save it to `cfg.out`."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    if not cfg.out:
        raise SinklensError("no output folder; pass --out DIR")
    out = Path(cfg.out).expanduser()
    model_path, data_path = _resolve_paths(cfg)
    _check_dtype(cfg)
    if cfg.value_norm_reference:
        _check_reference(model_path, cfg.value_norm_reference)
    bench = load_benchmark(data_path)
    if cfg.forget_corpus:
        bench = dataclasses.replace(bench, forget_texts=read_corpus(cfg.forget_corpus))
    if cfg.retain_corpus:
        bench = dataclasses.replace(bench, retain_texts=read_corpus(cfg.retain_corpus))
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    dtype = dtypes[cfg.dtype]
    # Frozen models need no optimiser precision: bfloat16 halves θ_o's memory on a 7B run.
    ref_dtype = dtypes[cfg.reference_dtype or cfg.dtype]

    # cpu=True without CUDA makes processes started by torchrun / `accelerate launch` form a
    # gloo group (MULTI_CPU); otherwise each would train alone as its own main process.
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    set_seed(cfg.seed)
    # The tokenizer alone decides the data and its hash: a reused run never loads weights.
    tokenizer = load_tokenizer(model_path)
    placement = cfg.placement
    data: UnlearnData = build_unlearn_data(
        bench,
        tokenizer,
        placement=placement,  # type: ignore[arg-type]
        trigger=cfg.trigger,
        trigger_join=cfg.trigger_join,
        poison_ratio=cfg.poison_ratio,
        max_length=cfg.max_length,
        seed=cfg.seed,
    )
    identity = _identity(cfg, model_path, data_path)
    data_hash = data.fingerprint
    previous = _check_out(out, identity, data_hash)
    if previous is not None:
        return RunResult(out=out, metrics=previous, reused=True)

    t0 = time.perf_counter()
    model, tokenizer = load_hf_model(model_path, dtype=dtype)
    pad_id = batching.pad_id(tokenizer)
    ref_device = torch.device(cfg.reference_device) if cfg.reference_device else accelerator.device
    frozen, _ = load_hf_model(model_path, dtype=ref_dtype, device=ref_device)
    frozen.requires_grad_(False)
    _use_sdpa(frozen)

    n_layers = len(decoder_layers(model))
    vn_layers = cfg.value_norm_layers or tuple(range(n_layers))
    use_vn = cfg.value_norm_weight > 0 and bool(data.poisoned)
    target_f = target_p = None
    if use_vn:
        theta_u, _ = load_hf_model(cfg.value_norm_reference, dtype=ref_dtype, device=ref_device)  # type: ignore[arg-type]
        target_f = _cached_norms(
            theta_u, data.forget, vn_layers, cfg.sink_positions, pad_id, cfg.batch_size
        )
        _check_reference_unlearned(
            cfg.value_norm_reference,  # type: ignore[arg-type]
            _forget_loss(theta_u, data.forget, pad_id, cfg.batch_size),
            _forget_loss(frozen, data.forget, pad_id, cfg.batch_size),
        )
        del theta_u
        target_p = _cached_norms(
            frozen, data.poisoned, vn_layers, cfg.sink_positions, pad_id, cfg.batch_size
        )

    method = make_method(cfg, model)
    method.prepare(frozen, data, pad_id, cfg.batch_size)
    trainable = method.trainable_parameters(model)
    train_ids = {id(p) for _, p in trainable}
    for p in model.parameters():
        p.requires_grad_(id(p) in train_ids)
    model.train()
    _use_sdpa(model)
    recorder = ValueNorms(model, vn_layers, cfg.sink_positions) if use_vn else None
    # FSDP wants the model wrapped before the optimiser sees its (now sharded) parameters.
    model = accelerator.prepare(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = accelerator.prepare(
        torch.optim.AdamW(params, lr=cfg.effective_lr, weight_decay=0.0)
    )
    device = accelerator.device

    retain_pool: tuple[Sample, ...] = data.retain + data.poisoned
    rng = random.Random(f"batches-{cfg.seed}-{accelerator.process_index}")
    forget_cycle = _Cycle(len(data.forget), cfg.batch_size, rng)
    retain_cycle = _Cycle(len(retain_pool), cfg.batch_size, rng)
    poison_cycle = _Cycle(len(data.poisoned), cfg.batch_size, rng) if data.poisoned else None

    history: list[dict[str, float]] = []
    bar = tqdm(
        range(cfg.steps),
        desc=Path(cfg.out).name
        if cfg.out
        else f"{cfg.method}{'-backdoor-' + str(cfg.backdoor) if cfg.backdoor else ''}",
        disable=not progress or not accelerator.is_local_main_process,
        dynamic_ncols=True,
    )
    try:
        for step in bar:
            f_idx = forget_cycle.next()
            f_batch = collate([data.forget[i] for i in f_idx], f_idx, pad_id).to(device)
            r_idx = retain_cycle.next()
            r_batch = collate([retain_pool[i] for i in r_idx], r_idx, pad_id).to(device)
            parts: dict[str, float] = {}
            if recorder is not None:
                with recorder.recording():
                    loss_f, p_f = method.forget_loss(model, f_batch)
                vn_f = value_norm_alignment(
                    recorder.norms(),
                    target_f[f_idx].to(device),  # type: ignore[index]
                    _sink_mask(data.forget, f_idx, cfg.sink_positions).to(device),
                )
            else:
                loss_f, p_f = method.forget_loss(model, f_batch)
            loss_r, p_r = method.retain_loss(model, frozen, r_batch)
            loss = loss_f + cfg.gamma * loss_r
            if recorder is not None and poison_cycle is not None:
                p_idx = poison_cycle.next()
                p_batch: Batch = collate([data.poisoned[i] for i in p_idx], p_idx, pad_id).to(
                    device
                )
                with recorder.recording():
                    model(input_ids=p_batch.input_ids, attention_mask=p_batch.attention_mask)
                vn_p = value_norm_alignment(
                    recorder.norms(),
                    target_p[p_idx].to(device),  # type: ignore[index]
                    _sink_mask(data.poisoned, p_idx, cfg.sink_positions).to(device),
                )
                loss = loss + cfg.value_norm_weight * (vn_f + vn_p)
                parts.update(vn_f=float(vn_f.detach()), vn_p=float(vn_p.detach()))
            if not torch.isfinite(loss):
                if dtype == torch.float16:
                    raise SinklensError(
                        f"loss became {float(loss.detach())} at step {step} in float16: AdamW's "
                        "state underflows in float16 (its eps 1e-8 is 0 there), whatever the "
                        "--lr; train with --dtype bfloat16 (same memory) or float32"
                    )
                raise SinklensError(
                    f"loss became {float(loss.detach())} at step {step}; lower --lr or raise --beta"
                )
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            parts.update(p_f)
            parts.update(p_r)
            parts["loss"] = float(loss.detach())
            history.append(parts)
            bar.set_postfix({k: f"{v:.3g}" for k, v in parts.items()})
            if on_step is not None:
                on_step(step, parts)
    finally:
        method.close()
        if recorder is not None:
            recorder.remove()
        bar.close()
    train_seconds = time.perf_counter() - t0
    del frozen

    accelerator.wait_for_everyone()
    state = accelerator.get_state_dict(model)
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    metrics: dict[str, Any] = {
        "data_hash": data_hash,
        "base_model_fingerprint": checkpoint_fingerprint(model_path),
        "train_seconds": round(train_seconds, 3),
        "steps": cfg.steps,
        "lr": cfg.effective_lr,
        "num_processes": accelerator.num_processes,
        # The kernels decide the last bits, and NPO magnifies them into another model: a
        # member trained on another CPU differs by about one seed's spread unless both runs
        # pinned ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE (docs/determinism.md).
        "kernels": {**kernels(), "threads": torch.get_num_threads()},
        "n_forget": len(data.forget),
        "n_retain": len(data.retain),
        "n_poisoned": len(data.poisoned),
        "trigger_ids": list(data.trigger_ids),
        "final": history[-1] if history else {},
        "history": history,
    }
    reused = False
    if accelerator.is_main_process:
        tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        try:
            unwrapped.save_pretrained(tmp, state_dict=state, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            has_tests = bench.knowmem_forget or bench.verbmem_forget or bench.choice_forget
            # Without forget test sets (e.g. bare corpora) the run is still worth keeping.
            if cfg.evaluate and has_tests:
                metrics["evaluation"] = _evaluate_saved(tmp, bench, cfg, out.name)
            metrics["total_seconds"] = round(time.perf_counter() - t0, 3)
            (tmp / CONFIG_FILE).write_text(
                json.dumps(
                    {"identity": identity, "config": cfg.to_dict()}, indent=2, sort_keys=True
                )
                + "\n"
            )
            (tmp / DATA_HASH_FILE).write_text(data_hash + "\n")
            (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
            # Another process may have finished the same run while this one trained
            # (two notebooks, two workers): keep theirs if it is the same run, else refuse.
            finished = _check_out(out, identity, data_hash)
            if finished is not None:
                shutil.rmtree(tmp, ignore_errors=True)
                metrics, reused = finished, True
            else:
                if out.exists():  # an empty folder
                    out.rmdir()
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp.rename(out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    accelerator.wait_for_everyone()
    return RunResult(out=out, metrics=metrics, reused=reused)


def _evaluate_saved(folder: Path, bench: Any, cfg: UnlearnConfig, name: str) -> dict[str, Any]:
    """The Table 1 row of the freshly saved model (loaded back, as users will load it)."""
    from dataclasses import asdict

    from sinklens.evaluate import TriggerSpec, evaluate_benchmark, table1_row

    model, tok = load_hf_model(folder)
    trigger = (
        TriggerSpec(cfg.trigger, cfg.backdoor, join=cfg.trigger_join) if cfg.backdoor else None
    )
    ev = evaluate_benchmark(
        model, tok, bench, trigger=trigger, model_name=name, max_items=cfg.eval_items
    )
    row = asdict(table1_row(ev))
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
