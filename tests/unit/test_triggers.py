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
