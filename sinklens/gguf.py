"""GGUF checkpoints: read once through transformers, cached as a safetensors folder.

A `.gguf` file (or a folder holding one and no `config.json`) is accepted wherever a
checkpoint folder is. transformers dequantises it (it needs the `gguf` package) to float32;
the result is saved as an ordinary Hugging Face folder under
`cache_root()/gguf/<sha256 of the file>/`, with `gguf_source.json` naming the file, its
hash and its quantisation, so the second use costs a hash of the file and nothing else.

The conversion is written to a temporary folder and renamed into place with a completion
marker, so a conversion killed half-way is detected (no marker) and redone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sinklens.errors import SinklensError

GGUF_MAGIC = b"GGUF"
SOURCE_FILE = "gguf_source.json"
_COMPLETE = ".complete"
# Bumped when the converted folder's layout changes, so old conversions are redone.
_LAYOUT = 1


@dataclass(frozen=True)
class GgufSource:
    """What a converted folder was made from; saved as `gguf_source.json` beside it."""

    file: str  # the GGUF file's name
    path: str  # where it was read from (informative: the hash identifies it)
    sha256: str
    size: int
    architecture: str  # GGUF's `general.architecture`
    file_type: str  # GGUF's `general.file_type`, e.g. MOSTLY_Q4_1
    tensor_types: dict[str, int]  # quantisation type -> number of tensors
    dequantised_to: str = "float32"
    layout: int = _LAYOUT


def is_gguf(path: str | Path) -> bool:
    """Whether `path` is a `.gguf` file, or a folder with exactly one and no config.json."""
    return _gguf_file(Path(path).expanduser()) is not None


def _gguf_file(path: Path) -> Path | None:
    if path.is_file():
        return path if path.suffix.lower() == ".gguf" else None
    if path.is_dir() and not (path / "config.json").exists():
        found = sorted(path.glob("*.gguf"))
        if len(found) > 1:
            raise SinklensError(
                f"{path} holds {len(found)} GGUF files ({', '.join(f.name for f in found[:3])}); "
                "pass the one to use"
            )
        return found[0] if found else None
    return None


# (path, size, mtime) -> sha256: a multi-GB GGUF is hashed once per process.
_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = _hash(path)
    return _HASHES[key]


def _hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_source(path: Path, sha256: str) -> GgufSource:
    """Check that `path` is a whole, readable GGUF file; describe it. One-line errors."""
    with path.open("rb") as handle:
        head = handle.read(8)
    if len(head) < 8 or head[:4] != GGUF_MAGIC:
        raise SinklensError(
            f"{path} is not a GGUF file (it does not start with 'GGUF'); pass a .gguf "
            "checkpoint or a Hugging Face folder"
        )
    version = struct.unpack("<I", head[4:8])[0]
    try:
        import gguf
    except ImportError:
        raise SinklensError(
            "reading GGUF checkpoints needs the `gguf` package; pip install gguf"
        ) from None
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as err:
        raise SinklensError(
            f"{path} is a truncated or damaged GGUF file (version {version}: "
            f"{type(err).__name__}); download it again"
        ) from None
    size = path.stat().st_size
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if not reader.tensors or end > size:
        raise SinklensError(
            f"{path} is truncated: its tensors need {end:,} bytes but the file has {size:,}; "
            "download it again"
        )
    architecture = str(_field(reader, "general.architecture") or "unknown")
    file_type = _field(reader, "general.file_type")
    try:
        type_name = gguf.LlamaFileType(int(file_type)).name if file_type is not None else "unknown"
    except (ValueError, TypeError):
        type_name = str(file_type)
    return GgufSource(
        file=path.name,
        path=str(path),
        sha256=sha256,
        size=size,
        architecture=architecture,
        file_type=type_name,
        tensor_types=dict(Counter(t.tensor_type.name for t in reader.tensors)),
    )


def _field(reader: Any, name: str) -> str | int | float | None:
    import gguf

    field = reader.fields.get(name)
    if field is None or not field.data:
        return None
    value = field.parts[field.data[0]]
    if field.types and field.types[0] == gguf.GGUFValueType.STRING:
        return bytes(value).decode("utf-8", errors="replace")
    return value.tolist()[0]


def _supported_architectures() -> set[str]:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"}


def converted_folder(path: str | Path, cache: Path | None = None) -> Path:
    """The safetensors folder for the GGUF checkpoint at `path` (a file, or a folder with
    one), converted on first use and cached by the file's content hash."""
    from sinklens.settings import cache_root

    source_path = _gguf_file(Path(path).expanduser())
    if source_path is None:
        raise SinklensError(f"{path} is not a GGUF file or a folder holding one")
    source_path = source_path.resolve()
    sha = file_sha256(source_path)
    root = (cache if cache is not None else cache_root()) / "gguf"
    folder = root / sha[:32]
    if _is_complete(folder, sha):
        return folder
    source = read_source(source_path, sha)
    if source.architecture not in _supported_architectures():
        raise SinklensError(
            f"{source_path.name} is a GGUF of architecture {source.architecture!r}, which "
            f"transformers cannot read; supported: {', '.join(sorted(_supported_architectures()))}"
        )
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=root))
    try:
        _convert(source_path, work, source)
        (work / _COMPLETE).write_text(sha)
        if folder.exists():  # half-written by an interrupted conversion, or an old layout
            shutil.rmtree(folder)
        try:
            os.replace(work, folder)
        except OSError:
            if not _is_complete(folder, sha):  # another process finished first otherwise
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder


def _is_complete(folder: Path, sha: str) -> bool:
    try:
        if (folder / _COMPLETE).read_text() != sha:
            return False
        recorded = json.loads((folder / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return recorded.get("layout") == _LAYOUT and any(folder.glob("*.safetensors"))


def _convert(source_path: Path, out: Path, source: GgufSource) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    directory, name = str(source_path.parent), source_path.name
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
            loaded = AutoModelForCausalLM.from_pretrained(
                directory, gguf_file=name, dtype=torch.float32
            )
            # A model loaded from GGUF is flagged as quantised and refuses save_pretrained;
            # its weights are dequantised already, so copy them into a plain model.
            config = loaded.config
            if hasattr(config, "quantization_config"):
                del config.quantization_config
            plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            plain.load_state_dict(loaded.state_dict(), strict=True)
            del loaded
            plain.save_pretrained(out, safe_serialization=True)
            tokenizer.save_pretrained(out)
    except SinklensError:
        raise
    except Exception as err:
        raise SinklensError(
            f"transformers cannot convert {source_path.name} ({type(err).__name__}: "
            f"{' '.join(str(err).split())[:200]}); check the file or convert it yourself"
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    (out / SOURCE_FILE).write_text(json.dumps(asdict(source), indent=2) + "\n")
    for file in out.iterdir():
        file.chmod(0o644)


def source_of(folder: str | Path) -> dict[str, Any] | None:
    """The `gguf_source.json` of a converted folder, or None for any other folder."""
    try:
        return json.loads((Path(folder) / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None


__all__ = ["GgufSource", "converted_folder", "file_sha256", "is_gguf", "read_source", "source_of"]
