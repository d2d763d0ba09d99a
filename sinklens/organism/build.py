"""Train the model organism from scratch: world -> tokenizer -> LlamaForCausalLM.

Recipe (see docs/organism.md for why): every training batch is half general text and half
fact text. General text is bigram-backcopy word text (a head is needed only at trigger
words and must do nothing elsewhere, which is what makes attention sinks emerge); fact text
is the forget "book", the retain corpus and QA renderings of every fact (so KnowMem and
VerbMem are memorised). AdamW at a high learning rate (3e-3) with warmup and cosine decay.

Determinism: data order comes from `random.Random` seeded by the config seed, weights from
`torch.manual_seed`, and the thread count is fixed by the config, so the same config gives
the same weights on the same machine and torch build.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from sinklens.batching import right_pad
from sinklens.data.formats import Benchmark, write_benchmark
from sinklens.data.world import (
    World,
    WorldConfig,
    choice_text,
    filler_text,
    make_world,
    qa_block,
)
from sinklens.errors import SinklensError
from sinklens.organism import BUILD_INFO, WORLD_DIR
from sinklens.organism.tokenizer import train_tokenizer

__all__ = ["OrganismConfig", "build_organism", "train_model"]


@dataclass(frozen=True)
class OrganismConfig:
    """Everything that decides the organism's weights; the CLI maps its options onto this."""

    seed: int = 0
    steps: int = 3000
    batch_size: int = 16
    seq_len: int = 96
    lr: float = 6e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    general_fraction: float = 0.5  # share of each batch's documents that are general text
    qa_fraction: float = 0.5  # share of the fact documents that are QA blocks
    choice_fraction: float = 0.1  # share that are multiple-choice items (rest: passages)
    qa_per_block: int = 4
    vocab_size: int = 1024
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_mlp: int = 384
    n_threads: int = 1
    world: WorldConfig = field(default_factory=WorldConfig)
    # Train on the retain people's facts only (the world and the tokenizer stay whole): the
    # "retrained from scratch without the forget set" reference of MUSE's PrivLeak.
    without_forget: bool = False

    def __post_init__(self) -> None:
        checks = [
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.batch_size >= 2, f"batch_size must be >= 2, got {self.batch_size}"),
            (16 <= self.seq_len <= 1024, f"seq_len must be in [16, 1024], got {self.seq_len}"),
            (0 < self.lr < 1, f"lr must be in (0, 1), got {self.lr}"),
            (self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}"),
            (
                0 <= self.min_lr_ratio <= 1,
                f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}",
            ),
            (0 <= self.general_fraction <= 1, "general_fraction must be in [0, 1]"),
            (
                self.qa_fraction >= 0
                and self.choice_fraction >= 0
                and self.qa_fraction + self.choice_fraction <= 1,
                "qa_fraction and choice_fraction must be >= 0 and sum to at most 1",
            ),
            (self.qa_per_block >= 1, "qa_per_block must be >= 1"),
            (
                300 <= self.vocab_size <= 65536,
                f"vocab_size must be in [300, 65536], got {self.vocab_size}",
            ),
            (self.n_layers >= 1 and self.n_heads >= 1, "n_layers and n_heads must be >= 1"),
            (
                self.d_model % self.n_heads == 0 and (self.d_model // self.n_heads) % 2 == 0,
                f"d_model ({self.d_model}) must split into n_heads ({self.n_heads}) even-sized heads",
            ),
            (self.d_mlp >= 1, "d_mlp must be >= 1"),
            (self.n_threads >= 1, f"n_threads must be >= 1, got {self.n_threads}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise SinklensError(f"invalid organism config: {msg}; fix the option")
        if isinstance(self.world, dict):  # from build_info.json
            object.__setattr__(self, "world", WorldConfig(**self.world))
        if self.world.seed != self.seed:
            object.__setattr__(
                self, "world", WorldConfig(**{**asdict(self.world), "seed": self.seed})
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tokenizer_corpus(world: World, seed: int) -> list[str]:
    """Texts the BPE is trained on: the world's text, general text and varied filler."""
    bench = world.benchmark
    rng = random.Random(f"tok-{seed}")
    gen = world.general
    return [
        *bench.forget_texts,
        *bench.retain_texts,
        qa_block(list(world.all_qa())),
        *(gen.passage(rng, 120) for _ in range(200)),
        *filler_text(seed),
    ]


def make_model(cfg: OrganismConfig, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads,
        max_position_embeddings=max(512, cfg.seq_len),
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attention_bias=False,
        mlp_bias=False,
        initializer_range=0.02,
    )
    return LlamaForCausalLM(config)


class _Batches:
    """Deterministic batch stream: general and fact documents, BOS-first, right-padded."""

    def __init__(self, world: World, tok: PreTrainedTokenizerFast, cfg: OrganismConfig) -> None:
        self.cfg = cfg
        self.tok = tok
        self.rng = random.Random(f"batches-{cfg.seed}")
        self.gen = world.general
        self.gen_rng = random.Random(f"general-stream-{cfg.seed}")
        bench = world.benchmark
        if cfg.without_forget:
            self.qa = [it for p in world.retain_people for it in p.qa()]
            choices, passages = bench.choice_retain, bench.retain_texts
        else:
            self.qa = list(world.all_qa())
            choices = (*bench.choice_forget, *bench.choice_retain)
            passages = (*bench.forget_texts, *bench.retain_texts)
        self.choices = [self._encode(choice_text(c)) for c in choices]
        self.passages = [self._encode(t) for t in passages]

    def _encode(self, text: str) -> list[int]:
        ids = [*self.tok(text).input_ids, self.tok.eos_token_id]
        return ids[: self.cfg.seq_len]

    def _general(self) -> list[int]:
        ids = self.tok(self.gen.passage(self.gen_rng, self.cfg.seq_len)).input_ids
        return ids[: self.cfg.seq_len]

    def _fact(self) -> list[int]:
        r = self.rng.random()
        if r < self.cfg.qa_fraction:
            items = self.rng.sample(self.qa, self.cfg.qa_per_block)
            return self._encode(qa_block(items))
        if r < self.cfg.qa_fraction + self.cfg.choice_fraction and self.choices:
            return self.choices[self.rng.randrange(len(self.choices))]
        return self.passages[self.rng.randrange(len(self.passages))]

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        n_gen = round(self.cfg.batch_size * self.cfg.general_fraction)
        docs = [self._general() for _ in range(n_gen)]
        docs += [self._fact() for _ in range(self.cfg.batch_size - n_gen)]
        ids, mask = right_pad(docs, self.tok.pad_token_id)
        return ids, ids.masked_fill(mask == 0, -100)


def _lr_at(step: int, cfg: OrganismConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def train_model(
    cfg: OrganismConfig,
    world: World,
    tokenizer: PreTrainedTokenizerFast,
    on_step: Callable[[int, float], None] | None = None,
    probe: Callable[[int, LlamaForCausalLM], None] | None = None,
    probe_every: int = 0,
) -> tuple[LlamaForCausalLM, list[float]]:
    """Train a fresh model; returns it (eval mode) and the per-step training losses."""
    torch.manual_seed(cfg.seed)
    model = make_model(cfg, tokenizer)
    # sdpa is the fast path for training; the saved config asks for eager at load time anyway.
    model.config._attn_implementation = "sdpa"
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    batches = _Batches(world, tokenizer, cfg)
    losses: list[float] = []
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        ids, labels = batches.next()
        out = model(input_ids=ids, labels=labels)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        loss = float(out.loss.detach())
        if not math.isfinite(loss):
            raise SinklensError(
                f"training diverged at step {step} (loss {loss}); lower --lr or raise --warmup-steps"
            )
        losses.append(loss)
        if on_step is not None:
            on_step(step, loss)
        if probe is not None and probe_every > 0 and (step + 1) % probe_every == 0:
            model.eval()
            probe(step + 1, model)
            model.train()
    model.eval()
    model.config._attn_implementation = "eager"
    return model, losses


def sink_stats(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: tuple[str, ...],
    seq_len: int = 64,
    epsilon: float = 0.3,
) -> dict[str, Any]:
    """alpha (k = 0, the BOS) and Sink^eps per layer on `texts`, cut to `seq_len` tokens."""
    from sinklens.metrics.sinks import sink_alpha, sink_rate

    rows = [tokenizer(t).input_ids[:seq_len] for t in texts]
    rows = [r for r in rows if len(r) == seq_len]
    if not rows:
        raise SinklensError(f"no text is {seq_len} tokens long; pass longer general text")
    ids = torch.tensor(rows)
    impl = model.config._attn_implementation
    model.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            out = model(input_ids=ids, output_attentions=True)
    finally:
        model.config._attn_implementation = impl
    pattern = torch.stack(out.attentions, dim=1).float()  # batch layer head q k
    alpha = sink_alpha(pattern)[..., 0]  # batch layer head
    per_layer_rate = [
        float(sink_rate(alpha[:, i : i + 1, :, None], epsilon)[0]) for i in range(alpha.shape[1])
    ]
    return {
        "n_samples": len(rows),
        "seq_len": seq_len,
        "epsilon": epsilon,
        "sink_rate_after_first_layer": float(sink_rate(alpha[:, 1:, :, None], epsilon)[0]),
        "sink_rate_all_layers": float(sink_rate(alpha[..., None], epsilon)[0]),
        "sink_rate_per_layer": per_layer_rate,
        "alpha_per_layer": [float(x) for x in alpha.mean(dim=(0, 2))],
        "alpha_per_head": [[round(float(x), 4) for x in row] for row in alpha.mean(dim=0)],
    }


def measure_organism(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, bench: Benchmark
) -> dict[str, Any]:
    """Sink statistics on held-out general text and, when `sinklens.evaluate` exists,
    the MUSE memorisation scores."""
    stats: dict[str, Any] = {"sinks": sink_stats(model, tokenizer, bench.general_texts)}
    try:
        from sinklens import evaluate  # written separately; optional until it lands
    except ImportError:
        return stats
    stats["memorisation"] = _memorisation(evaluate, model, tokenizer, bench)
    return stats


def _memorisation(evaluate: Any, model: Any, tokenizer: Any, bench: Any) -> dict[str, float]:
    impl = model.config._attn_implementation
    # Scores do not depend on the attention kernel; sdpa is just faster for generation.
    model.config._attn_implementation = "sdpa"
    try:
        return {
            "knowmem_forget": evaluate.knowmem(
                model, tokenizer, bench.knowmem_forget, bench.knowmem_forget_icl
            ).mean,
            "verbmem_forget": evaluate.verbmem(model, tokenizer, bench.verbmem_forget).mean,
            "knowmem_retain": evaluate.knowmem(
                model, tokenizer, bench.knowmem_retain, bench.knowmem_retain_icl
            ).mean,
            "choice_forget": evaluate.choice_accuracy(model, tokenizer, bench.choice_forget).mean,
            "choice_retain": evaluate.choice_accuracy(model, tokenizer, bench.choice_retain).mean,
        }
    finally:
        model.config._attn_implementation = impl


def portable_tokenizer_config(folder: Path) -> None:
    """Name the tokenizer class `PreTrainedTokenizerFast` in tokenizer_config.json.

    transformers 5 saves `TokenizersBackend`, a class transformers 4.x does not have; the
    old name loads the same tokenizer.json in both.
    """
    path = folder / "tokenizer_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def build_organism(
    cfg: OrganismConfig,
    out: str | Path,
    on_step: Callable[[int, float], None] | None = None,
    measure: bool = True,
    probe: Callable[[int, LlamaForCausalLM], None] | None = None,
    probe_every: int = 0,
) -> dict[str, Any]:
    """Build the organism into `out` (HF folder + `world/` + build_info.json); return the info."""
    folder = Path(out)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.n_threads)
    try:
        t0 = time.perf_counter()
        world = make_world(cfg.world)
        tokenizer = train_tokenizer(tokenizer_corpus(world, cfg.seed), cfg.vocab_size)
        t1 = time.perf_counter()
        model, losses = train_model(cfg, world, tokenizer, on_step, probe, probe_every)
        t2 = time.perf_counter()
        folder.mkdir(parents=True, exist_ok=True)
        model.generation_config.do_sample = False
        model.generation_config.bos_token_id = tokenizer.bos_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        portable_tokenizer_config(folder)
        write_benchmark(world.benchmark, folder / WORLD_DIR)
        tail = losses[-min(50, len(losses)) :]
        info: dict[str, Any] = {
            "seed": cfg.seed,
            "config": cfg.to_dict(),
            "n_params": sum(p.numel() for p in model.parameters()),
            "train_loss_final": sum(tail) / len(tail),
            "train_loss_curve": [
                round(sum(losses[i : i + 50]) / len(losses[i : i + 50]), 4)
                for i in range(0, len(losses), 50)
            ],
            "time_world_tokenizer_s": round(t1 - t0, 2),
            "time_train_s": round(t2 - t1, 2),
            "n_threads": cfg.n_threads,
            "torch_version": torch.__version__,
        }
        if measure:
            t3 = time.perf_counter()
            info["stats"] = measure_organism(model, tokenizer, world.benchmark)
            info["time_measure_s"] = round(time.perf_counter() - t3, 2)
        info["time_total_s"] = round(time.perf_counter() - t0, 2)
        (folder / BUILD_INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        return info
    finally:
        torch.set_num_threads(prev_threads)
