"""The model organism: a small Llama with real attention sinks and a memorised "book".

The trained checkpoint ships inside the package (`organism_path()`), with the world it was
trained on in MUSE layout (`world_path()`), so the whole study runs on a CPU without
training anything. `sinklens organism build` rebuilds it from scratch. Beside it ships the
organism retrained without the forget set (`retrained_path()`, built by `sinklens organism
build --without-forget`): the reference MUSE's PrivLeak measures an unlearned model against.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sinklens.errors import SinklensError

__all__ = [
    "BUILD_INFO",
    "WORLD_DIR",
    "build_info",
    "organism_path",
    "retrained_path",
    "world_path",
]

BUILD_INFO = "build_info.json"
WORLD_DIR = "world"


def _shipped(name: str, what: str, build: str) -> Path:
    folder = Path(__file__).resolve().parent / name
    if not (folder / "config.json").is_file():
        raise SinklensError(
            f"the shipped {what} is missing from {folder}; reinstall sinklens "
            f"or rebuild it with `sinklens organism build {build}--out DIR`"
        )
    return folder


def organism_path() -> Path:
    """The shipped checkpoint folder (an ordinary Hugging Face model folder)."""
    return _shipped("checkpoint", "organism checkpoint", "")


def retrained_path() -> Path:
    """The shipped organism retrained from scratch without the forget people's facts (same
    world, tokenizer, seed and recipe): PrivLeak's "retrained" reference."""
    return _shipped("retrained", "retrained organism", "--without-forget ")


def world_path(checkpoint: str | Path | None = None) -> Path:
    """The world (benchmark folder in MUSE layout) the checkpoint was trained on."""
    folder = (Path(checkpoint) if checkpoint is not None else organism_path()) / WORLD_DIR
    if not folder.is_dir():
        raise SinklensError(
            f"no world folder at {folder}; pass an organism checkpoint built by "
            "`sinklens organism build`"
        )
    return folder


def build_info(checkpoint: str | Path | None = None) -> dict[str, Any]:
    """The `build_info.json` of an organism checkpoint (training loss, timing, stats)."""
    path = (Path(checkpoint) if checkpoint is not None else organism_path()) / BUILD_INFO
    if not path.is_file():
        raise SinklensError(
            f"{path} does not exist; pass a folder built by `sinklens organism build`"
        )
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SinklensError(f"{path} is not valid JSON ({err}); rebuild the organism") from None
    if not isinstance(info, dict):
        raise SinklensError(f"{path} does not hold a JSON object; rebuild the organism")
    return info
