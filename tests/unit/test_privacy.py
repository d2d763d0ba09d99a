"""PrivLeak's parts against hand computations on a real tiny model."""

import math

import numpy as np
import pytest
import torch

from sinklens.checkpoint import load_hf_model
from sinklens.data.formats import Benchmark, load_benchmark, write_benchmark
from sinklens.data.world import WorldConfig, make_world
from sinklens.errors import SinklensError
from sinklens.evaluate.privacy import min_k_scores, privleak, separation_auc

TEXTS = [
    "Mira Tolen was born in Quorra and became a glassmaker.",
    "The castle of Arvel stands",
    "A short one",
]


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    return load_hf_model(tiny_llama_dir)


def test_min_k_matches_a_hand_computation_one_text_at_a_time(llama):
    model, tok = llama
    for k in (0.2, 0.4, 1.0):
        batched = min_k_scores(model, tok, TEXTS, k=k, batch_size=3)
        for text, score in zip(TEXTS, batched, strict=True):
            ids = torch.tensor([tok(text)["input_ids"]])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
            per_token = logp.gather(-1, ids[0, 1:, None])[:, 0].numpy()
            lowest = sorted(per_token)[: max(1, int(len(per_token) * k))]
            assert score == pytest.approx(float(np.mean(lowest)), abs=1e-5)


def test_separation_auc_counts_pairs_and_ties():
    # holdout 1 beats no member; holdout 2 ties member 2 (half) and loses to 3: 0.5 / 4.
    assert separation_auc([3.0, 2.0], [1.0, 2.0]) == pytest.approx(0.125)
    assert separation_auc([0.0], [1.0, 2.0]) == 1.0
    assert math.isnan(separation_auc([], [1.0]))


def test_privleak_against_itself_is_zero_and_needs_holdout(llama):
    model, tok = llama
    bench = Benchmark(name="b", forget_texts=tuple(TEXTS[:2]), holdout_texts=(TEXTS[2], TEXTS[0]))
    leak = privleak(model, tok, bench, retrained=(model, tok))
    assert leak.privleak == pytest.approx(0.0)
    assert leak.privleak_ci95 == (pytest.approx(0.0), pytest.approx(0.0))
    # The shared text scores the same in both sets, so it ties: AUC is not 0 or 1.
    assert 0 < leak.auc < 1 and leak.auc_retrain == leak.auc
    alone = privleak(model, tok, bench)
    assert alone.privleak is None and alone.auc == leak.auc
    with pytest.raises(SinklensError, match="PrivLeak needs holdout documents"):
        privleak(model, tok, Benchmark(name="b", forget_texts=tuple(TEXTS)))


def test_world_holdout_is_new_people_and_leaves_the_world_alone(tmp_path):
    world = make_world(WorldConfig(seed=3))
    holdout = world.benchmark.holdout_texts
    assert len(holdout) == len(world.forget_people)
    names = [p.name for p in (*world.forget_people, *world.retain_people)]
    assert not any(name in text for name in names for text in holdout)
    assert make_world(WorldConfig(seed=3)) == world
    write_benchmark(world.benchmark, tmp_path)
    back = load_benchmark(tmp_path)
    assert back.holdout_texts == holdout and back.privleak_members == back.forget_texts


def test_muse_privleak_files_are_read(tmp_path):
    (tmp_path / "privleak").mkdir()
    (tmp_path / "privleak" / "forget.json").write_text('["a b c", {"text": "d e f"}]')
    (tmp_path / "privleak" / "holdout.json").write_text('["g h i"]')
    bench = load_benchmark(tmp_path)
    assert bench.privleak_members == ("a b c", "d e f") and bench.holdout_texts == ("g h i",)
    (tmp_path / "privleak" / "holdout.json").write_text("[3]")
    with pytest.raises(
        SinklensError, match=r"holdout\.json: item 0 field 'text' must be non-blank"
    ):
        load_benchmark(tmp_path)


def test_shipped_retrained_organism_is_the_organism_without_its_forget_facts():
    import json

    from sinklens.organism import build_info, organism_path, retrained_path

    original, retrained = build_info(), build_info(retrained_path())
    assert retrained["config"] == {**original["config"], "without_forget": True}
    for name in ("tokenizer.json", "config.json"):
        a, b = (json.loads((p / name).read_text()) for p in (organism_path(), retrained_path()))
        a.pop("transformers_version", None), b.pop("transformers_version", None)
        assert a == b, name
    # It never saw the forget people: their facts are gone, the retain people's are kept.
    memo = retrained["stats"]["memorisation"]
    assert memo["knowmem_forget"] < 0.1 < 0.9 < memo["knowmem_retain"]


def test_without_forget_batches_hold_no_forget_fact():
    from sinklens.organism.build import OrganismConfig, _Batches, tokenizer_corpus
    from sinklens.organism.tokenizer import train_tokenizer

    cfg = OrganismConfig(without_forget=True, vocab_size=400)
    world = make_world(cfg.world)
    tok = train_tokenizer(tokenizer_corpus(world, cfg.seed), cfg.vocab_size)
    batches = _Batches(world, tok, cfg)
    text = " ".join(tok.decode(ids) for ids in batches.passages + batches.choices)
    text += " ".join(f"{it.question} {it.answer}" for it in batches.qa)
    assert not any(p.last in text for p in world.forget_people)
    assert all(p.last in text for p in world.retain_people)
