"""Loading checkpoint sets through the three back ends, and refusing incomparable ones."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from sinklens.batching import right_pad
from sinklens.errors import SinklensError
from sinklens.models import KINDS, load_model, load_models, resolve_layer

TEXTS = ["The castle of Arvel stands on the hill.", "Mira Tolen was born in Quorra"]


def _acts(model, seqs):
    ids, mask = right_pad(seqs, 0)
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


@pytest.fixture(scope="module")
def neox_dir(tmp_path_factory, tiny_tokenizer):
    """GPT-NeoX: fused query_key_value laid out per head, [head, (q, k, v), d_head]."""
    from conftest import _save, tiny_neox

    model = tiny_neox(tiny_tokenizer)
    with torch.no_grad():  # biases make a wrong slice of the fused output easier to see
        for layer in model.gpt_neox.layers:
            layer.attention.query_key_value.bias.normal_(0, 0.5)
    return _save(model, tiny_tokenizer, tmp_path_factory.mktemp("tiny_neox"))


@pytest.mark.parametrize("family", ["llama", "gpt2", "neox"])
def test_backends_agree_with_each_other_and_hf(
    family, tiny_llama_dir, tiny_gpt2_dir, neox_dir, tiny_tokenizer
):
    folder = {"llama": tiny_llama_dir, "gpt2": tiny_gpt2_dir, "neox": neox_dir}[family]
    seqs = [tiny_tokenizer(t)["input_ids"] for t in TEXTS]
    ref = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    ids, mask = right_pad(seqs, 0)
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


@pytest.mark.parametrize("backend", ["hf", "nnsight", "bridge"])
def test_neox_values_head_outputs_and_sinks_match_the_naive_reference(
    backend, neox_dir, tiny_tokenizer
):
    from sinklens.analyze import sink_statistics, tokenize_texts
    from sinklens.metrics.reference import _values, reference_sinks, reference_value_norms

    ref = AutoModelForCausalLM.from_pretrained(neox_dir, attn_implementation="eager").eval()
    models = load_models({"original": neox_dir}, backend=backend)
    model = models["original"]
    seqs = [tiny_tokenizer(t)["input_ids"] for t in TEXTS]
    _, acts, _ = _acts(model, seqs)
    for b, ids in enumerate(seqs):
        n = len(ids)
        with torch.inference_mode():
            out = ref(torch.tensor([ids]), output_attentions=True, output_hidden_states=True)
        for layer in range(2):
            v = _values(ref, out.hidden_states[layer], layer)  # pos kv d_head
            assert torch.allclose(acts[("value", layer)][b, :n], v, atol=1e-5), layer
            pattern = out.attentions[layer][0]
            z = torch.einsum("hqk,khd->qhd", pattern, v)  # per-head output, before dense
            assert torch.allclose(acts[("head_out", layer)][b, :n], z, atol=1e-5), layer
            assert torch.allclose(acts[("pattern", layer)][b, :, :n, :n], pattern, atol=1e-5)
    texts = [*TEXTS, "Short text."]
    res = sink_statistics(models, texts, window=12, epsilon=0.2, batch_size=2)
    expected = reference_sinks(ref, tokenize_texts(models.tokenizer, texts), [0, 1], 12, 0.2)
    assert torch.allclose(res.alpha["original"].double(), expected["alpha_mean"], atol=1e-5)
    assert torch.allclose(res.head_norm["original"].double(), expected["head_norm"], atol=1e-5)
    norms = reference_value_norms(ref, seqs, [1], [0, 3])[:, 0]  # sample kv pos
    got = acts[("value", 1)][:, [0, 3]].norm(dim=-1).transpose(1, 2)
    assert torch.allclose(got.double(), norms, atol=1e-5)


def test_neox_values_are_not_read_with_gpt2s_layout(neox_dir, tiny_tokenizer):
    """[q | k | v] (GPT-2) would be a plausible, silently wrong reading of NeoX's output."""
    model = load_model(neox_dir, backend="hf")
    _, acts, _ = _acts(model, [tiny_tokenizer(TEXTS[0])["input_ids"]])
    ref = AutoModelForCausalLM.from_pretrained(neox_dir).eval()
    captured = {}
    qkv = ref.gpt_neox.layers[0].attention.query_key_value
    handle = qkv.register_forward_hook(lambda m, a, out: captured.setdefault("qkv", out))
    with torch.inference_mode():
        ref(torch.tensor([tiny_tokenizer(TEXTS[0])["input_ids"]]))
    handle.remove()
    gpt2_layout = captured["qkv"][..., 128:].reshape(*captured["qkv"].shape[:2], 4, 16)
    assert not torch.allclose(acts[("value", 0)], gpt2_layout, atol=1e-3)


def _family_model(name: str, tokenizer):
    import transformers as T

    common = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    small = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    configs = {
        "phi": (T.PhiConfig, T.PhiForCausalLM, {**small, "intermediate_size": 128}),
        "phi3": (
            T.Phi3Config,
            T.Phi3ForCausalLM,
            {**small, "num_key_value_heads": 2, "intermediate_size": 128, "pad_token_id": 0},
        ),
        "gptj": (
            T.GPTJConfig,
            T.GPTJForCausalLM,
            {"n_embd": 64, "n_layer": 2, "n_head": 4, "rotary_dim": 8},
        ),
        "gpt_neo": (
            T.GPTNeoConfig,
            T.GPTNeoForCausalLM,
            {
                "hidden_size": 64,
                "num_layers": 2,
                "num_heads": 4,
                "attention_types": [[["global", "local"], 1]],
                "window_size": 8,
            },
        ),
        "bloom": (
            T.BloomConfig,
            T.BloomForCausalLM,
            {"hidden_size": 64, "n_layer": 2, "n_head": 4},
        ),
        "gemma": (
            T.GemmaConfig,
            T.GemmaForCausalLM,
            {**small, "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 128},
        ),
    }
    config_cls, model_cls, kwargs = configs[name]
    torch.manual_seed(4)
    return model_cls(config_cls(**common, **kwargs)).eval()


@pytest.mark.parametrize("name", ["phi", "phi3", "gptj", "gpt_neo", "bloom", "gemma"])
def test_other_bridge_families_agree_on_every_back_end(name, tiny_tokenizer, tmp_path):
    """Families the bridge boots: Phi (`dense`), Phi-3 (fused `qkv_proj`, GQA), GPT-J
    (`out_proj`), GPT-Neo (`attn.attention`), Bloom (per-head fused qkv), Gemma."""
    from conftest import _save

    folder = _save(_family_model(name, tiny_tokenizer), tiny_tokenizer, tmp_path / name)
    seqs = [tiny_tokenizer(t)["input_ids"] for t in TEXTS]
    results = {
        be: _acts(load_model(folder, backend=be), seqs) for be in ("bridge", "nnsight", "hf")
    }
    valid = results["bridge"][2].bool()
    for be in ("nnsight", "hf"):
        assert torch.allclose(results[be][0][valid], results["bridge"][0][valid], atol=1e-5)
        for key, value in results["bridge"][1].items():
            assert results[be][1][key].shape == value.shape, (be, key)
            assert torch.allclose(results[be][1][key], value, atol=1e-5), (be, key)


def test_unknown_fused_layout_is_refused_naming_the_architecture(tiny_tokenizer, tmp_path):
    from conftest import _save
    from transformers import FalconConfig, FalconForCausalLM

    config = FalconConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        bos_token_id=tiny_tokenizer.bos_token_id,
        eos_token_id=tiny_tokenizer.eos_token_id,
    )
    folder = _save(FalconForCausalLM(config).eval(), tiny_tokenizer, tmp_path / "falcon")
    for backend in ("hf", "nnsight"):
        with pytest.raises(SinklensError, match=r"FalconForCausalLM.*falcon.*--backend bridge"):
            load_model(folder, backend=backend)


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
