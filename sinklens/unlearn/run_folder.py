"""An unlearning run's folder: where its inputs are and whether its output is free.

The base model defaults to the shipped organism and the benchmark to the one inside a
model's folder (or the data its run used). A run is identified by content, not location
(`_identity`: the config, the base model's fingerprint, the benchmark's bytes), so a
finished run is recognised from a moved checkout or another cache folder. An output folder
is free, holds the same finished run (returned as is), or is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sinklens.checkpoint import checkpoint_fingerprint
from sinklens.errors import SinklensError
from sinklens.unlearn.config import UnlearnConfig

__all__ = [
    "CONFIG_FILE",
    "DATA_HASH_FILE",
    "METRICS_FILE",
    "RunResult",
    "benchmark_path_for",
    "default_data_path",
    "default_model_path",
    "read_run",
]

CONFIG_FILE = "unlearn_config.json"
METRICS_FILE = "metrics.json"
DATA_HASH_FILE = "data_hash.txt"
MEMBERSHIP_ONLY_FILES = ("raw/holdout.txt", "privleak/")


@dataclass(frozen=True)
class RunResult:
    out: Path
    metrics: dict[str, Any]
    reused: bool


def default_model_path() -> Path:
    """The shipped organism's checkpoint folder."""
    from sinklens.organism import organism_path

    return organism_path()


def default_data_path(model_path: str | Path) -> Path:
    """The benchmark folder shipped inside an organism checkpoint (`<model>/world`)."""
    from sinklens.organism import world_path

    try:
        return world_path(model_path)
    except SinklensError:
        raise SinklensError(
            f"no benchmark data in {Path(model_path) / 'world'}; pass --data DIR (a folder in MUSE layout)"
        ) from None


def benchmark_path_for(model_path: str | Path) -> Path:
    """Where a model's benchmark is: `<model>/world`, else the data its repair or its
    unlearning run used (`repair.json`, `unlearn_config.json`), else (a run from the
    shipped organism) the organism's world; a one-line error naming --data otherwise."""
    folder = Path(model_path)
    with contextlib.suppress(SinklensError):
        return default_data_path(folder)
    repaired = folder / "repair.json"  # written by `sinklens repair`
    if repaired.is_file():
        with contextlib.suppress(json.JSONDecodeError, KeyError, TypeError):
            return Path(json.loads(repaired.read_text(encoding="utf-8"))["data"])
    run = read_run(folder) if (folder / CONFIG_FILE).is_file() else None
    if run is not None:
        cfg = run[0].get("config", {})
        if cfg.get("data"):
            return Path(cfg["data"])
        if not cfg.get("model"):
            return default_data_path(default_model_path())
    return default_data_path(folder)


def _resolve_paths(cfg: UnlearnConfig) -> tuple[Path, Path]:
    model = Path(cfg.model) if cfg.model else default_model_path()
    data = Path(cfg.data) if cfg.data else default_data_path(model)
    return model, data


def read_run(out: str | Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(config, metrics) of a finished run in `out`, or None if `out` holds no run."""
    folder = Path(out)
    cfg_file, met_file = folder / CONFIG_FILE, folder / METRICS_FILE
    if not (cfg_file.is_file() and met_file.is_file()):
        return None
    try:
        return json.loads(cfg_file.read_text()), json.loads(met_file.read_text())
    except json.JSONDecodeError:
        return None


def _content_digest(path: Path, skip: tuple[str, ...] = ()) -> str:
    """sha256 over a file, or over a folder's relative file names and bytes (files whose
    relative path starts with one of `skip` left out)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.is_file())
    files = [f for f in files if f == path or not f.relative_to(path).as_posix().startswith(skip)]
    for file in files:
        digest.update(str(file.relative_to(path) if file != path else file.name).encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _identity(cfg: UnlearnConfig, model: Path, data: Path) -> dict[str, Any]:
    """What decides a run's result, by content rather than location: the same run from a
    moved checkout or another cache folder is still recognised as the same run."""
    ident = cfg.identity()
    ident["model"] = checkpoint_fingerprint(model)
    # PrivLeak's membership files are read by no unlearning run, so adding them to a
    # benchmark folder leaves its finished runs recognised.
    ident["data"] = _content_digest(data, skip=MEMBERSHIP_ONLY_FILES)
    for key in ("forget_corpus", "retain_corpus"):
        if ident.get(key):
            ident[key] = _content_digest(Path(ident[key]))
    if ident.get("value_norm_reference"):
        ident["value_norm_reference"] = checkpoint_fingerprint(ident["value_norm_reference"])
    return ident


def _check_out(out: Path, identity: dict[str, Any], data_hash: str) -> dict[str, Any] | None:
    """Metrics of the same finished run in `out`; None if `out` is free; else refuse."""
    if not out.exists():
        return None
    if out.is_file():
        raise SinklensError(f"output {out} is a file; pass a folder path for --out")
    if not any(out.iterdir()):
        return None
    previous = read_run(out)
    if previous is None:
        raise SinklensError(
            f"output folder {out} is not empty and holds no unlearning run; pass a new --out folder"
        )
    old_cfg, metrics = previous
    old_ident = old_cfg.get("identity", old_cfg)
    if old_ident != identity or metrics.get("data_hash") != data_hash:
        diff = sorted(
            k for k in set(old_ident) | set(identity) if old_ident.get(k) != identity.get(k)
        )
        what = ", ".join(diff) if diff else "data hash"
        raise SinklensError(
            f"output folder {out} already holds a different run (differs in {what}); "
            "pass a new --out folder (runs are never overwritten)"
        )
    return metrics
