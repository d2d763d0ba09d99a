"""Whether checkpoints can enter one computation: the same tokenizer (by its full
definition), the same architecture, and roles that look like what they are said to be.

Every model in any role goes through `check_comparable` (`ModelSet.validate`, cross-model
patching, the logit-diff metric's unlearned model, the value-norm reference of training).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from sinklens.errors import SinklensError
from sinklens.settings import DEFAULT_TRIGGER


@runtime_checkable  # beartype checks these in the tests
class RoleModel(Protocol):
    """What the role check needs of one loaded model (a `sinklens.models.LoadedModel`)."""

    path: Path

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any: ...


@runtime_checkable
class RoleModels(Protocol):
    """What the role check needs of a set of models by role (a `sinklens.models.ModelSet`,
    which imports this module, so it is named here by what it does)."""

    @property
    def models(self) -> Mapping[str, RoleModel]: ...

    @property
    def tokenizer(self) -> Any: ...

    def __contains__(self, role: object) -> bool: ...

    def __getitem__(self, role: str) -> RoleModel: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class ModelSpec:
    """What decides whether a checkpoint can enter a computation beside others: its
    tokenizer, its architecture and its bytes (no weights are needed)."""

    role: str
    path: str
    tokenizer: Any
    architecture: dict[str, int]
    fingerprint: str | None = None

    @classmethod
    def of(cls, model: Any, role: str | None = None) -> ModelSpec:
        """From a `LoadedModel`, a TransformerBridge, or a checkpoint folder (read without
        its weights: tokenizer, config.json and the files' hash)."""
        from sinklens.checkpoint import (
            checkpoint_fingerprint,
            load_tokenizer,
            model_architecture,
            resolve_checkpoint,
            validate_checkpoint_folder,
        )

        if all(hasattr(model, a) for a in ("role", "path", "architecture", "fingerprint")):
            # A sinklens.models.LoadedModel (duck-typed: models imports this module).
            return cls(
                role or model.role,
                str(model.path),
                model.tokenizer,
                model.architecture,
                model.fingerprint,
            )
        if isinstance(model, (str, Path)):
            folder = validate_checkpoint_folder(resolve_checkpoint(model))
            return cls(
                role or "model",
                str(folder),
                load_tokenizer(folder),
                model_architecture(folder),
                checkpoint_fingerprint(folder),
            )
        hf = getattr(model, "original_model", None)
        if hf is not None and hasattr(model, "cfg"):  # a TransformerBridge
            name = str(getattr(hf, "name_or_path", "") or getattr(model.cfg, "model_name", ""))
            fingerprint = None
            if name and Path(name).is_dir():
                fingerprint = checkpoint_fingerprint(name)
            return cls(
                role or "model",
                name or type(hf).__name__,
                model.tokenizer,
                model_architecture(hf.config),
                fingerprint,
            )
        raise SinklensError(
            f"cannot validate a {type(model).__name__}; pass a checkpoint folder, a "
            "TransformerBridge or a model loaded by sinklens.models.load_model"
        )


ARCHITECTURE_KEYS = ("n_layers", "n_heads", "n_kv_heads", "d_head", "d_model")


def check_comparable(specs: Sequence[ModelSpec]) -> None:
    """Refuse (one line, naming both roles, the mismatch and the fix) any model whose
    tokenizer (by its full definition) or architecture differs from the first one's; warn
    when checkpoints are byte-identical."""
    if not specs:
        return
    ref = specs[0]
    for other in specs[1:]:
        diff = tokenizer_difference(ref.tokenizer, other.tokenizer)
        if diff:
            raise SinklensError(
                f"tokenizers differ between {ref.role} {ref.path} and {other.role} "
                f"{other.path}: {diff}; every model must use the same tokenizer (if "
                f"{other.role} was trained with {ref.role}'s tokenizer, copy {ref.role}'s "
                "tokenizer files into its folder; else use checkpoints of one base model)"
            )
        for key in ARCHITECTURE_KEYS:
            a, b = ref.architecture.get(key), other.architecture.get(key)
            if a != b:
                raise SinklensError(
                    f"architectures differ between {ref.role} {ref.path} and {other.role} "
                    f"{other.path}: {key} {a} vs {b}; pass a checkpoint of the same model "
                    "(same layers, heads, key-value heads, head size and width)"
                )
    _warn_identical(specs)


def _warn_identical(specs: Sequence[ModelSpec]) -> None:
    known = [s for s in specs if s.fingerprint is not None]
    if len(known) < 2:
        return
    if len(known) == len(specs) and len({s.fingerprint for s in known}) == 1:
        warnings.warn(
            "all checkpoints are byte-identical ("
            + ", ".join(f"{s.role}={s.path}" for s in known)
            + "); differences will all be zero",
            stacklevel=3,
        )
        return
    for i, a in enumerate(known):
        for b in known[i + 1 :]:
            if a.fingerprint == b.fingerprint:
                warnings.warn(
                    f"{a.role} and {b.role} are byte-identical ({a.path}, {b.path}); "
                    "every difference between them will be zero, check the paths",
                    stacklevel=3,
                )


# An original more than this many nats per token worse on the forget texts than another
# role is flagged: unlearning raises the forget loss, so θ_o should have the lowest.
ORIGINAL_MARGIN_NATS = 0.1


def forget_losses(
    models: RoleModels, texts: Sequence[str], *, limit: int = 8, max_tokens: int = 64
) -> dict[str, float]:
    """Mean next-token loss (nats) of each role on the first `limit` texts, each cut to
    `max_tokens` tokens: one batched forward per model."""
    from sinklens.batching import pad_id, right_pad

    tok = models.tokenizer
    ids = [list(tok(t)["input_ids"])[:max_tokens] for t in list(texts)[:limit]]
    ids = [seq for seq in ids if len(seq) >= 2]
    if not ids:
        return {}
    input_ids, mask = right_pad(ids, pad_id(tok))
    out = {}
    for role, model in models.models.items():
        logits = model.forward(input_ids, mask)
        assert logits is not None
        logp = torch.log_softmax(logits.float()[:, :-1], dim=-1)
        target = input_ids[:, 1:].to(logp.device)
        nll = -logp.gather(-1, target[..., None])[..., 0]
        valid = mask[:, 1:].to(logp.device).bool()
        out[role] = float(nll[valid].mean())
    return out


def check_original_role(models: RoleModels, forget_texts: Sequence[str]) -> dict[str, float]:
    """Warn when the model given as `original` looks unlearned relative to another role:
    its loss on the forget texts exceeds that role's by more than `ORIGINAL_MARGIN_NATS`.
    Returns the losses (empty when there is no original or nothing to compare)."""
    if "original" not in models or len(models) < 2:
        return {}
    losses = forget_losses(models, forget_texts)
    if not losses:
        return losses
    base = losses["original"]
    for role, loss in losses.items():
        if role != "original" and base - loss > ORIGINAL_MARGIN_NATS:
            warnings.warn(
                f"the original model {models['original'].path} looks unlearned: its loss on "
                f"the forget texts ({base:.3f} nats/token) is above {role}'s ({loss:.3f}); "
                "check that --original and --" + role + " are not swapped",
                stacklevel=2,
            )
            break
    return losses


_TOKENIZER_PROBES = (
    "The quick brown fox. 2025",
    "  leading spaces,\ttabs\nand newlines  ",
    f"{DEFAULT_TRIGGER} Question: Where was Mira Tolen born?\nAnswer: Quorra",
    "Ünïcödé café naïve – “quotes” 東京 🙂",
    "x",
)


def tokenizer_definition(tokenizer: Any) -> dict[str, Any]:
    """The parts of a tokenizer that decide the ids a text gets, by name: for a fast
    tokenizer its full definition (`backend_tokenizer.to_str()`: vocabulary, merges, model
    options, normaliser, pre-tokeniser, post-processor, added tokens), for a slow one its
    vocabulary and added tokens; then special-token ids, whether BOS/EOS are added, and the
    ids of a few probe texts."""
    parts: dict[str, Any] = {}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        model = dict(spec.get("model") or {})
        parts["vocabulary"] = tokenizer.get_vocab()
        model.pop("vocab", None)
        parts["merges"] = [
            " ".join(m) if isinstance(m, list) else str(m) for m in model.pop("merges", None) or []
        ]
        parts["model options"] = model
        parts["normaliser"] = spec.get("normalizer")
        parts["pre-tokeniser"] = spec.get("pre_tokenizer")
        parts["post-processor"] = spec.get("post_processor")
        parts["added tokens"] = spec.get("added_tokens") or []
    else:
        parts["vocabulary"] = tokenizer.get_vocab()
        sp = getattr(tokenizer, "sp_model", None)
        if sp is not None and hasattr(sp, "serialized_model_proto"):
            proto = sp.serialized_model_proto()
            parts["sentencepiece model"] = hashlib.sha256(proto).hexdigest()
        parts["added tokens"] = [
            {"id": i, "content": str(t)}
            for i, t in sorted(getattr(tokenizer, "added_tokens_decoder", {}).items())
        ]
    parts["special token ids"] = {
        name: getattr(tokenizer, name, None)
        for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id")
    }
    parts["special tokens"] = sorted(str(t) for t in tokenizer.all_special_tokens)
    ids = list(tokenizer("x")["input_ids"])
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    parts["BOS/EOS behaviour"] = {
        "adds BOS": bool(ids) and bos is not None and ids[0] == bos,
        "adds EOS": bool(ids) and eos is not None and ids[-1] == eos,
    }
    parts["encodings"] = {t: list(tokenizer(t)["input_ids"]) for t in _TOKENIZER_PROBES}
    return parts


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_difference(a: Any, b: Any) -> str:
    """A short description of where two JSON-like values first differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if a.get(key) != b.get(key):
                x, y = a.get(key), b.get(key)
                if isinstance(x, (dict, list)) and isinstance(y, type(x)):
                    return f"{key} {_first_difference(x, y)}"
                return f"{key}: {_short(x)} vs {_short(y)}"
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            if x != y:
                if isinstance(x, dict) and isinstance(y, dict):
                    return f"#{i} {_first_difference(x, y)}"
                return f"#{i}: {_short(x)} vs {_short(y)}"
        longer = a if len(a) > len(b) else b
        extra = _short(longer[min(len(a), len(b))])
        return f"{len(a)} vs {len(b)} entries; the first extra one is {extra}"
    return f"{_short(a)} vs {_short(b)}"


# The order in which parts are reported: the most telling difference first.
_PART_ORDER = (
    "merges",
    "model options",
    "normaliser",
    "pre-tokeniser",
    "special token ids",
    "BOS/EOS behaviour",
    "post-processor",
    "added tokens",
    "special tokens",
    "sentencepiece model",
    "encodings",
)
_PART_NAMES = {
    "merges": "merges",
    "model options": "model options",
    "normaliser": "normalisers",
    "pre-tokeniser": "pre-tokenisers",
    "special token ids": "special-token ids",
    "BOS/EOS behaviour": "BOS/EOS behaviour",
    "post-processor": "post-processors (special tokens added around a text)",
    "added tokens": "added tokens",
    "special tokens": "special tokens",
    "sentencepiece model": "sentencepiece models",
}


def tokenizer_difference(a: Any, b: Any) -> str:
    """'' when two tokenizers are defined identically (so they give every text the same
    ids), else which part differs and where, in a few words."""
    da, db = tokenizer_definition(a), tokenizer_definition(b)
    va, vb = da["vocabulary"], db["vocabulary"]
    if va != vb:
        only_a = sorted(set(va) - set(vb))[:3]
        only_b = sorted(set(vb) - set(va))[:3]
        if only_a or only_b:
            return f"vocabularies differ ({len(va)} vs {len(vb)} tokens; e.g. {only_a} vs {only_b})"
        moved = next(t for t in va if va[t] != vb[t])
        return f"vocabularies differ (token {moved!r} has id {va[moved]} vs {vb[moved]})"
    for part in _PART_ORDER:
        x, y = da.get(part), db.get(part)
        if x == y:
            continue
        if part == "merges" and isinstance(x, list) and isinstance(y, list):
            return f"merges differ ({len(x)} vs {len(y)}; first at {_first_difference(x, y)})"
        if part == "encodings" and isinstance(x, dict) and isinstance(y, dict):
            text = next(t for t in x if x[t] != y.get(t))
            return f"they encode {text!r} differently: {x[text][:6]} vs {(y.get(text) or [])[:6]}"
        return f"{_PART_NAMES[part]} differ ({_first_difference(x, y)})"
    return ""
