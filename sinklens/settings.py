"""Where sinklens keeps what it computes: one cache root, moved by one variable.

Everything cached lives under `cache_root()`: the zoo's checkpoints, the analysis cache
(`capture/`), converted GGUF checkpoints (`gguf/`) and fetched real models (`models/`).
`SINKLENS_CACHE` moves all of it. `SINKLENS_CACHE_DIR`, which older releases read for the
analysis cache alone, is still honoured there.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "SINKLENS_CACHE"


def cache_root() -> Path:
    """$SINKLENS_CACHE, else ~/.cache/sinklens."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sinklens"


def capture_cache_dir() -> Path:
    """The analysis cache: $SINKLENS_CACHE_DIR if set (older releases), else
    `cache_root()/capture`."""
    legacy = os.environ.get("SINKLENS_CACHE_DIR")
    return Path(legacy).expanduser() if legacy else cache_root() / "capture"


__all__ = ["CACHE_ENV", "cache_root", "capture_cache_dir"]
