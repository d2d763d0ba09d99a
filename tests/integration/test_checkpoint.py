import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from sinklens.checkpoint import (
    checkpoint_fingerprint,
    load_hf_model,
    model_architecture,
    save_hf_model,
    validate_checkpoint_folder,
)
from sinklens.errors import SinklensError


def copy_of(src, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(src, dst)
    return dst


def test_loads_with_eager_attention(tiny_llama_dir):
    model, tok = load_hf_model(tiny_llama_dir)
    assert model.config._attn_implementation == "eager"
    ids = tok("Mira Tolen", return_tensors="pt").input_ids
    assert ids[0, 0] == tok.bos_token_id
    out = model(ids, output_attentions=True)
    assert out.attentions[0].sum(-1).allclose(torch.ones(1), atol=1e-5)


def test_architecture_of_two_families(tiny_llama_dir, tiny_gpt2_dir):
    assert model_architecture(tiny_llama_dir) == {
        "n_layers": 2,
        "n_heads": 4,
        "n_kv_heads": 2,
        "d_head": 16,
        "d_model": 64,
    }
    assert model_architecture(tiny_gpt2_dir)["n_kv_heads"] == 4


def test_fingerprint_tracks_weights(tiny_llama_dir, tmp_path):
    copy = copy_of(tiny_llama_dir, tmp_path)
    assert checkpoint_fingerprint(copy) == checkpoint_fingerprint(tiny_llama_dir)
    model, tok = load_hf_model(copy)
    with torch.no_grad():
        model.model.norm.weight.add_(1.0)
    save_hf_model(model, tok, copy)
    assert checkpoint_fingerprint(copy) != checkpoint_fingerprint(tiny_llama_dir)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("missing", "does not exist"),
        ("file", "is a file"),
        ("no_config", "no config.json"),
        ("bad_config", "corrupt config.json"),
        ("no_weights", "holds no weights"),
        ("corrupt_weights", "cannot load the model"),
        ("nan_weights", "non-finite"),
    ],
)
def test_bad_checkpoints_give_one_line_errors_naming_the_folder(
    tiny_llama_dir, tmp_path, breakage, message
):
    folder = copy_of(tiny_llama_dir, tmp_path)
    weights = folder / "model.safetensors"
    if breakage == "missing":
        folder = tmp_path / "nowhere"
    elif breakage == "file":
        folder = weights
    elif breakage == "no_config":
        (folder / "config.json").unlink()
    elif breakage == "bad_config":
        (folder / "config.json").write_text("{not json")
    elif breakage == "no_weights":
        weights.unlink()
    elif breakage == "corrupt_weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif breakage == "nan_weights":
        tensors = load_file(weights)
        name = next(iter(tensors))
        tensors[name][0] = float("nan")
        save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(SinklensError) as info:
        load_hf_model(folder)
    text = str(info.value)
    assert message in text and "\n" not in text
    assert str(folder.name) in text


def test_tokenizer_that_does_not_fit_the_model(tiny_llama_dir, tiny_gpt2_dir, tmp_path):
    from conftest import build_tiny_tokenizer

    folder = copy_of(tiny_llama_dir, tmp_path)
    bigger = build_tiny_tokenizer(vocab_size=400)
    bigger.save_pretrained(folder)
    with pytest.raises(SinklensError, match=r"has \d+ tokens but the model embeds only"):
        load_hf_model(folder)


def test_validate_returns_resolved_folder(tiny_llama_dir):
    assert validate_checkpoint_folder(str(tiny_llama_dir)) == tiny_llama_dir.resolve()
