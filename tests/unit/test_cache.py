"""The capture cache: atomic safetensors + manifest, resume, checksum failures recomputed."""

from __future__ import annotations

import json

import pytest
import torch

from sinklens.analyze import tokenize_texts
from sinklens.cache import CaptureCache, cache_key, cached_capture
from sinklens.capture import CaptureData, SinkReducer, ValueNormReducer
from sinklens.models import load_model

TEXTS = [f"Sample number {i} is about the castle of Arvel and Mira Tolen." for i in range(7)]


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def model(tiny_llama_dir):
    return load_model(tiny_llama_dir, backend="hf")


def _reducers(model):
    return [
        SinkReducer([0, 1], model.architecture["n_heads"], 8, 0.2),
        ValueNormReducer([1], [0, 1]),
    ]


def _states(reducers):
    return {f"{r.name}.{k}": v.clone() for r in reducers for k, v in r.state().items()}


def test_roundtrip_and_no_temp_files(tmp_path):
    cache = CaptureCache(tmp_path)
    tensors = {"a.x": torch.arange(6.0).reshape(2, 3), "a.n": torch.tensor(3.0)}
    cache.save("k1", tensors, n_done=2, complete=False, meta={"note": "x"})
    cache.save("k1", tensors, n_done=4, complete=True)
    entry = cache.load("k1")
    assert entry is not None and entry.complete and entry.n_done == 4
    assert torch.equal(entry.tensors["a.x"], tensors["a.x"])
    files = sorted(p.name for p in (tmp_path / "k1").iterdir())
    assert files == ["manifest.json", "stats-4-final.safetensors"]  # old file and temps gone


def test_key_depends_on_everything():
    base = cache_key("fp", "data", {"window": 8})
    assert base != cache_key("fp2", "data", {"window": 8})
    assert base != cache_key("fp", "data2", {"window": 8})
    assert base != cache_key("fp", "data", {"window": 9})
    assert base == cache_key("fp", "data", {"window": 8})


def test_corrupt_file_is_recomputed_not_trusted(tmp_path, model):
    cache = CaptureCache(tmp_path)
    data = CaptureData(single=tokenize_texts(model.tokenizer, TEXTS))
    first = _reducers(model)
    info = cached_capture(model, data, first, settings={"s": 1}, cache=cache, batch_size=3)
    folder = cache.folder(info["cache_key"])
    manifest = json.loads((folder / "manifest.json").read_text())
    blob = folder / manifest["file"]
    raw = bytearray(blob.read_bytes())
    raw[-3] ^= 0xFF
    blob.write_bytes(bytes(raw))
    again = _reducers(model)
    with pytest.warns(UserWarning, match="corrupt cache entry"):
        info2 = cached_capture(model, data, again, settings={"s": 1}, cache=cache, batch_size=3)
    assert not info2["reused"]
    for key, value in _states(first).items():
        assert torch.allclose(value, _states(again)[key])
    assert cache.load(info["cache_key"]) is not None  # rewritten whole


def test_garbage_manifest_is_ignored(tmp_path):
    cache = CaptureCache(tmp_path)
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "manifest.json").write_text("{nope")
    with pytest.warns(UserWarning, match="corrupt cache entry"):
        assert cache.load("k") is None
    (tmp_path / "k" / "manifest.json").write_text(json.dumps({"file": "../evil", "sha256": "0"}))
    with pytest.warns(UserWarning):
        assert cache.load("k") is None


def test_interrupted_capture_resumes(tmp_path, model):
    cache = CaptureCache(tmp_path)
    data = CaptureData(single=tokenize_texts(model.tokenizer, TEXTS))
    full = _reducers(model)
    cached_capture(model, data, full, settings={"s": 2}, cache=None, batch_size=2)

    def stop(n_done):
        if n_done >= 4:
            raise Interrupt

    with pytest.raises(Interrupt):
        cached_capture(
            model, data, _reducers(model), settings={"s": 2}, cache=cache, batch_size=2,
            checkpoint_seconds=0.0, on_batch=stop,
        )  # fmt: skip
    seen = []
    resumed = _reducers(model)
    info = cached_capture(
        model, data, resumed, settings={"s": 2}, cache=cache, batch_size=2, on_batch=seen.append
    )
    assert info["resumed_from"] == 4 and seen == [6, 7]
    for key, value in _states(full).items():
        assert torch.allclose(value, _states(resumed)[key], atol=1e-9), key
    reused = _reducers(model)
    info = cached_capture(model, data, reused, settings={"s": 2}, cache=cache, batch_size=2)
    assert info["reused"]
    for key, value in _states(full).items():
        assert torch.allclose(value, _states(reused)[key], atol=1e-9), key


@pytest.mark.parametrize("damage", ["shape", "dtype", "missing", "extra"])
def test_an_entry_with_the_right_checksum_but_wrong_contents_is_recomputed(tmp_path, model, damage):
    """An entry that passes its checksum but does not fit the reducers (written by other
    code under the same key) is recomputed, never restored into the wrong shape."""
    cache = CaptureCache(tmp_path)
    data = CaptureData(single=tokenize_texts(model.tokenizer, TEXTS))
    first = _reducers(model)
    info = cached_capture(model, data, first, settings={"s": 3}, cache=cache, batch_size=3)
    entry = cache.load(info["cache_key"])
    assert entry is not None
    tensors = dict(entry.tensors)
    name = next(k for k in tensors if tensors[k].ndim)  # a fixed-shape state
    if damage == "shape":
        tensors[name] = torch.zeros(*tensors[name].shape[:-1], tensors[name].shape[-1] + 1)
    elif damage == "dtype":
        other = torch.float32 if tensors[name].dtype == torch.float64 else torch.float64
        tensors[name] = tensors[name].to(other)
    elif damage == "missing":
        del tensors[name]
    else:
        tensors["other.x"] = torch.zeros(1)
    cache.save(info["cache_key"], tensors, n_done=entry.n_done, complete=True)
    again = _reducers(model)
    with pytest.warns(UserWarning, match="do not fit"):
        info2 = cached_capture(model, data, again, settings={"s": 3}, cache=cache, batch_size=3)
    assert not info2["reused"]
    for key, value in _states(first).items():
        assert torch.allclose(value, _states(again)[key])
