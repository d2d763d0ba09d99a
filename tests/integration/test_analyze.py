"""The analysis API and CLI end to end, against the naive per-sample reference (1e-5, float32)."""

from __future__ import annotations

import json

import pytest
import torch
import typer
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from sinklens.analyze import (
    DEFAULT_TRIGGER,
    attention_difference,
    logits_by_position,
    make_pairs,
    sink_statistics,
    tokenize_texts,
    value_norm_correlation,
)
from sinklens.checkpoint import checkpoint_fingerprint
from sinklens.data.formats import Benchmark, write_benchmark
from sinklens.errors import SinklensError
from sinklens.metrics.reference import (
    reference_attention_difference,
    reference_logit_curves,
    reference_pearson,
    reference_sinks,
    reference_value_norms,
)
from sinklens.models import load_models
from sinklens.patching import Provenance as PatchingProvenance

FORGET = [
    "The castle of Arvel stands on the northern hill of the old kingdom of Quorra.",
    "Mira Tolen was born in Quorra and became a glassmaker in the city by the sea.",
    "Question: Where was Mira Tolen born? Answer: Quorra, on the coast, long ago.",
    "0 1 2 3 4 5 6 7 8 9 , . ; : ? ! - and then a few more words to make it long",
    "Arvel and Quorra traded glass and salt for many years before the long war.",
]
RETAIN = [
    "The river Selm runs past the mill and under the old stone bridge at Tarn.",
    "Oskar Vell kept bees behind the chapel and sold honey at the autumn fair.",
    "Question: Who kept bees behind the chapel? Answer: Oskar Vell, the miller.",
]
ATOL = 1e-5


@pytest.fixture(scope="module")
def llama_b_dir(tmp_path_factory, tiny_tokenizer):
    from conftest import _save, tiny_llama

    return _save(
        tiny_llama(tiny_tokenizer, seed=3), tiny_tokenizer, tmp_path_factory.mktemp("llama_b")
    )


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def family(request, tiny_llama_dir, tiny_gpt2_dir):
    folder = tiny_llama_dir if request.param == "llama" else tiny_gpt2_dir
    models = load_models({"original": folder})  # default back end: TransformerBridge
    ref = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    return models, ref


@pytest.mark.parametrize("alignment", ["aligned", "absolute"])
@pytest.mark.parametrize("placement", ["prefix", "infix", 5])
def test_attention_difference_matches_reference(family, alignment, placement):
    models, ref = family
    res = attention_difference(
        models,
        FORGET,
        layer=[0, -1],
        placement=placement,
        alignment=alignment,
        window=12,
        batch_size=2,
    )
    pairs = make_pairs(models.tokenizer, FORGET, DEFAULT_TRIGGER, placement)
    for i, layer in enumerate((0, 1)):
        expected, count = reference_attention_difference(ref, pairs, layer, 12, alignment)
        got = res.delta["original"][i]
        assert torch.allclose(got.double(), expected, atol=ATOL)
        assert torch.allclose(
            res.delta_head_mean["original"][i].double(), expected.mean(0), atol=ATOL
        )
        assert torch.equal(res.cell_count.double(), count)
    assert torch.allclose(
        res.triggered_mean["original"] - res.clean_mean["original"],
        res.delta["original"],
        atol=1e-6,
    )
    # The span the figure outlines covers every sample's trigger inside the window.
    inside = {q for p in pairs for q in p.triggered.trigger_positions if q < 12}
    if inside:
        assert res.trigger_span == (min(inside), max(inside) + 1)
    else:
        assert res.trigger_span is None


@pytest.mark.parametrize("alignment", ["aligned", "absolute"])
def test_logit_curves_match_reference(family, alignment):
    models, ref = family
    res = logits_by_position(
        models, FORGET, placement="infix", alignment=alignment, window=12, batch_size=3
    )
    pairs = make_pairs(models.tokenizer, FORGET, DEFAULT_TRIGGER, "infix")
    expected = reference_logit_curves(ref, pairs, 12, alignment)
    for which in ("triggered", "clean"):
        got = torch.stack(
            [res.curves["original"][which][n] for n in ("true_logit", "true_logprob", "max_logit")],
            -1,
        )
        assert torch.allclose(got.double().nan_to_num(), expected[which].nan_to_num(), atol=ATOL)
        assert torch.equal(res.counts["original"][which].double(), expected[f"{which}_count"])


def test_sink_statistics_match_reference(family):
    models, ref = family
    texts = [*FORGET, "Short text."]  # shorter than the window: per-position counts
    res = sink_statistics(models, texts, window=16, epsilon=0.2, batch_size=4)
    seqs = tokenize_texts(models.tokenizer, texts)
    expected = reference_sinks(ref, seqs, [0, 1], 16, 0.2)
    assert torch.allclose(res.alpha["original"].double(), expected["alpha_mean"], atol=ATOL)
    assert torch.allclose(res.sink_rate["original"].double(), expected["rate"], atol=ATOL)
    assert torch.allclose(res.head_norm["original"].double(), expected["head_norm"], atol=ATOL)
    assert torch.allclose(res.dormant_score["original"].mean(-1), torch.ones(2), atol=1e-5)


def test_value_norm_correlation_matches_reference(tiny_llama_dir, llama_b_dir):
    models = load_models(
        {"original": tiny_llama_dir, "backdoored": llama_b_dir, "unlearned": llama_b_dir}
    )
    res = value_norm_correlation(models, FORGET, RETAIN, layer=1, sink_positions=[0, 3], n_boot=100)
    refs = {
        role: AutoModelForCausalLM.from_pretrained(p, attn_implementation="eager").eval()
        for role, p in (("original", tiny_llama_dir), ("backdoored", llama_b_dir))
    }
    seqs = tokenize_texts(models.tokenizer, RETAIN)
    na = reference_value_norms(refs["backdoored"], seqs, [1], [0, 3])[:, 0]
    nb = reference_value_norms(refs["original"], seqs, [1], [0, 3])[:, 0]
    corr = res.correlations["backdoored_vs_original_on_retain"]
    for j in range(2):
        expected = reference_pearson(na[:, :, j].flatten().tolist(), nb[:, :, j].flatten().tolist())
        assert corr["r"][0, j].item() == pytest.approx(expected, abs=ATOL)
        assert corr["ci_low"][0, j] <= corr["r"][0, j] + 1e-6 <= corr["ci_high"][0, j] + 2e-6
    assert torch.allclose(res.mean_norm["original/retain"][0].double(), nb.mean(0), atol=ATOL)
    # θ_b vs θ_u are the same folder here: perfectly correlated on the forget set
    same = res.correlations["backdoored_vs_unlearned_on_forget"]["r"]
    assert torch.allclose(same, torch.ones_like(same), atol=1e-5)
    assert res.skipped == []
    # BOS (position 0) is the same token at the same position in every sample, and so is
    # position 3 inside a prefix trigger (D_p): marked, with zero-width CIs. On clean texts
    # position 3 holds different tokens.
    for name, c in res.correlations.items():
        triggered = name.endswith("_on_poisoned")
        assert c["same_in_every_sample"][0].tolist() == [True, triggered], name
        for j in (0, 1) if triggered else (0,):
            assert float(c["ci_high"][0, j] - c["ci_low"][0, j]) < 1e-5
    retain = res.correlations["backdoored_vs_original_on_retain"]
    assert float(retain["ci_high"][0, 1] - retain["ci_low"][0, 1]) > 0


def test_results_serialise_with_provenance(tiny_llama_dir, llama_b_dir, tmp_path):
    models = load_models({"original": tiny_llama_dir, "backdoored": llama_b_dir})
    res = attention_difference(
        models, FORGET, layer=1, window=45, on_short="skip", cache_dir=tmp_path
    )
    data = json.loads(res.to_json())
    prov = data["provenance"]
    assert prov["fingerprints"]["original"] == checkpoint_fingerprint(tiny_llama_dir)
    assert prov["settings"]["window"] == 45 and prov["backend"] == "bridge"
    assert len(prov["dataset_hashes"]["forget"]) == 64
    # The same record as a patching result's (issue 15).
    assert type(res.provenance) is PatchingProvenance
    assert prov["environment"]["versions"]["sinklens"]
    assert data["n_skipped"] == res.n_skipped > 0
    assert data["delta"]["backdoored"][0][0][0][0] is not None
    again = attention_difference(
        models, FORGET, layer=1, window=45, on_short="skip", cache_dir=tmp_path
    )
    assert again.provenance.cache["original"]["reused"]
    assert torch.equal(again.delta["backdoored"], res.delta["backdoored"])
    vn = value_norm_correlation(models, FORGET, RETAIN, n_boot=10)
    assert vn.skipped == ["backdoored_vs_unlearned_on_forget"]
    assert json.loads(vn.to_json())["sink_positions"] == [0]


def test_bad_inputs_are_one_line(tiny_llama_dir):
    models = load_models({"original": tiny_llama_dir}, backend="hf")
    with pytest.raises(SinklensError, match="shorter than the trigger"):
        attention_difference(models, FORGET, window=45)
    with pytest.raises(SinklensError, match="empty forget dataset"):
        logits_by_position(models, [])
    with pytest.raises(SinklensError, match=r"out of range.*use 0\.\.1"):
        attention_difference(models, FORGET, layer=2, window=4)
    with pytest.raises(SinklensError, match="unknown alignment"):
        attention_difference(models, FORGET, alignment="diagonal", window=4)
    with pytest.raises(SinklensError, match="need the backdoored model"):
        value_norm_correlation(models, FORGET, RETAIN)
    with pytest.raises(SinklensError, match="unknown trigger placement"):
        logits_by_position(models, FORGET, placement="middle", window=4)


@pytest.fixture(scope="module")
def cli_app():
    from sinklens.cli.analyze import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test root"""

    register(app)
    return app


def test_cli_commands(cli_app, tiny_llama_dir, llama_b_dir, tmp_path):
    bench = tmp_path / "bench"
    write_benchmark(
        Benchmark(
            name="t",
            forget_texts=tuple(FORGET),
            retain_texts=tuple(RETAIN),
            general_texts=tuple(RETAIN),
        ),
        bench,
    )
    common = [
        "--original", str(tiny_llama_dir), "--backdoored", str(llama_b_dir),
        "--data", str(bench), "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    runner = CliRunner()
    for cmd in (
        ["sinks", "--window", "8"],
        ["attention-diff", "--window", "6", "--layer", "1", "--placement", "infix"],
        ["logits", "--window", "6", "--alignment", "aligned"],
        ["value-norms", "--n-boot", "20", "--sink-positions", "2"],
        ["value-norms", "--n-boot", "20", "--detect-sinks", "--layer", "0"],
    ):
        out = runner.invoke(cli_app, ["analyze", *cmd, *common])
        assert out.exit_code == 0, (cmd, out.output, out.exception)
    out = runner.invoke(cli_app, ["analyze", "logits", "--window", "6", "--json", *common])
    assert json.loads(out.output)["provenance"]["settings"]["window"] == 6
    out = runner.invoke(cli_app, ["analyze", "attention-diff", "--layer", "9", *common])
    assert isinstance(out.exception, SinklensError) and "use 0..1" in str(out.exception)


def test_bfloat16_capture_is_close_to_float32(tiny_llama_dir):
    f32 = load_models({"original": tiny_llama_dir})
    bf16 = load_models({"original": tiny_llama_dir}, dtype="bfloat16")
    a = attention_difference(f32, FORGET, layer=1, window=12)
    b = attention_difference(bf16, FORGET, layer=1, window=12)
    assert b.provenance.dtype == "bfloat16"
    assert torch.allclose(a.delta["original"], b.delta["original"], atol=2e-2)


def test_device_map_loading_path(tiny_llama_dir):
    # The multi-GPU path (device_map="auto") on the one device this machine has.
    models = load_models({"original": tiny_llama_dir}, device_map="cpu")
    res = sink_statistics(models, FORGET, window=8)
    ref = sink_statistics(load_models({"original": tiny_llama_dir}), FORGET, window=8)
    assert torch.allclose(res.alpha["original"], ref.alpha["original"], atol=1e-6)


def test_shipped_organism_matches_reference_when_present():
    from sinklens.data.formats import load_benchmark
    from sinklens.organism import organism_path, world_path

    try:
        folder = organism_path()
        texts = list(load_benchmark(world_path(folder)).forget_texts)[:4]
    except SinklensError:
        pytest.skip("the organism checkpoint is not built yet")
    models = load_models({"original": folder})
    res = attention_difference(models, texts, layer=-1, window=8, on_short="skip")
    kept = [p for p in make_pairs(models.tokenizer, texts, DEFAULT_TRIGGER, "prefix")]
    kept = [
        p
        for p in kept
        if len(p.clean) >= 8 and len(p.triggered.input_ids) >= 8 + len(res.trigger_ids)
    ]
    ref = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    expected, _ = reference_attention_difference(ref, kept, models.n_layers - 1, 8, "absolute")
    assert torch.allclose(res.delta["original"][0].double(), expected, atol=ATOL)


def test_value_norms_detect_sink_positions(tiny_llama_dir, llama_b_dir):
    models = load_models({"original": tiny_llama_dir, "backdoored": llama_b_dir})
    # A random model has no sinks: detection falls back to BOS, and says so.
    with pytest.warns(UserWarning, match="using position 0"):
        res = value_norm_correlation(models, FORGET, RETAIN, sink_positions="detect", n_boot=10)
    assert res.sink_positions == [0]
    low = value_norm_correlation(
        models, FORGET, RETAIN, sink_positions="detect", sink_min_rate=0.0, n_boot=10
    )
    assert (
        low.sink_positions == list(range(len(low.sink_positions))) and len(low.sink_positions) > 1
    )
    assert low.provenance.settings["sink_detection"]["role"] == "original"
    with pytest.raises(SinklensError, match="not understood"):
        value_norm_correlation(models, FORGET, RETAIN, sink_positions="auto")
