"""Patching results on disk: the provenance every result records (the one
`sinklens.provenance.Provenance`: checkpoints and fingerprints by role, each batch's hash
and size, settings) and storing a result in the analysis cache. Results write their JSON
through `sinklens.provenance.JsonResult`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from sinklens.provenance import Provenance, portable_path, to_jsonable

if TYPE_CHECKING:
    from sinklens.patching.corruptions import PatchingBatch

__all__ = [
    "Provenance",
    "model_fingerprint",
    "provenance",
    "save_result",
]


def model_fingerprint(model: Any) -> tuple[str, str]:
    """(path, fingerprint) of the checkpoint folder a model was loaded from: a sinklens
    `LoadedModel`, or a bridge booted from a local folder."""
    from sinklens.checkpoint import checkpoint_fingerprint

    if isinstance(getattr(model, "fingerprint", None), str) and hasattr(model, "path"):
        return str(model.path), model.fingerprint
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


def _dtype(model: Any) -> str:
    wrapped = getattr(model, "wrapper", model)  # a LoadedModel's bridge
    try:
        return str(next(wrapped.parameters()).dtype).removeprefix("torch.")
    except (AttributeError, StopIteration, TypeError):
        return "unknown"


def provenance(
    models: Mapping[str, Any],
    batches: Mapping[str, PatchingBatch],
    settings: Mapping[str, Any],
) -> Provenance:
    """The provenance of a patching result: `models` by role (the first is the patched
    one), the batches it scored by name, and its settings. Patching runs on the bridge."""
    from sinklens.gguf import source_of

    paths, fingerprints, sources = {}, {}, {}
    for role, model in models.items():
        path, fingerprints[role] = model_fingerprint(model)
        paths[role] = portable_path(path)
        source = source_of(path)
        if source is not None:
            sources[role] = source
    return Provenance(
        checkpoints=paths,
        fingerprints=fingerprints,
        dataset_hashes={name: b.data_hash for name, b in batches.items()},
        n_samples={name: b.n_samples for name, b in batches.items()},
        settings=dict(settings),
        backend="bridge",
        dtype=_dtype(next(iter(models.values()))),
        gguf_sources=sources,
    )


def save_result(result: Any, root: str | Path | None = None) -> Path:
    """Store a result in the analysis cache (`sinklens.cache`): its tensors as safetensors,
    everything else (provenance included) in the manifest. Keyed by the checkpoints'
    fingerprints, the dataset hashes and the settings; returns the entry's folder."""
    from sinklens.cache import CaptureCache, cache_key, default_cache_dir

    prov: Provenance = result.provenance
    fingerprints = ",".join(f"{role}={fp}" for role, fp in sorted(prov.fingerprints.items()))
    data_hash = ",".join(f"{name}={h}" for name, h in sorted(prov.dataset_hashes.items()))
    tensors = {
        name: value
        for name in result.__dataclass_fields__
        if isinstance(value := getattr(result, name), Tensor)
    }
    meta = to_jsonable(result)
    fields = {name: value for name, value in meta.items() if name not in tensors}
    cache = CaptureCache(root if root is not None else default_cache_dir())
    key = cache_key(fingerprints, data_hash, {"kind": type(result).__name__, **prov.settings})
    return cache.save(key, tensors, n_done=1, complete=True, meta={"result": fields})
