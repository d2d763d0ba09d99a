"""Load checkpoints by role into a `ModelSet`, through one back end, and validate the set.

Every checkpoint is read by `sinklens.checkpoint.load_hf_model` (safetensors, or `.bin`
only with `weights_only=True`; eager attention; tokenizer and weights checked) and then
wrapped by the chosen back end without touching its weights.

`ModelSet.validate()` checks that the checkpoints are comparable (same tokenizer by its full
definition, same architecture; `check_comparable`), that attention rows sum to 1 and hooks
fire on a probe input, and warns when two or more checkpoints are byte-identical or, given
forget texts, when `original` looks unlearned.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sinklens.batching import pad_id, right_pad
from sinklens.checkpoint import resolve_checkpoint
from sinklens.comparable import ModelSpec, check_comparable, check_original_role
from sinklens.errors import SinklensError
from sinklens.models.architectures import Architecture, architecture_of
from sinklens.models.backends import backend_named
from sinklens.models.loaded import KINDS, LoadedModel, parse_dtype

__all__ = ["PROBE_TEXTS", "ROLES", "ModelSet", "load_model", "load_models", "probe_model"]

ROLES: tuple[str, ...] = ("original", "unlearned", "backdoored")
PROBE_TEXTS = ("The quick brown fox jumps over the lazy dog.", "Hello world")


def load_model(
    path: str | Path,
    *,
    role: str = "model",
    backend: str = "bridge",
    dtype: str | torch.dtype = "float32",
    device: str = "cpu",
    device_map: str | dict[str, Any] | None = None,
) -> LoadedModel:
    """Load one checkpoint (a folder, a `.gguf`, or a fetched model's name) through
    `backend` (bridge, nnsight or hf); `device_map` spreads a large model across GPUs."""
    from sinklens.checkpoint import checkpoint_fingerprint, load_hf_model, model_architecture

    wrapping = backend_named(backend)
    torch_dtype = parse_dtype(dtype)
    folder = resolve_checkpoint(path)
    if any(folder.glob("*.bin")) and not any(folder.glob("*.safetensors")):
        warnings.warn(
            f"{folder} holds pickled .bin weights; loading them with weights_only=True. "
            "Re-save as safetensors to avoid pickle entirely.",
            stacklevel=2,
        )
    hf_model, tokenizer = load_hf_model(
        folder, dtype=torch_dtype, device=device, device_map=device_map
    )
    folder = folder.resolve()
    parts: Architecture | None
    try:
        parts = architecture_of(hf_model)
    except SinklensError as err:
        if wrapping.needs_parts:
            raise SinklensError(f"{err}; or use the bridge back end (--backend bridge)") from None
        parts = None
    return LoadedModel(
        role=role,
        path=folder,
        backend=backend,
        hf_model=hf_model,
        wrapper=wrapping.wrap(
            hf_model,
            folder,
            tokenizer,
            device=None if device_map is not None else device,
            dtype=torch_dtype,
        ),
        tokenizer=tokenizer,
        fingerprint=checkpoint_fingerprint(folder),
        architecture=model_architecture(hf_model.config),
        dtype=torch_dtype,
        parts=parts,
    )


@dataclass
class ModelSet:
    """Checkpoints by role, all comparable: same tokenizer, same architecture, same back end."""

    models: dict[str, LoadedModel]

    def __getitem__(self, role: str) -> LoadedModel:
        try:
            return self.models[role]
        except KeyError:
            raise SinklensError(
                f"no {role!r} checkpoint loaded; pass one (loaded roles: {', '.join(self.models)})"
            ) from None

    def __contains__(self, role: object) -> bool:
        return role in self.models

    def __iter__(self) -> Iterator[str]:
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(self.models)

    @property
    def first(self) -> LoadedModel:
        return next(iter(self.models.values()))

    @property
    def tokenizer(self) -> Any:
        return self.first.tokenizer

    @property
    def architecture(self) -> dict[str, int]:
        return self.first.architecture

    @property
    def n_layers(self) -> int:
        return self.first.n_layers

    def fingerprints(self) -> dict[str, str]:
        return {role: m.fingerprint for role, m in self.models.items()}

    def validate(self, *, probe: bool = True, forget_texts: Sequence[str] = ()) -> None:
        """Comparable tokenizers and architectures, sane attention, firing hooks; warnings
        for byte-identical checkpoints and, given `forget_texts`, for an `original` that
        looks unlearned (see `check_original_role`)."""
        items = list(self.models.values())
        check_comparable([ModelSpec.of(m) for m in items])
        if probe:
            for model in items:
                probe_model(model)
        if forget_texts:
            check_original_role(self, forget_texts)


def probe_model(model: LoadedModel) -> None:
    """Attention rows sum to 1 on real tokens and every hook fires, on a padded probe batch."""

    tok = model.tokenizer
    ids = [list(tok(t)["input_ids"]) for t in PROBE_TEXTS]
    input_ids, mask = right_pad(ids, pad_id(tok))
    seen: dict[tuple[str, int], Tensor] = {}

    def grab(kind: str, layer: int, t: Tensor) -> None:
        seen[(kind, layer)] = t.detach()

    layers = list(range(model.n_layers))
    logits = model.forward(input_ids, mask, layers=layers, kinds=KINDS, on_activation=grab)
    missing = [f"{k}@{lay}" for lay in layers for k in KINDS if (k, lay) not in seen]
    if missing:
        raise SinklensError(
            f"hooks did not fire for {model.path} ({', '.join(missing[:4])}); "
            f"the {model.backend} back end may not support this architecture, try --backend hf"
        )
    if logits is None or not torch.isfinite(logits.float()).all():
        raise SinklensError(f"{model.path} produces non-finite logits on a probe input; re-save it")
    tol = 1e-3 if model.dtype == torch.float32 else 3e-2
    valid = mask.bool().to(logits.device)
    for layer in layers:
        rows = seen[("pattern", layer)].float().sum(dim=-1)  # b h q
        err = (rows - 1.0).abs()[valid[:, None, :].expand_as(rows)]
        if err.numel() and float(err.max()) > tol:
            raise SinklensError(
                f"attention rows of {model.path} layer {layer} sum to {1 + float(err.max()):.4f}, "
                "not 1; load it with eager attention (sinklens does) and no weight processing"
            )


def load_models(
    paths: Mapping[str, str | Path],
    *,
    backend: str = "bridge",
    dtype: str | torch.dtype = "float32",
    device: str = "cpu",
    device_map: str | dict[str, Any] | None = None,
    validate: bool = True,
    forget_texts: Sequence[str] = (),
) -> ModelSet:
    """Load checkpoints by role, e.g. {"original": p0, "unlearned": p1, "backdoored": p2}.
    With `forget_texts`, also warn when the original looks unlearned (`check_original_role`)."""
    if not paths:
        raise SinklensError(
            "no checkpoints given; pass at least one of --original/--unlearned/--backdoored"
        )
    models = {
        role: load_model(
            path, role=role, backend=backend, dtype=dtype, device=device, device_map=device_map
        )
        for role, path in paths.items()
    }
    model_set = ModelSet(models)
    if validate:
        model_set.validate(forget_texts=forget_texts)
    return model_set
