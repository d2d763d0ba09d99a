"""The one rule for everything sinklens writes: never replace an earlier result unasked.

Every writer (`--out` of analyze, patch, evaluate, figure and reproduce) checks its output
paths before any work starts: a file that already exists is refused unless `--overwrite`
is given, a path whose folder cannot be created or written is refused, and nothing is
created until there is something to write, so an error leaves no empty folder behind.
(`sinklens unlearn --out` and `zoo build` have their own never-overwrite rules: a
checkpoint folder is refused outright, a zoo resumes.)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from sinklens.errors import SinklensError


def _nearest_existing(path: Path) -> Path:
    for parent in [path, *path.parents]:
        if parent.exists():
            return parent
    return Path(".")


def check_folder(folder: Path, what: str = "--out") -> None:
    """`folder` is, or can be created as, a writable folder."""
    if folder.exists() and not folder.is_dir():
        raise SinklensError(f"{what} {folder} is a file; pass a folder")
    base = _nearest_existing(folder)
    if not base.is_dir():
        raise SinklensError(f"{what} {folder} lies under the file {base}; pass another folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise SinklensError(
            f"{what} {folder} cannot be written ({base} is read-only); pass another"
        )


def check_new_files(paths: Iterable[Path], *, overwrite: bool, what: str = "--out") -> None:
    """Every path can be written, and none exists yet unless `overwrite`."""
    for path in paths:
        if path.is_dir():
            raise SinklensError(f"{what} {path} is a folder; pass a file name")
        check_folder(path.parent, what)
        if path.exists() and not overwrite:
            raise SinklensError(
                f"{what}: {path} exists (an earlier result); pass --overwrite to replace it, "
                "or choose another path"
            )


__all__ = ["check_folder", "check_new_files"]
