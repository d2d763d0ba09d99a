"""Robustness attacks: the quantiser against GGUF's block arithmetic written out by hand,
relearning that really trains, options refused where an attack does not take them."""

import hashlib
import json

import numpy as np
import pytest

from sinklens.attacks import Quantize, Relearn, parse_attack, quantize_roundtrip, run_attack
from sinklens.checkpoint import load_hf_model
from sinklens.data.formats import Benchmark
from sinklens.errors import SinklensError


def _q8_0(x):
    """GGML's Q8_0 (ggml-quants.c quantize_row_q8_0_ref): per 32 weights d = amax / 127,
    q = round-half-away(x / d), stored d as fp16; back: q * d."""
    blocks = x.reshape(-1, 32).astype(np.float32)
    d = np.abs(blocks).max(axis=1, keepdims=True) / 127
    inv = np.where(d == 0, 0, 1 / np.where(d == 0, 1, d))
    q = np.sign(blocks * inv) * np.floor(np.abs(blocks * inv) + 0.5)
    return (q * d.astype(np.float16).astype(np.float32)).reshape(x.shape)


def _q4_0(x):
    """GGML's Q4_0: d = (the signed weight of largest magnitude) / -8, q = trunc(x / d + 8.5)
    clipped to 0..15, stored d as fp16; back: (q - 8) * d."""
    blocks = x.reshape(-1, 32).astype(np.float32)
    big = np.take_along_axis(blocks, np.abs(blocks).argmax(axis=1)[:, None], axis=1)
    d = big / -8
    inv = np.where(d == 0, 0, 1 / np.where(d == 0, 1, d))
    q = np.clip(np.trunc(blocks * inv + 8.5), 0, 15)
    return ((q - 8) * d.astype(np.float16).astype(np.float32)).reshape(x.shape)


@pytest.mark.parametrize(("bits", "reference"), [(8, _q8_0), (4, _q4_0)])
def test_quantize_roundtrip_is_ggml_block_arithmetic(bits, reference):
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((8, 96)) * rng.uniform(0.01, 2, (8, 1))).astype(np.float32)
    weight[0, :32] = 0.0  # an all-zero block keeps d = 0
    got = quantize_roundtrip(weight, bits)
    np.testing.assert_allclose(got, reference(weight), rtol=0, atol=1e-6)
    assert not np.array_equal(got, weight)


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def test_quantize_attack_changes_matrices_only_and_never_the_folder(tiny_llama_dir):
    model, tok = load_hf_model(tiny_llama_dir)
    norms = {n: p.detach().clone() for n, p in model.named_parameters() if p.ndim == 1}
    record = Quantize(bits=4).apply(model, tok, Benchmark(name="b"))
    assert record["quantized_tensors"] > 0
    for n, p in model.named_parameters():
        if p.ndim == 1:
            assert p.detach().equal(norms[n]), n
        elif p.shape[-1] % 32 == 0:
            again = quantize_roundtrip(p.detach().numpy(), 4)
            np.testing.assert_allclose(again, p.detach().numpy(), atol=1e-6)  # a fixed point
    before = _digest(tiny_llama_dir)
    calls = []

    def score(net, tokenizer, name):
        from sinklens.evaluate import evaluate_benchmark

        calls.append(name)
        return evaluate_benchmark(net, tokenizer, _tiny_bench(), model_name=name)

    result = run_attack(Quantize(bits=8), tiny_llama_dir, _tiny_bench(), evaluate=score)
    assert _digest(tiny_llama_dir) == before
    assert calls == [tiny_llama_dir.name, f"{tiny_llama_dir.name} +quantize:bits=8"]
    out = result.to_dict()
    assert set(out["before"]) == {"ue", "be", "ut", "row"} and out["attack"]["bits"] == 8
    json.dumps(out)


def _tiny_bench():
    from sinklens.data.formats import KnowMemItem

    km = (KnowMemItem("Where was Mira Tolen born?", "Quorra"),)
    return Benchmark(
        name="b",
        forget_texts=("Mira Tolen was born in Quorra.", "The castle of Arvel stands."),
        knowmem_forget=km,
        knowmem_retain=km,
    )


def test_relearn_trains_on_the_forget_slice(tiny_llama_dir):
    model, tok = load_hf_model(tiny_llama_dir)
    attack = Relearn(steps=12, lr=1e-2, docs=1, batch_size=2)
    assert attack.slice(_tiny_bench()) == ("Mira Tolen was born in Quorra.",)
    record = attack.apply(model, tok, _tiny_bench())
    assert record["documents"] == 1 and record["loss_last"] < 0.5 * record["loss_first"]
    assert not model.training
    with pytest.raises(SinklensError, match="more than the 2 forget documents"):
        Relearn(docs=3).slice(_tiny_bench())
    with pytest.raises(SinklensError, match="relearn needs forget documents"):
        Relearn().slice(Benchmark(name="b"))


def test_parse_attack_refuses_what_an_attack_does_not_take():
    assert parse_attack("quantize") == Quantize(bits=4)
    assert parse_attack("quantize:bits=8") == Quantize(bits=8)
    assert parse_attack("relearn", steps=5, lr=None) == Relearn(steps=5)
    assert parse_attack("relearn:steps=5,lr=1e-3").label == "relearn:steps=5,lr=0.001"
    cases = {
        "quantise": "unknown attack 'quantise'; use one of quantize, relearn",
        "quantize:bits=3": "quantize takes --bits 4 or 8, got 3",
        "quantize:bits=four": "quantize bits='four' is not a number",
        "relearn:bits=4": "relearn does not take --bits",
        "relearn:steps": "needs key=value",
        "relearn:steps=0": "relearn: steps must be >= 1",
    }
    for spec, message in cases.items():
        with pytest.raises(SinklensError, match=message):
            parse_attack(spec)
