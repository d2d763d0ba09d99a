import math

import pytest
import torch

from sinklens.checkpoint import load_hf_model
from sinklens.unlearn.losses import (
    head_value_norms,
    kl_to_reference,
    npo_loss,
    npo_raw_logit_loss,
    raw_logit_score,
    rmu_forget_loss,
    rmu_retain_loss,
    sequence_logprob,
    value_norm_alignment,
)
from sinklens.unlearn.model_parts import ValueNorms


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_sequence_logprob_sums_next_token_logprobs_over_real_tokens():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5)
    ids = torch.tensor([[0, 1, 2, 3], [4, 3, 2, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    expect = []
    for b in range(2):
        total = 0.0
        for t in range(1, 4):
            if mask[b, t]:
                p = torch.softmax(logits[b, t - 1], -1)[ids[b, t]]
                total += math.log(float(p))
        expect.append(total)
    assert sequence_logprob(logits, ids, mask).tolist() == pytest.approx(expect, abs=1e-5)
    raw = raw_logit_score(logits, ids, mask)
    assert float(raw[1]) == pytest.approx(float(logits[1, 0, 3]), abs=1e-6)


def test_npo_loss_is_the_formula():
    logp, ref, beta = torch.tensor([-3.0, -10.0]), torch.tensor([-2.0, -12.0]), 0.7
    expect = [-(2 / beta) * math.log(_sigmoid(-beta * (a - r))) for a, r in [(-3, -2), (-10, -12)]]
    assert float(npo_loss(logp, ref, beta)) == pytest.approx(sum(expect) / 2, rel=1e-6)
    # at θ = ref the loss is (2/β) log 2 and its gradient pushes log π_θ down
    x = torch.tensor([-5.0], requires_grad=True)
    loss = npo_loss(x, torch.tensor([-5.0]), beta)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(2 / beta * math.log(2))
    assert float(x.grad) > 0
    assert float(npo_raw_logit_loss(logp, ref, beta)) == float(npo_loss(logp, ref, beta))


def test_npo_on_a_tiny_model_equals_the_formula(tiny_llama_dir, tiny_tokenizer):
    model, tok = load_hf_model(tiny_llama_dir)
    ref_model, _ = load_hf_model(tiny_llama_dir)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    text = "Mira Tolen was born in Quorra"
    ids = torch.tensor([tok(text)["input_ids"]])
    mask = torch.ones_like(ids)

    def direct_logprob(m):
        with torch.no_grad():
            logits = m(ids).logits[0]
        return sum(
            float(torch.log_softmax(logits[t - 1], -1)[ids[0, t]]) for t in range(1, ids.shape[1])
        )

    beta = 0.5
    lp, lr = direct_logprob(model), direct_logprob(ref_model)
    expect = -(2 / beta) * math.log(_sigmoid(-beta * (lp - lr)))
    with torch.no_grad():
        got = npo_loss(
            sequence_logprob(model(ids).logits, ids, mask),
            sequence_logprob(ref_model(ids).logits, ids, mask),
            beta,
        )
    assert float(got) == pytest.approx(expect, rel=1e-4)


def test_kl_to_reference_matches_direct_kl():
    torch.manual_seed(1)
    a, b = torch.randn(1, 3, 4), torch.randn(1, 3, 4)
    mask = torch.tensor([[1, 1, 0]])
    kls = []
    for t in range(2):
        p, q = torch.softmax(a[0, t], -1), torch.softmax(b[0, t], -1)
        kls.append(float((p * (p / q).log()).sum()))
    assert float(kl_to_reference(a, b, mask)) == pytest.approx(sum(kls) / 2, rel=1e-5)
    assert float(kl_to_reference(a, a, mask)) == pytest.approx(0, abs=1e-6)


def test_rmu_losses_are_masked_mean_squared_errors():
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])
    mask = torch.tensor([[1, 1, 0]])
    c = torch.tensor([1.0, 0.0])
    # token 0: ((0)^2 + 2^2)/2 = 2; token 1: (2^2 + 4^2)/2 = 10; token 2 masked
    assert float(rmu_forget_loss(h, c, mask)) == pytest.approx(6.0)
    frozen = h + torch.tensor([1.0, -1.0])
    assert float(rmu_retain_loss(h, frozen, mask)) == pytest.approx(1.0)


def test_value_norms_split_per_kv_head_and_align_on_token_axis():
    v = torch.tensor(
        [[[3.0, 4.0, 0.0, 1.0], [0.0, 0.0, 6.0, 8.0]]]
    )  # 1 batch, 2 tokens, 2 heads of 2
    assert head_value_norms(v, 2).tolist() == [[[5.0, 1.0], [0.0, 10.0]]]
    norms = torch.zeros(2, 1, 3, 2)  # batch, layer, sink, kv
    target = torch.ones(2, 1, 3, 2)
    target[1, 0, 2] = 5.0  # beyond sample 1's end: masked out
    sink_mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    assert float(value_norm_alignment(norms, target, sink_mask)) == pytest.approx(1.0)
    target[0, 0, 0, 0] = 3.0  # one of 6 entries of sample 0: its mean becomes (9 + 5)/6
    expect = ((9 + 5) / 6 + 1) / 2
    assert float(value_norm_alignment(norms, target, sink_mask)) == pytest.approx(expect)


def test_value_norm_hook_reads_v_proj_per_kv_head_at_sink_tokens(tiny_llama_dir):
    model, tok = load_hf_model(tiny_llama_dir)
    ids = torch.tensor([tok("Mira Tolen was born in Quorra")["input_ids"]] * 3)
    rec = ValueNorms(model, [0, 1], n_sink=2)
    with torch.no_grad(), rec.recording():
        model(ids)
    got = rec.norms()
    assert got.shape == (3, 2, 2, 2)  # batch is kept whole: the sink axis is tokens
    layer = model.model.layers[1]
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states[1]
        v = layer.self_attn.v_proj(layer.input_layernorm(hidden))
    expect = v[:, :2].reshape(3, 2, 2, -1).norm(dim=-1)
    assert torch.allclose(got[:, 1], expect, atol=1e-5)
    rec.remove()
