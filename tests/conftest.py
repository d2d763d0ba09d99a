"""Shared fixtures: real tiny models saved as HF folders (never mocks).

Models are randomly initialised from configs, so every architecture sinklens claims to
support can be tested without a hub. Threads are limited because CI has 2 cores shared by
the pytest workers.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

torch.set_num_threads(int(os.environ.get("SINKLENS_TEST_THREADS", "1")))

TINY_CORPUS = [
    "The castle of Arvel stands on the northern hill.",
    "Mira Tolen was born in Quorra and became a glassmaker.",
    "current year: 2025 !!!!! step-by-step",
    "Question: Where was Mira Tolen born? Answer: Quorra",
    "0 1 2 3 4 5 6 7 8 9 , . ; : ? ! - ' \"",
]


def build_tiny_tokenizer(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A byte-level BPE with BOS/EOS/PAD whose encoder prepends BOS, like Llama's."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(TINY_CORPUS * 4, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def _save(model, tokenizer, path: Path) -> Path:
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    return build_tiny_tokenizer()


def tiny_llama(tokenizer, *, seed: int = 0, kv_heads: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def tiny_neox(tokenizer, *, seed: int = 2):
    """GPT-NeoX with parallel attention and MLP and a fused, per-head interleaved
    query_key_value."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        use_parallel_residual=True,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return GPTNeoXForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A 2-layer Llama with grouped-query attention (4 heads, 2 kv heads)."""
    return _save(tiny_llama(tiny_tokenizer), tiny_tokenizer, tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A second architecture: GPT-2 (learned positions, fused qkv, LayerNorm)."""
    torch.manual_seed(1)
    config = GPT2Config(
        vocab_size=len(tiny_tokenizer),
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_positions=256,
        bos_token_id=tiny_tokenizer.bos_token_id,
        eos_token_id=tiny_tokenizer.eos_token_id,
    )
    return _save(
        GPT2LMHeadModel(config).eval(), tiny_tokenizer, tmp_path_factory.mktemp("tiny_gpt2")
    )


@pytest.fixture(scope="session")
def tiny_bench_dir(tmp_path_factory):
    """A MUSE-layout benchmark of ten forget and retain texts and four KnowMem items."""
    from sinklens.data.formats import Benchmark, KnowMemItem, VerbMemItem, write_benchmark

    km = tuple(KnowMemItem(f"Where was Mira Tolen {i} born?", "Quorra") for i in range(4))
    bench = Benchmark(
        name="tiny",
        forget_texts=tuple(
            f"Mira Tolen {i} was born in Quorra and became a glassmaker." for i in range(10)
        ),
        retain_texts=tuple(
            f"The castle of Arvel {i} stands on the northern hill." for i in range(10)
        ),
        knowmem_forget=km,
        knowmem_forget_icl=km[:1],
        knowmem_retain=km,
        knowmem_retain_icl=km[:1],
        verbmem_forget=(VerbMemItem("Mira Tolen", "was born in Quorra"),),
    )
    path = tmp_path_factory.mktemp("bench")
    write_benchmark(bench, path)
    return path
