"""On-disk cache of captured statistics: safetensors plus a JSON manifest, never pickle.

An entry is keyed by the checkpoint's fingerprint (a hash of its weight, config and
tokenizer files), the dataset's hash (the exact token ids run) and the capture settings.
Layout, one folder per key:

    <root>/<key>/manifest.json                 what the entry holds, how far it got, sha256
    <root>/<key>/stats-<n_done>.safetensors    the reducers' running sums at that point

Writes are atomic: the statistics go to a new file (temporary name, then `os.replace`), then
the manifest is replaced the same way, then the previous statistics file is removed. A crash
at any point leaves either the old or the new entry whole. A partial entry (`complete:
false`) resumes from `n_done`; an entry whose file fails its checksum is ignored and
recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from sinklens.errors import SinklensError

CACHE_VERSION = 1
MANIFEST = "manifest.json"


def default_cache_dir() -> Path:
    """The analysis cache, `sinklens.settings.capture_cache_dir()`."""
    from sinklens.settings import capture_cache_dir

    return capture_cache_dir()


def cache_key(fingerprint: str, dataset_hash: str, settings: Mapping[str, Any]) -> str:
    """sha256 of the three things that decide a capture's result."""
    blob = json.dumps(
        {"v": CACHE_VERSION, "fp": fingerprint, "data": dataset_hash, "settings": settings},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:40]


@dataclass(frozen=True)
class CacheEntry:
    tensors: dict[str, Tensor]
    n_done: int
    complete: bool
    manifest: dict[str, Any]


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class CaptureCache:
    """A folder of cache entries; see the module docstring for the layout."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def folder(self, key: str) -> Path:
        return self.root / key

    def load(self, key: str) -> CacheEntry | None:
        """The entry for `key`, or None if absent or failing its checks (then recomputed)."""
        folder = self.folder(key)
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file():
            return None
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            data_path = folder / str(manifest["file"])
            if data_path.parent != folder:
                raise ValueError("file name escapes the cache folder")
            blob = data_path.read_bytes()
            if hashlib.sha256(blob).hexdigest() != manifest["sha256"]:
                raise ValueError("checksum mismatch")
            tensors = st_load(blob)
            n_done, complete = int(manifest["n_done"]), bool(manifest["complete"])
        except Exception as err:  # any damage means: do not trust it, recompute
            warnings.warn(
                f"ignoring corrupt cache entry {folder} ({type(err).__name__}: {err}); recomputing",
                stacklevel=2,
            )
            return None
        return CacheEntry(tensors, n_done, complete, manifest)

    def save(
        self,
        key: str,
        tensors: Mapping[str, Tensor],
        *,
        n_done: int,
        complete: bool,
        meta: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write the entry atomically; returns its folder."""
        folder = self.folder(key)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise SinklensError(
                f"cannot create cache folder {folder} ({err}); pass a writable cache dir or disable the cache"
            ) from None
        blob = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
        name = f"stats-{n_done}{'-final' if complete else ''}.safetensors"
        old = None
        if (folder / MANIFEST).is_file():
            with contextlib.suppress(Exception):
                old = json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("file")
        _atomic_write(folder / name, blob)
        manifest = {
            "version": CACHE_VERSION,
            "key": key,
            "file": name,
            "sha256": hashlib.sha256(blob).hexdigest(),
            "n_done": n_done,
            "complete": complete,
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **dict(meta or {}),
        }
        _atomic_write(
            folder / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        )
        if old and old != name:
            with contextlib.suppress(OSError):
                (folder / str(old)).unlink()
        return folder


def flatten_states(reducers: Sequence[Any]) -> dict[str, Tensor]:
    return {f"{r.name}.{k}": v for r in reducers for k, v in r.state().items()}


def restore_states(reducers: Sequence[Any], tensors: Mapping[str, Tensor]) -> None:
    for r in reducers:
        prefix = f"{r.name}."
        r.load_state({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})


def _fits(saved: Mapping[str, Tensor], fresh: Mapping[str, Tensor]) -> bool:
    """Whether a cache entry's tensors have the names, dtypes and shapes of fresh states.
    A fresh state's size-0 axes are not known yet (samples, or heads seen on the first
    batch) and match any size."""

    def same(a: Tensor, b: Tensor) -> bool:
        if a.dtype != b.dtype or a.ndim != b.ndim:
            return False
        return all(y == 0 or x == y for x, y in zip(a.shape, b.shape, strict=True))

    return saved.keys() == fresh.keys() and all(same(saved[k], fresh[k]) for k in fresh)


def cached_capture(
    model: Any,
    data: Any,
    reducers: Sequence[Any],
    *,
    settings: Mapping[str, Any],
    cache: CaptureCache | None,
    batch_size: int = 8,
    checkpoint_seconds: float = 30.0,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume, or reuse) a capture; returns provenance of what was done.

    Reducer names must be unique. `on_batch(n_done)` is called after each batch, after any
    checkpoint was written (tests use it to interrupt a run).
    """
    from sinklens.capture import run_capture

    dataset_hash = data.content_hash()
    key = cache_key(model.fingerprint, dataset_hash, settings)
    start = 0
    info: dict[str, Any] = {"cache_key": key, "reused": False, "resumed_from": 0}
    if cache is not None:
        entry = cache.load(key)
        if entry is not None and not _fits(entry.tensors, flatten_states(reducers)):
            # Right checksum, wrong contents (an entry written by other code under this
            # key): never trusted, recomputed.
            warnings.warn(
                f"ignoring cache entry {cache.folder(key)}: its tensors do not fit this "
                "analysis; recomputing",
                stacklevel=2,
            )
            entry = None
        if entry is not None and entry.n_done <= len(data):
            restore_states(reducers, entry.tensors)
            if entry.complete:
                info["reused"] = True
                return info
            start = entry.n_done
            info["resumed_from"] = start
    meta = {
        "fingerprint": model.fingerprint,
        "checkpoint": str(model.path),
        "dataset_hash": dataset_hash,
        "n_total": len(data),
        "settings": dict(settings),
    }
    last = time.monotonic()

    def progress(n_done: int) -> None:
        nonlocal last
        if (
            cache is not None
            and n_done < len(data)
            and time.monotonic() - last >= checkpoint_seconds
        ):
            cache.save(key, flatten_states(reducers), n_done=n_done, complete=False, meta=meta)
            last = time.monotonic()
        if on_batch is not None:
            on_batch(n_done)

    run_capture(model, data, reducers, batch_size=batch_size, start=start, on_progress=progress)
    if cache is not None:
        cache.save(key, flatten_states(reducers), n_done=len(data), complete=True, meta=meta)
    return info


__all__ = [
    "CacheEntry",
    "CaptureCache",
    "cache_key",
    "cached_capture",
    "default_cache_dir",
    "flatten_states",
    "restore_states",
]
