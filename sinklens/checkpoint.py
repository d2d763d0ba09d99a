"""One checkpoint folder on disk: validate it, load it, save it, fingerprint it.

Every model sinklens touches is a local Hugging Face folder; a GGUF file becomes one on
first use (`sinklens.gguf`). Loading always uses eager
attention (the only implementation that returns attention weights) and never unpickles:
safetensors is required, and a `.bin` file is read only with `weights_only=True`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from sinklens.errors import SinklensError

# transformers 5 draws a progress bar per load; with several checkpoints it buries output.
hf_logging.disable_progress_bar()

_WEIGHT_SUFFIXES = (".safetensors", ".bin")
# Files whose bytes decide what a checkpoint computes; their hash is its fingerprint.
_FINGERPRINT_GLOBS = (
    "*.safetensors",
    "*.bin",
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "gguf_source.json",  # a converted GGUF: the source file's hash and quantisation
)


def local_checkpoint(path: str | Path) -> Path:
    """The Hugging Face folder that `path` stands for: a folder as is; a `.gguf` file (or a
    folder holding one) converted once and cached; a known real model's name (`smollm2`)
    once `sinklens model fetch` has fetched it."""
    from sinklens import gguf

    folder = Path(path).expanduser()
    if not folder.exists():
        from sinklens.real_models import REAL_MODELS, fetched_folder

        if str(path).strip().lower() in REAL_MODELS:
            named = fetched_folder(str(path))
            if named is None:
                raise SinklensError(
                    f"real model {path} is not fetched yet; run `sinklens model fetch {path}` once"
                )
            return named
        return folder
    if gguf.is_gguf(folder):
        return gguf.converted_folder(folder)
    return folder


def validate_checkpoint_folder(path: str | Path) -> Path:
    """Check that `path` looks like a loadable HF causal-LM folder (or stands for one, see
    `local_checkpoint`); return that folder resolved."""
    folder = local_checkpoint(path)
    if not folder.exists():
        raise SinklensError(
            f"checkpoint folder {folder} does not exist; pass a local Hugging Face model folder"
        )
    if not folder.is_dir():
        raise SinklensError(
            f"checkpoint {folder} is a file, not a folder; pass the folder that holds "
            "config.json, or a .gguf file"
        )
    config = folder / "config.json"
    if not config.is_file():
        raise SinklensError(
            f"checkpoint folder {folder} has no config.json; save the model with save_pretrained"
        )
    try:
        json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SinklensError(
            f"checkpoint folder {folder} has a corrupt config.json ({err}); re-save the model"
        ) from None
    if not any(f.suffix in _WEIGHT_SUFFIXES for f in folder.iterdir()):
        raise SinklensError(
            f"checkpoint folder {folder} holds no weights (*.safetensors); save the model with save_pretrained"
        )
    return folder.resolve()


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved with a checkpoint, without loading its weights."""
    folder = validate_checkpoint_folder(path)
    try:
        return AutoTokenizer.from_pretrained(folder)
    except Exception as err:
        raise SinklensError(
            f"cannot load the tokenizer in {folder} ({type(err).__name__}: {err}); save it with the model"
        ) from None


def load_hf_model(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    device_map: str | dict[str, Any] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer with eager attention, in eval mode, validated.

    Refuses pickled `.bin` weights unless safetensors are absent, and then loads them with
    `weights_only=True` only. Raises `SinklensError` (one line, naming the folder) for a
    missing or corrupt folder, NaN weights, or a tokenizer that does not fit the model.
    With `device_map` (7B+ across GPUs) accelerate places the weights instead of `device`;
    the checks are the same.
    """
    folder = validate_checkpoint_folder(path)
    has_safetensors = any(folder.glob("*.safetensors"))
    tokenizer = load_tokenizer(folder)
    placement = {} if device_map is None else {"device_map": device_map}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder,
            dtype=dtype,
            attn_implementation="eager",
            use_safetensors=has_safetensors,
            weights_only=True,
            **placement,
        )
    except Exception as err:
        where = "" if device_map is None else f" with device_map={device_map!r}"
        raise SinklensError(
            f"cannot load the model in {folder}{where} ({type(err).__name__}: {str(err)[:200]}); the weights may be corrupt, re-save them"
        ) from None
    if device_map is None:
        model = model.to(torch.device(device))  # type: ignore[arg-type]
    model = model.eval()
    _check_tokenizer_fits(model, tokenizer, folder)
    _check_finite(model, folder)
    return model, tokenizer


def _check_tokenizer_fits(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path
) -> None:
    n_embed = int(model.get_input_embeddings().weight.shape[0])  # type: ignore[index]
    if len(tokenizer) > n_embed:
        raise SinklensError(
            f"tokenizer in {folder} has {len(tokenizer)} tokens but the model embeds only {n_embed}; "
            "use the tokenizer the model was trained with"
        )
    for name in ("bos_token_id", "eos_token_id"):
        token_id = getattr(tokenizer, name)
        model_id = getattr(model.config, name, None)
        if token_id is not None and model_id is not None and token_id != model_id:
            raise SinklensError(
                f"tokenizer in {folder} has {name}={token_id} but the model config says {model_id}; "
                "use the tokenizer the model was trained with"
            )


def _check_finite(model: PreTrainedModel, folder: Path) -> None:
    for name, param in model.named_parameters():
        # Offloaded weights (device_map) sit on the meta device and have no values to check.
        if param.device.type != "meta" and not torch.isfinite(param).all():
            raise SinklensError(
                f"checkpoint {folder} has non-finite weights in {name}; retrain or re-save it"
            )


def save_hf_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | Path
) -> None:
    """Save model (safetensors) and tokenizer side by side so `load_hf_model` can read them."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


# folder -> (names, sizes and mtimes of its fingerprinted files, their sha256)
_FINGERPRINTS: dict[Path, tuple[tuple[tuple[str, int, int], ...], str]] = {}


def checkpoint_fingerprint(path: str | Path) -> str:
    """sha256 over the names and bytes of the files that decide what the checkpoint computes.

    Hashing a 7B checkpoint takes minutes and runs are identified by it, so the hash is
    reused while no fingerprinted file in the folder changes name, size or mtime.
    """
    folder = validate_checkpoint_folder(path)
    files = sorted(
        {f for pattern in _FINGERPRINT_GLOBS for f in folder.glob(pattern) if f.is_file()}
    )
    stamp = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    cached = _FINGERPRINTS.get(folder)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        if file.name == "gguf_source.json":
            # Where the GGUF lay on this machine does not decide what the model computes:
            # the same file converted in two caches is the same checkpoint.
            source = json.loads(file.read_text(encoding="utf-8"))
            source.pop("path", None)
            digest.update(json.dumps(source, sort_keys=True).encode())
            continue
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    _FINGERPRINTS[folder] = (stamp, digest.hexdigest())
    return digest.hexdigest()


def context_length(config: Any) -> int | None:
    """The most positions a model reads (`max_position_embeddings`, GPT-2's `n_positions`),
    or None where the config does not say."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def model_architecture(config_or_path: str | Path | Any) -> dict[str, int]:
    """Layers, heads, kv heads, head size and width, read from a config (any HF family)."""
    config = (
        AutoConfig.from_pretrained(config_or_path)
        if isinstance(config_or_path, (str, Path))
        else config_or_path
    )
    # HF configs map family-specific names (GPT-2's n_layer, n_head, n_embd) onto these.
    n_layers = config.num_hidden_layers
    n_heads = config.num_attention_heads
    d_model = config.hidden_size
    n_kv = getattr(config, "num_key_value_heads", None) or n_heads
    head_dim = getattr(config, "head_dim", None) or d_model // n_heads
    return {
        "n_layers": int(n_layers),
        "n_heads": int(n_heads),
        "n_kv_heads": int(n_kv),
        "d_head": int(head_dim),
        "d_model": int(d_model),
    }


__all__ = [
    "checkpoint_fingerprint",
    "context_length",
    "load_hf_model",
    "load_tokenizer",
    "local_checkpoint",
    "model_architecture",
    "resolve_checkpoint",
    "save_hf_model",
    "validate_checkpoint_folder",
]


_HUB_PATTERNS = ["*.safetensors", "*.json", "tokenizer*", "*.model", "*.txt"]


def resolve_checkpoint(path: str | Path) -> Path:
    """A local folder as is; a hub name such as `org/model` is downloaded (safetensors only)
    into the Hugging Face cache first. Private checkpoints need `huggingface-cli login`."""
    folder = local_checkpoint(path)
    text = str(path)
    looks_like_hub = text.count("/") == 1 and not text.startswith((".", "/", "~"))
    if folder.exists() or not looks_like_hub:
        return folder
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(text, allow_patterns=_HUB_PATTERNS)
    except Exception as err:
        raise SinklensError(
            f"{text} is not a local folder and cannot be fetched from the hub "
            f"({type(err).__name__}); pass a local checkpoint folder or check the name, network and token"
        ) from None
    return Path(str(local))
