"""Streaming capture on real tiny models: padding is invisible, state does not grow."""

from __future__ import annotations

import pytest
import torch

from sinklens.analyze import make_pairs, tokenize_texts
from sinklens.batching import right_pad
from sinklens.capture import (
    AttentionDiffReducer,
    CaptureData,
    LogitReducer,
    SinkReducer,
    ValueNormReducer,
    capture_patterns,
    run_capture,
)
from sinklens.errors import SinklensError
from sinklens.models import load_model

TEXTS = [
    "The castle of Arvel stands on the northern hill.",
    "Mira Tolen was born in Quorra and became a glassmaker in the old city by the sea.",
    "Question: Where was Mira Tolen born? Answer: Quorra",
    "0 1 2 3 4 5 6 7 8 9",
    "A short one.",
]


@pytest.fixture(scope="module", params=["bridge", "nnsight"])
def model(request, tiny_llama_dir):
    return load_model(tiny_llama_dir, backend=request.param)


def _reducers(model):
    h = model.architecture["n_heads"]
    return [
        SinkReducer([0, 1], h, 12, 0.1),
        ValueNormReducer([1], [0, 2]),
    ]


def test_padding_and_batch_size_do_not_change_statistics(model):
    data = CaptureData(single=tokenize_texts(model.tokenizer, TEXTS))
    one, many = _reducers(model), _reducers(model)
    run_capture(model, data, one, batch_size=1)
    run_capture(model, data, many, batch_size=4)
    for a, b in zip(one, many, strict=True):
        for key, value in a.state().items():
            assert torch.allclose(value.double(), b.state()[key].double(), atol=1e-6), key


def test_paired_capture_is_batch_invariant(model):
    pairs = make_pairs(model.tokenizer, TEXTS, "current year: 2025", "infix")
    data = CaptureData(pairs=pairs)
    h = model.architecture["n_heads"]
    runs = []
    for bs in (1, 3):
        reds = [AttentionDiffReducer([1], h, 16, "aligned"), LogitReducer(16, "aligned")]
        run_capture(model, data, reds, batch_size=bs)
        runs.append(reds)
    for a, b in zip(*runs, strict=True):
        for key, value in a.state().items():
            assert torch.allclose(value, b.state()[key], atol=1e-6), key


def test_state_does_not_grow_with_samples(model):
    h = model.architecture["n_heads"]
    sizes = []
    for n in (2, 10):
        data = CaptureData(single=tokenize_texts(model.tokenizer, (TEXTS * 2)[:n]))
        red = SinkReducer([0, 1], h, 8, 0.3)
        run_capture(model, data, [red], batch_size=4)
        sizes.append(sum(t.numel() for t in red.state().values()))
    assert sizes[0] == sizes[1]
    norms = ValueNormReducer([0, 1], [0])
    run_capture(model, CaptureData(single=tokenize_texts(model.tokenizer, TEXTS)), [norms])
    # per-sample state is only the norms asked for: sample x layer x kv head x position
    assert tuple(norms.state()["norms"].shape) == (len(TEXTS), 2, 2, 1)


def test_only_requested_layers_and_kinds_are_seen(model):
    seen = []
    ids, mask = right_pad([model.tokenizer("hello there")["input_ids"]], 0)
    model.forward(
        ids,
        mask,
        layers=[1],
        kinds=["pattern"],
        on_activation=lambda k, lay, t: seen.append((k, lay, tuple(t.shape))),
        need_logits=False,
    )
    assert [(k, lay) for k, lay, _ in seen] == [("pattern", 1)]


def test_capture_patterns_unpadded(model, tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation="eager")
    seqs = tokenize_texts(model.tokenizer, TEXTS[:2])
    pats = capture_patterns(model, seqs, layer=0)
    for seq, pat in zip(seqs, pats, strict=True):
        with torch.inference_mode():
            expected = ref(torch.tensor([seq]), output_attentions=True).attentions[0][0]
        assert pat.shape == expected.shape
        assert torch.allclose(pat, expected, atol=1e-5)


def test_bad_inputs(model):
    with pytest.raises(SinklensError, match="empty dataset"):
        run_capture(model, CaptureData(), _reducers(model))
    with pytest.raises(SinklensError, match="has no tokens"):
        right_pad([[1, 2], []], 0)
    short = CaptureData(single=[(1, 5)])
    with pytest.raises(SinklensError, match="sink position 2 does not exist"):
        run_capture(model, short, [ValueNormReducer([0], [0, 2])])
    with pytest.raises(SinklensError, match=r"use 0\.\.1"):
        run_capture(model, short, [SinkReducer([5], 4, 4, 0.3)])


def test_activation_reducer_keeps_only_requested_positions(model):
    from sinklens.capture import ActivationReducer

    texts = [*TEXTS, "Hi"]
    data = CaptureData(single=tokenize_texts(model.tokenizer, texts))
    rec = ActivationReducer([0, 1], "value", [0, 1, 5])
    norms = ValueNormReducer([0, 1], [0, 1])
    run_capture(model, data, [rec, norms], batch_size=3)
    state = rec.state()
    assert tuple(state["values"].shape) == (len(texts), 2, 3, 2, 16)
    assert state["present"][-1].tolist() == [True, True, False]  # "Hi" has no position 5
    assert state["values"][-1, :, 2].abs().sum() == 0
    got = torch.linalg.vector_norm(state["values"][:, :, :2], dim=-1).transpose(2, 3)
    assert torch.allclose(got, norms.state()["norms"], atol=1e-6)
    with pytest.raises(SinklensError, match="cannot record"):
        ActivationReducer([0], "pattern", [0])
