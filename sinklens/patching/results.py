"""Patching results on disk: the provenance every result records (models by fingerprint,
data hash, settings) and the JSON it is saved as."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

__all__ = [
    "Provenance",
    "model_fingerprint",
    "provenance",
    "result_json",
    "save_result",
    "tensor_json",
]


def model_fingerprint(model: Any) -> tuple[str, str]:
    """(path, fingerprint) of the checkpoint folder a bridge was booted from."""
    from sinklens.checkpoint import checkpoint_fingerprint

    candidates = [
        getattr(getattr(model, "cfg", None), "model_name", None),
        getattr(
            getattr(getattr(model, "original_model", None), "config", None), "_name_or_path", None
        ),
    ]
    for name in candidates:
        if name and Path(str(name)).is_dir():
            folder = Path(str(name)).resolve()
            return str(folder), checkpoint_fingerprint(folder)
    return str(candidates[0] or "unknown"), "unknown (not booted from a local folder)"


@dataclass(frozen=True)
class Provenance:
    """Where a result came from: checkpoints by role, data, and every setting."""

    checkpoints: dict[str, dict[str, Any]]  # path, fingerprint and, from a GGUF, its source
    data_hash: str
    settings: dict[str, Any] = field(default_factory=dict)
    sinklens_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def provenance(
    models: Mapping[str, Any], data: Sequence[str] | str, settings: Mapping[str, Any]
) -> Provenance:
    from sinklens import __version__
    from sinklens.gguf import source_of

    checkpoints: dict[str, dict[str, Any]] = {}
    for role, model in models.items():
        path, fp = model_fingerprint(model)
        checkpoints[role] = {"path": path, "fingerprint": fp}
        source = source_of(path) if path else None
        if source is not None:
            checkpoints[role]["gguf"] = source
    hashes = [data] if isinstance(data, str) else list(data)
    data_hash = (
        hashes[0] if len(hashes) == 1 else hashlib.sha256("".join(hashes).encode()).hexdigest()
    )
    return Provenance(checkpoints, data_hash, dict(settings), __version__)


def tensor_json(x: Any) -> Any:
    """Tensors as nested lists (NaN as null), everything else as JSON can hold it."""
    if isinstance(x, Tensor):
        return tensor_json(x.detach().cpu().tolist())
    if isinstance(x, float):
        return None if x != x else x
    if isinstance(x, (list, tuple)):
        return [tensor_json(v) for v in x]
    if isinstance(x, dict):
        return {str(k): tensor_json(v) for k, v in x.items()}
    return x


def save_result(result: Any, root: str | Path | None = None) -> Path:
    """Store a result in the analysis cache (`sinklens.cache`): its tensors as safetensors,
    everything else (provenance included) in the manifest. Keyed by the checkpoints'
    fingerprints, the data hash and the settings; returns the entry's folder."""
    from sinklens.cache import CaptureCache, cache_key, default_cache_dir

    prov: Provenance = result.provenance
    fingerprints = ",".join(
        f"{role}={info['fingerprint']}" for role, info in sorted(prov.checkpoints.items())
    )
    tensors = {
        name: value
        for name in result.__dataclass_fields__
        if isinstance(value := getattr(result, name), Tensor)
    }
    meta = json.loads(result_json(result))
    fields = {name: value for name, value in meta.items() if name not in tensors}
    cache = CaptureCache(root if root is not None else default_cache_dir())
    key = cache_key(fingerprints, prov.data_hash, {"kind": type(result).__name__, **prov.settings})
    return cache.save(key, tensors, n_done=1, complete=True, meta={"result": fields})


def result_json(obj: Any) -> str:
    """JSON of a result dataclass: its fields (tensors as lists) and its provenance."""
    data = {}
    for name in obj.__dataclass_fields__:
        value = getattr(obj, name)
        data[name] = value.to_dict() if isinstance(value, Provenance) else tensor_json(value)
    return json.dumps(data, indent=2, sort_keys=True)
