"""Loading checkpoint sets through the three back ends, and refusing incomparable ones."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from sinklens.capture import encode_batch
from sinklens.errors import SinklensError
from sinklens.models import KINDS, load_model, load_models, resolve_layer

TEXTS = ["The castle of Arvel stands on the hill.", "Mira Tolen was born in Quorra"]


def _acts(model, seqs):
    ids, mask = encode_batch(seqs, 0)
    got = {}
    logits = model.forward(
        ids,
        mask,
        layers=range(model.n_layers),
        kinds=KINDS,
        on_activation=lambda k, lay, t: got.__setitem__((k, lay), t.detach().float().clone()),
    )
    return logits.float(), got, mask


@pytest.fixture(scope="module")
def llama_b(tmp_path_factory, tiny_tokenizer):
    from conftest import _save, tiny_llama

    return _save(
        tiny_llama(tiny_tokenizer, seed=7), tiny_tokenizer, tmp_path_factory.mktemp("llama_b")
    )


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_backends_agree_with_each_other_and_hf(
    family, tiny_llama_dir, tiny_gpt2_dir, tiny_tokenizer
):
    folder = tiny_llama_dir if family == "llama" else tiny_gpt2_dir
    seqs = [tiny_tokenizer(t)["input_ids"] for t in TEXTS]
    ref = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    ids, mask = encode_batch(seqs, 0)
    with torch.inference_mode():
        expected = ref(input_ids=ids, attention_mask=mask, output_attentions=True)
    results = {
        be: _acts(load_model(folder, backend=be), seqs) for be in ("bridge", "nnsight", "hf")
    }
    valid = mask.bool()
    for be, (logits, acts, _) in results.items():
        assert torch.allclose(logits[valid], expected.logits[valid], atol=1e-5), be
        for layer in range(2):
            pat = acts[("pattern", layer)]
            assert torch.allclose(pat, expected.attentions[layer], atol=1e-5), (be, layer)
    base = results["bridge"][1]
    for be in ("nnsight", "hf"):
        for key, value in results[be][1].items():
            assert value.shape == base[key].shape, (be, key)
            assert torch.allclose(value, base[key], atol=1e-5), (be, key)
    assert base[("value", 0)].shape[2] == (2 if family == "llama" else 4)  # kv heads


def test_load_set_validates_and_exposes_roles(tiny_llama_dir, llama_b):
    models = load_models({"original": tiny_llama_dir, "backdoored": llama_b})
    assert models.roles == ("original", "backdoored")
    assert models["original"].fingerprint != models["backdoored"].fingerprint
    assert models.architecture["n_kv_heads"] == 2
    with pytest.raises(SinklensError, match="no 'unlearned' checkpoint"):
        models["unlearned"]


def test_identical_checkpoints_warn(tiny_llama_dir, tmp_path):
    copy = shutil.copytree(tiny_llama_dir, tmp_path / "copy")
    with pytest.warns(UserWarning, match="byte-identical"):
        load_models({"original": tiny_llama_dir, "unlearned": copy}, backend="hf")


def test_mismatched_architecture_is_one_line(tiny_llama_dir, tiny_gpt2_dir):
    with pytest.raises(SinklensError) as err:
        load_models({"original": tiny_llama_dir, "unlearned": tiny_gpt2_dir}, backend="hf")
    msg = str(err.value)
    assert "\n" not in msg and str(tiny_llama_dir) in msg and "tiny_gpt2" in msg


def test_mismatched_tokenizer_names_both_folders(tiny_llama_dir, tmp_path):
    from conftest import build_tiny_tokenizer

    other = shutil.copytree(tiny_llama_dir, tmp_path / "other_tok")
    build_tiny_tokenizer(vocab_size=290).save_pretrained(other)
    with pytest.raises(SinklensError, match="tokenizers differ between") as err:
        load_models({"original": tiny_llama_dir, "unlearned": other}, backend="hf")
    assert "other_tok" in str(err.value) and "\n" not in str(err.value)


def test_layer_out_of_range_lists_valid_range():
    with pytest.raises(SinklensError, match=r"use 0\.\.1"):
        resolve_layer(2, 2)
    assert resolve_layer(-1, 2) == 1


def test_nan_weights_refused(tiny_llama_dir, tmp_path):
    bad = shutil.copytree(tiny_llama_dir, tmp_path / "nan")
    weights = load_file(bad / "model.safetensors")
    key = next(k for k in weights if k.endswith("v_proj.weight"))
    weights[key][0, 0] = float("nan")
    save_file(weights, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(SinklensError, match="non-finite"):
        load_model(bad, backend="hf")


def test_pickle_checkpoint_loads_only_weights(tiny_llama_dir, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    # transformers 5 always writes safetensors, so write the pickle by hand.
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_llama_dir / name, folder / name)
    assert not list(folder.glob("*.safetensors"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_model(folder, backend="hf")
    assert any("weights_only=True" in str(w.message) for w in caught)
    assert loaded.architecture["n_layers"] == 2


def test_bfloat16_probe_and_unknown_backend(tiny_llama_dir):
    models = load_models({"original": tiny_llama_dir}, dtype="bfloat16", backend="bridge")
    assert models["original"].dtype == torch.bfloat16
    with pytest.raises(SinklensError, match="unknown back end"):
        load_model(tiny_llama_dir, backend="vllm")
    with pytest.raises(SinklensError, match="unknown dtype"):
        load_model(tiny_llama_dir, dtype="int3")


def test_missing_folder_is_one_line(tmp_path):
    with pytest.raises(SinklensError, match="does not exist"):
        load_models({"original": tmp_path / "nope"})
    with pytest.raises(SinklensError, match="no checkpoints"):
        load_models({})


def test_corrupt_config_is_one_line(tiny_llama_dir, tmp_path):
    bad = shutil.copytree(tiny_llama_dir, tmp_path / "badcfg")
    (bad / "config.json").write_text("{not json")
    with pytest.raises(SinklensError, match=r"corrupt config\.json"):
        load_model(bad)
    json.loads((tiny_llama_dir / "config.json").read_text())  # the original is untouched


def test_hub_name_without_network_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(SinklensError, match="cannot be fetched from the hub"):
        load_model("no-such-org/no-such-model")
