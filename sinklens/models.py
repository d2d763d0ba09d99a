"""A set of comparable checkpoints (θ_o, θ_u, θ_b, ...) loaded by role, through one back end.

Every checkpoint is read by `sinklens.checkpoint` (safetensors, or `.bin` only with
`weights_only=True`; eager attention; NaN weights refused) and then wrapped by the chosen
back end without touching its weights:

* ``bridge`` (default): TransformerLens 4's `TransformerBridge.boot_transformers(path,
  hf_model=...)`. It keeps the raw HF weights (no LayerNorm folding or centring) and wraps
  the HF modules *in place*, so a bridged model is not a plain HF model any more.
* ``nnsight``: `nnsight.LanguageModel` around the same HF model; activations are read from
  module inputs/outputs (`v_proj`, `o_proj`, the attention module's weights output), never
  from `.source` operation names, which change between transformers releases.
* ``hf``: the plain HF model with PyTorch forward hooks.

The hf and nnsight back ends find each family's value and output projections by name:
a separate `v_proj`, or a fused projection whose layout is known for that family (GPT-2's
and Phi-3's `[q | k | v]`, GPT-NeoX's and Bloom's per-head `[head, (q, k, v), d_head]`);
any other fused layout is refused rather than guessed.

After loading, `ModelSet.validate()` checks that the checkpoints are comparable (same
tokenizer by its full definition, same architecture; `check_comparable`, which also takes
checkpoint folders or bridges for models that enter a computation outside a set), that
attention rows sum to 1 and hooks fire on a probe input, and warns when two or more
checkpoints are byte-identical or, given forget texts, when `original` looks unlearned.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from sinklens.batching import pad_id, right_pad
from sinklens.checkpoint import resolve_checkpoint
from sinklens.comparable import (
    ARCHITECTURE_KEYS,
    ModelSpec,
    check_comparable,
    check_original_role,
    forget_losses,
    tokenizer_definition,
    tokenizer_difference,
)
from sinklens.errors import SinklensError

Backend = Literal["bridge", "nnsight", "hf"]
BACKENDS: tuple[str, ...] = ("bridge", "nnsight", "hf")
ROLES: tuple[str, ...] = ("original", "unlearned", "backdoored")
KINDS: tuple[str, ...] = ("value", "head_out", "pattern")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# on_activation(kind, layer, tensor): pattern [b, head, q, k], value [b, pos, kv, d_head],
# head_out [b, pos, head, d_head] (the attention output before the output projection).
ActivationFn = Callable[[str, int, Tensor], None]


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """`float32`, `bfloat16` or `float16` (or a torch dtype) as a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.strip().lower()]
    except KeyError:
        raise SinklensError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}") from None


@dataclass(frozen=True)
class _ModulePaths:
    """Where a family keeps its decoder layers and the attention parts sinklens reads."""

    layers: str
    attn: str
    value: str  # module whose output holds the values (the fused qkv where there is one)
    out_proj: str  # module whose input is the per-head attention output
    # How `value`'s output holds the values: "separate" (a v_proj, [kv * d_head]),
    # "fused" ([q | k | v] over all heads: GPT-2's c_attn, Phi-3's qkv_proj), or
    # "per_head" ([head, (q, k, v), d_head]: GPT-NeoX's and Bloom's query_key_value).
    value_layout: str = "separate"

    @property
    def fused_qkv(self) -> bool:
        return self.value_layout != "separate"


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


_LAYER_PATHS = (
    "model.layers",
    "transformer.h",
    "gpt_neox.layers",
    "model.decoder.layers",
    "transformer.layers",
)
# GPT-Neo nests its attention one level deeper (`attn.attention`).
_ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention", "attn.attention")
_OUT_NAMES = ("o_proj", "out_proj", "dense", "c_proj")
# Fused projections, by model_type: their layouts differ between families, and reading one
# with another's layout gives plausible, wrong values, so only known layouts are accepted.
_FUSED_LAYOUTS: dict[str, tuple[str, str]] = {
    "gpt2": ("c_attn", "fused"),
    "phi3": ("qkv_proj", "fused"),
    "gpt_neox": ("query_key_value", "per_head"),
    "bloom": ("query_key_value", "per_head"),
}


def _module_paths(model: nn.Module) -> _ModulePaths:
    model_type = str(getattr(getattr(model, "config", None), "model_type", "") or "")
    for layers in _LAYER_PATHS:
        try:
            first = _get(model, layers + ".0")
        except (AttributeError, IndexError, TypeError):
            continue
        for attn in _ATTN_NAMES:
            try:
                module = _get(first, attn)
            except AttributeError:
                continue
            out = next((name for name in _OUT_NAMES if hasattr(module, name)), None)
            if out is None:
                continue
            if hasattr(module, "v_proj"):
                return _ModulePaths(layers, attn, "v_proj", out)
            fused = _FUSED_LAYOUTS.get(model_type)
            if fused is not None and hasattr(module, fused[0]):
                return _ModulePaths(layers, attn, fused[0], out, value_layout=fused[1])
    raise SinklensError(
        f"the hf and nnsight back ends cannot read the attention values of "
        f"{type(model).__name__} (model_type {model_type!r}): no v_proj and no fused qkv "
        "projection of a known layout; use the bridge back end (--backend bridge), or a "
        "Llama-, Qwen-, Mistral-, Gemma-, Phi-, GPT-2-, GPT-J-, GPT-Neo-, GPT-NeoX- or "
        "Bloom-family model"
    )


@dataclass
class LoadedModel:
    """One checkpoint, its back end wrapper, and how to read activations from it."""

    role: str
    path: Path
    backend: str
    hf_model: Any  # a PreTrainedModel; with the bridge back end its modules are wrapped in place
    wrapper: Any
    tokenizer: Any
    fingerprint: str
    architecture: dict[str, int]
    dtype: torch.dtype
    _paths: _ModulePaths | None = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        return self.hf_model.get_input_embeddings().weight.device

    @property
    def n_layers(self) -> int:
        return self.architecture["n_layers"]

    def forward(
        self,
        input_ids: Int[Tensor, "batch pos"],
        attention_mask: Int[Tensor, "batch pos"],
        *,
        layers: Sequence[int] = (),
        kinds: Sequence[str] = (),
        on_activation: ActivationFn | None = None,
        need_logits: bool = True,
    ) -> Float[Tensor, "batch pos vocab"] | None:
        """Run one batch; hand each requested layer's activations to `on_activation` as
        they are produced (so at most one layer's pattern is alive at a time)."""
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown activation kinds {sorted(unknown)}; use {KINDS}")
        check_layers(layers, self.n_layers)
        callback = on_activation or (lambda kind, layer, t: None)
        input_ids = input_ids.to(self.device)
        attention_mask = attention_mask.to(self.device)
        with torch.inference_mode():
            if self.backend == "bridge":
                return self._forward_bridge(input_ids, attention_mask, layers, kinds, callback)
            if self.backend == "nnsight":
                return self._forward_nnsight(
                    input_ids, attention_mask, layers, kinds, callback, need_logits
                )
            return self._forward_hf(input_ids, attention_mask, layers, kinds, callback)

    def _split_value(self, t: Tensor) -> Tensor:
        arch = self.architecture
        n_heads, n_kv, d_head = arch["n_heads"], arch["n_kv_heads"], arch["d_head"]
        layout = self._paths.value_layout if self._paths is not None else "separate"
        if layout == "fused":  # [q (heads) | k (kv) | v (kv)]
            t = t[..., (n_heads + n_kv) * d_head :]
        elif layout == "per_head":  # [head, (q, k, v), d_head], never [q | k | v]
            return t.reshape(*t.shape[:2], n_heads, 3, d_head)[..., 2, :]
        return t.reshape(*t.shape[:2], n_kv, d_head)

    def _split_heads(self, t: Tensor) -> Tensor:
        return t.reshape(*t.shape[:2], self.architecture["n_heads"], self.architecture["d_head"])

    def _forward_bridge(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        layers: Sequence[int],
        kinds: Sequence[str],
        callback: ActivationFn,
    ) -> Tensor:
        # Aliases such as `attn.hook_v` / `attn.hook_z` fire in run_with_cache but not in
        # run_with_hooks, so hook the canonical component points.
        names = {
            "pattern": "blocks.{}.attn.hook_pattern",
            "value": "blocks.{}.attn.v.hook_out",
            "head_out": "blocks.{}.attn.o.hook_in",
        }
        hooks = []
        for layer in layers:
            for kind in kinds:

                def hook(t: Tensor, hook: Any, kind: str = kind, layer: int = layer) -> None:
                    if kind == "value":
                        t = t if t.dim() == 4 else self._split_value(t)
                    elif kind == "head_out":
                        t = t if t.dim() == 4 else self._split_heads(t)
                    callback(kind, layer, t)

                hooks.append((names[kind].format(layer), hook))
        return self.wrapper.run_with_hooks(
            input_ids, attention_mask=attention_mask, fwd_hooks=hooks
        )

    def _forward_hf(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        layers: Sequence[int],
        kinds: Sequence[str],
        callback: ActivationFn,
    ) -> Tensor:
        paths = self._paths
        assert paths is not None
        handles = []
        try:
            for layer in layers:
                attn = _get(self.hf_model, f"{paths.layers}.{layer}.{paths.attn}")
                if "value" in kinds:
                    handles.append(
                        _get(attn, paths.value).register_forward_hook(
                            lambda m, a, out, layer=layer: callback(
                                "value", layer, self._split_value(out)
                            )
                        )
                    )
                if "head_out" in kinds:
                    handles.append(
                        _get(attn, paths.out_proj).register_forward_pre_hook(
                            lambda m, args, layer=layer: callback(
                                "head_out", layer, self._split_heads(args[0])
                            )
                        )
                    )
                if "pattern" in kinds:
                    handles.append(
                        attn.register_forward_hook(
                            lambda m, a, out, layer=layer: callback("pattern", layer, out[1])
                        )
                    )
            return self.hf_model(input_ids=input_ids, attention_mask=attention_mask).logits
        finally:
            for handle in handles:
                handle.remove()

    def _forward_nnsight(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        layers: Sequence[int],
        kinds: Sequence[str],
        callback: ActivationFn,
        need_logits: bool,
    ) -> Tensor | None:
        paths = self._paths
        assert paths is not None
        lm = self.wrapper
        logits = None
        # Inside a trace the body runs alongside the model on real tensors, so reducing
        # here keeps one layer alive at a time; modules must be visited in execution order.
        with lm.trace({"input_ids": input_ids, "attention_mask": attention_mask}):
            for layer in sorted(layers):
                attn = _get(lm, f"{paths.layers}.{layer}.{paths.attn}")
                if "value" in kinds:
                    callback("value", layer, self._split_value(_get(attn, paths.value).output))
                if "head_out" in kinds:
                    callback("head_out", layer, self._split_heads(_get(attn, paths.out_proj).input))
                if "pattern" in kinds:
                    callback("pattern", layer, attn.output[1])
            if need_logits:
                logits = lm.output.logits.save()
        return logits


def check_layers(layers: Sequence[int] | int, n_layers: int) -> None:
    """Raise a one-line error listing the valid range if any layer index is out of range."""
    items = [layers] if isinstance(layers, int) else list(layers)
    bad = [lay for lay in items if not 0 <= int(lay) < n_layers]
    if bad:
        raise SinklensError(
            f"layer index {bad[0]} is out of range; this model has {n_layers} layers, "
            f"use 0..{n_layers - 1} (or -1 for the last)"
        )


def resolve_layer(layer: int, n_layers: int) -> int:
    """A layer index with Python-style negatives (-1 = last), range-checked."""
    resolved = layer + n_layers if layer < 0 else layer
    if not 0 <= resolved < n_layers:
        raise SinklensError(
            f"layer index {layer} is out of range; this model has {n_layers} layers, "
            f"use 0..{n_layers - 1} (or -1 for the last)"
        )
    return resolved


def _load_hf(path: Path, dtype: torch.dtype, device: str, device_map: Any) -> tuple[Any, Any]:
    from sinklens.checkpoint import load_hf_model, load_tokenizer, validate_checkpoint_folder

    if device_map is None:
        return load_hf_model(path, dtype=dtype, device=device)
    # Spread across GPUs (7B+): same guarantees as load_hf_model, placement left to accelerate.
    from transformers import AutoModelForCausalLM

    folder = validate_checkpoint_folder(path)
    tokenizer = load_tokenizer(folder)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder,
            dtype=dtype,
            attn_implementation="eager",
            device_map=device_map,
            use_safetensors=any(folder.glob("*.safetensors")),
            weights_only=True,
        )
    except Exception as err:
        raise SinklensError(
            f"cannot load the model in {folder} with device_map={device_map!r} "
            f"({type(err).__name__}: {str(err)[:200]}); check the folder and the GPUs"
        ) from None
    model.eval()
    for name, param in model.named_parameters():
        if param.device.type != "meta" and not torch.isfinite(param).all():
            raise SinklensError(
                f"checkpoint {folder} has non-finite weights in {name}; retrain or re-save it"
            )
    return model, tokenizer


def load_model(
    path: str | Path,
    *,
    role: str = "model",
    backend: str = "bridge",
    dtype: str | torch.dtype = "float32",
    device: str = "cpu",
    device_map: str | dict[str, Any] | None = None,
) -> LoadedModel:
    """Load one checkpoint folder through `backend` (bridge, nnsight or hf)."""
    from sinklens.checkpoint import checkpoint_fingerprint, model_architecture

    if backend not in BACKENDS:
        raise SinklensError(f"unknown back end {backend!r}; use one of {', '.join(BACKENDS)}")
    torch_dtype = parse_dtype(dtype)
    folder = resolve_checkpoint(path)
    if any(folder.glob("*.bin")) and not any(folder.glob("*.safetensors")):
        warnings.warn(
            f"{folder} holds pickled .bin weights; loading them with weights_only=True. "
            "Re-save as safetensors to avoid pickle entirely.",
            stacklevel=2,
        )
    hf_model, tokenizer = _load_hf(folder, torch_dtype, device, device_map)
    folder = folder.resolve()
    arch = model_architecture(hf_model.config)
    paths: _ModulePaths | None
    if backend == "bridge":
        # The bridge reads values and head outputs through its own hooks; the paths are
        # only a fallback for reshaping, so a family they do not know is no reason to refuse.
        try:
            paths = _module_paths(hf_model)
        except SinklensError:
            paths = None
    else:
        paths = _module_paths(hf_model)
    wrapper: Any = hf_model
    if backend == "bridge":
        from transformer_lens.model_bridge import TransformerBridge

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wrapper = TransformerBridge.boot_transformers(
                str(folder),
                hf_model=hf_model,
                tokenizer=tokenizer,
                device=None if device_map is not None else device,
                dtype=torch_dtype,
            )
    elif backend == "nnsight":
        from nnsight import LanguageModel

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # LanguageModel's deprecation notice
            wrapper = LanguageModel(hf_model, tokenizer=tokenizer)
    return LoadedModel(
        role=role,
        path=folder,
        backend=backend,
        hf_model=hf_model,
        wrapper=wrapper,
        tokenizer=tokenizer,
        fingerprint=checkpoint_fingerprint(folder),
        architecture=arch,
        dtype=torch_dtype,
        _paths=paths,
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


PROBE_TEXTS = ("The quick brown fox jumps over the lazy dog.", "Hello world")


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


__all__ = [
    "ARCHITECTURE_KEYS",
    "BACKENDS",
    "KINDS",
    "ROLES",
    "ActivationFn",
    "LoadedModel",
    "ModelSet",
    "ModelSpec",
    "check_comparable",
    "check_layers",
    "check_original_role",
    "forget_losses",
    "load_model",
    "load_models",
    "parse_dtype",
    "probe_model",
    "resolve_checkpoint",
    "resolve_layer",
    "tokenizer_definition",
    "tokenizer_difference",
]
