"""Where a result came from, in terms that mean something on another machine, and the one
way results become JSON.

`Provenance` is the record every analysis and patching result carries: the checkpoints by
role (portable paths and fingerprints), the data (hashes and sample counts), the settings,
the back end and dtype, and the versions of sinklens and the libraries that decide the
numbers with the git commit of a source checkout (`environment()`). `to_jsonable` is the one
JSON cleaner (NaN and ±inf become null, floats keep 8 significant digits) and `dumps` the
one writer; `JsonResult` gives a result dataclass `to_dict()` and `to_json()` through them.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, overload

import numpy as np

__all__ = [
    "RERUN_VARYING",
    "JsonResult",
    "Provenance",
    "dumps",
    "environment",
    "portable_path",
    "to_jsonable",
]

LIBRARIES = ("sinklens", "torch", "transformers", "transformer-lens", "nnsight", "tokenizers")
# The Provenance fields that differ between two identical runs (when, and whether the cache
# already held the capture); leave them out where reruns must write identical bytes.
RERUN_VARYING = ("created", "cache")


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
    return {
        "versions": versions,
        "python": platform.python_version(),
        "git_commit": _commit(),
        "kernels": kernels(),
    }


def kernels() -> dict[str, str | None]:
    """What picks the floating-point kernels, and so the last bits of every trained model
    (docs/determinism.md): the processor, ATen's vector capability and MKL's code branch.
    Two runs with the same three train bitwise-identical models."""
    torch = sys.modules.get("torch")  # plumbing imports no torch; results come after it
    capability = torch.backends.cpu.get_cpu_capability() if torch is not None else None
    return {
        "cpu": _cpu_model(),
        "aten_cpu_capability": capability,
        "mkl_cbwr": _mkl_branch(torch) if torch is not None else None,
    }


# mkl_cbwr.h: the branch MKL runs (MKL_CBWR_BRANCH_OFF = 1: no reproducibility mode).
_MKL_BRANCHES = {
    1: "OFF",
    2: "AUTO",
    3: "COMPATIBLE",
    4: "SSE2",
    6: "SSSE3",
    7: "SSE4_1",
    8: "SSE4_2",
    9: "AVX",
    10: "AVX2",
    12: "AVX512",
    14: "AVX512_E1",
}


def _mkl_branch(torch: Any) -> str | None:
    """The MKL code branch in force, which can differ from $MKL_CBWR: MKL reads it once, at
    torch's first operation (set later it does nothing), and falls back to AUTO for a branch
    the CPU lacks (MKL_CBWR=AVX2 on an AMD CPU). None where torch has no MKL; $MKL_CBWR
    with "?" where its libtorch_cpu does not export MKL's `mkl_serv_cbwr_get`."""
    import ctypes

    env = os.environ.get("MKL_CBWR")
    if not torch.backends.mkl.is_available():
        return None
    try:
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        code = int(lib.mkl_serv_cbwr_get(1))  # MKL_CBWR_BRANCH
    except (OSError, AttributeError):
        return f"{env}?" if env else "?"
    return _MKL_BRANCHES.get(code & 0xFFFF, str(code)) + (",STRICT" if code & 0x10000 else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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


@overload
def portable_path(path: str | Path) -> str: ...


@overload
def portable_path(path: None) -> None: ...


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


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _environment() -> dict[str, Any]:
    return copy.deepcopy(environment())  # each record its own copy of the cached dict


@dataclass(frozen=True, kw_only=True)
class Provenance:
    """Where a result's numbers came from: enough to reproduce them, or to find them in the
    cache. Analysis results (`sinklens.analyze`) and patching results (`sinklens.patching`)
    carry this same record; roles are the checkpoint roles of the run ("original",
    "unlearned", "backdoored", ...), dataset names those of the data it read ("forget",
    "retain", "data", or a patching batch's name)."""

    # role -> the checkpoint folder it was loaded from, as `portable_path` writes it
    # (`$SINKLENS_CACHE/...`, `sinklens/...`, else the path as given).
    checkpoints: dict[str, str]
    # role -> `sinklens.checkpoint.checkpoint_fingerprint` of that folder (sha256 of the
    # files that decide what it computes); what the cache keys on.
    fingerprints: dict[str, str]
    # dataset name -> sha256 of the exact tokens read (analysis: `CaptureData.content_hash`,
    # the token ids and trigger bookkeeping; patching: `PatchingBatch.data_hash`, each
    # sample's triggered and corrupted ids and answer positions).
    dataset_hashes: dict[str, str]
    # dataset name -> how many samples of it were used (after any skipped as too short).
    n_samples: dict[str, int]
    # Every setting that decides the numbers (analysis or experiment name, layers, window,
    # placement, trigger, metric, ...).
    settings: dict[str, Any]
    # The back end the activations were read with ("bridge", "nnsight", "hf").
    backend: str
    # The models' dtype ("float32", "bfloat16", ...).
    dtype: str
    # role -> the GGUF file a converted checkpoint came from: its name, sha256 and
    # quantisation (`gguf_source.json`); only roles converted from a GGUF appear.
    gguf_sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    # role -> the capture's cache key, whether it was reused from the on-disk cache and
    # where it resumed (analyses given a `cache_dir`; empty otherwise). Differs between reruns.
    cache: dict[str, Any] = field(default_factory=dict)
    # `environment()`: versions of sinklens, torch, transformers, TransformerLens, nnsight
    # and tokenizers, the Python version, and the git commit of a source checkout.
    environment: dict[str, Any] = field(default_factory=_environment)
    # When the result was made (UTC, ISO 8601). Differs between reruns.
    created: str = field(default_factory=_now)

    def to_dict(self, *, omit: Collection[str] = ()) -> dict[str, Any]:
        """The fields as plain JSON types, without those named in `omit` (such as
        `RERUN_VARYING`, for output that reruns must reproduce byte for byte)."""
        return {
            f.name: to_jsonable(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name not in omit
        }


def to_jsonable(value: Any) -> Any:
    """Plain JSON types: dataclasses as dicts of their fields, tensors and arrays as nested
    lists, NaN and ±inf as null, floats rounded to 8 significant digits so that reruns give
    identical bytes."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "detach"):  # a torch tensor, without importing torch here
        value = value.detach().cpu()
        if value.is_floating_point():  # numpy has no bfloat16
            value = value.double()
        value = value.numpy()
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


def dumps(value: Any, indent: int | None = 2) -> str:
    """The one JSON writer: `to_jsonable(value)` as standard JSON with sorted keys (never
    `NaN` or `Infinity`, which strict parsers refuse)."""
    return json.dumps(to_jsonable(value), indent=indent, sort_keys=True, allow_nan=False)


class JsonResult:
    """`to_dict()` and `to_json()` for a result dataclass: every field, its provenance
    included, through `to_jsonable`."""

    provenance: Provenance

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)  # type: ignore[no-any-return]

    def to_json(self, indent: int | None = 2) -> str:
        return dumps(self, indent)
