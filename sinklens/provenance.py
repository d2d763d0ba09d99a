"""Where a result came from, in terms that mean something on another machine: the versions
of sinklens and the libraries that decide the numbers, the git commit of a source checkout,
and paths relative to the cache or the package instead of this machine's absolute ones."""

from __future__ import annotations

import functools
import math
import platform
import subprocess
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["environment", "portable_path", "to_jsonable"]

LIBRARIES = ("sinklens", "torch", "transformers", "transformer-lens", "nnsight", "tokenizers")


@functools.cache
def environment() -> dict[str, Any]:
    """Library versions, Python, and the commit of the sinklens checkout (None when sinklens
    is installed from a wheel; `-dirty` appended when tracked files differ from it)."""
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {"versions": versions, "python": platform.python_version(), "git_commit": _commit()}


def _commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def portable_path(path: str | Path | None) -> str | None:
    """`$SINKLENS_CACHE/...` for a path in the cache, `sinklens/...` for one inside the
    package (the shipped organism), else the path as given."""
    if path is None:
        return None
    from sinklens.settings import cache_root

    resolved = Path(path).expanduser().resolve()
    package = Path(__file__).resolve().parent
    for base, label in ((cache_root().resolve(), "$SINKLENS_CACHE"), (package, "sinklens")):
        try:
            return f"{label}/{resolved.relative_to(base).as_posix()}"
        except ValueError:
            continue
    return str(path)


def to_jsonable(value: Any) -> Any:
    """Plain JSON types; floats rounded to 8 significant digits so reruns give identical bytes."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "detach"):  # a torch tensor, without importing torch here
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        x = float(value)
        return None if not math.isfinite(x) else float(f"{x:.8g}")
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    return value
