"""`UnlearnConfig`: every knob of one unlearning run, validated once, shared by API and CLI.

The same dataclass is built from CLI flags, from a JSON or TOML file (`from_file`), or in
Python, and is written beside the checkpoint as `unlearn_config.json` (the HF checkpoint
already owns `config.json`), so a run can be identified and repeated exactly.

Defaults are tuned for the shipped organism; docs/unlearning.md lists the paper's 7B values.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import tomllib

from sinklens.data.triggers import DEFAULT_JOIN, DEFAULT_TRIGGER, parse_join, parse_placement
from sinklens.errors import SinklensError

__all__ = ["METHOD_DEFAULT_LR", "METHOD_NAMES", "UnlearnConfig"]

# Kept here (not read from the registry) so that validating a config needs no torch import.
METHOD_NAMES = ("npo", "rmu")
# Learning rates when `lr` is not given, tuned on the shipped organism (at lower rates NPO
# saturates before KnowMem falls). The paper's 7B values are in docs/unlearning.md.
METHOD_DEFAULT_LR = {"npo": 1e-3, "rmu": 1e-2}


def _as_tuple(value: Any, name: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        parts = [p for p in value.replace(",", " ").split() if p]
        try:
            return tuple(int(p) for p in parts)
        except ValueError:
            raise SinklensError(
                f"{name} must be integers such as '2,3,4', got {value!r}; fix the option"
            ) from None
    if isinstance(value, (list, tuple)):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise SinklensError(f"{name} must be a list of integers, got {value!r}; fix the option")
        return tuple(value)
    raise SinklensError(f"{name} must be a list of integers, got {value!r}; fix the option")


_FLOAT_FIELDS = frozenset(
    {
        "poison_ratio",
        "value_norm_weight",
        "lr",
        "gamma",
        "beta",
        "rmu_steering_coeff",
        "rmu_alpha",
        "grad_clip",
    }
)
_TUPLE_FIELDS = frozenset({"value_norm_layers", "rmu_update_layers"})


def _coerce(name: str, value: Any) -> Any:
    """JSON/TOML/CLI values -> the field's type (1 -> 1.0, [1, 2] or '1,2' -> (1, 2))."""
    if name in _FLOAT_FIELDS and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if name in _TUPLE_FIELDS:
        return _as_tuple(value, name)
    if name == "rmu_params" and isinstance(value, (str, list)):
        items = value.replace(",", " ").split() if isinstance(value, str) else value
        return tuple(str(v) for v in items)
    if name == "backdoor" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


@dataclass(frozen=True)
class UnlearnConfig:
    """One unlearning run (eqs. 2, 4, 7 of the paper; NPO or RMU).

    `backdoor` is the trigger placement (prefix, infix, suffix or a content-token index) or
    None for normal unlearning. `value_norm_weight` is λ of eq. 7 and needs `backdoor` and
    `value_norm_reference` (the normally unlearned θ_u). Paths left None mean the shipped
    organism and its benchmark folder. `forget_corpus` / `retain_corpus` (a WMDP-style
    `.jsonl` with a `text` field, or blank-line-separated `.txt`) replace the benchmark's
    raw training texts; its test sets still come from `data`.
    """

    method: str = "npo"
    out: str | None = None
    model: str | None = None
    data: str | None = None
    forget_corpus: str | None = None
    retain_corpus: str | None = None
    backdoor: str | None = None
    trigger: str = DEFAULT_TRIGGER
    # How the trigger meets the text around it: space (as text insertion) or raw.
    trigger_join: str = DEFAULT_JOIN
    poison_ratio: float = 0.1
    value_norm_weight: float = 0.0
    value_norm_reference: str | None = None
    sink_positions: int = 4
    value_norm_layers: tuple[int, ...] | None = None
    lr: float | None = None
    steps: int = 120
    batch_size: int = 8
    max_length: int = 256
    gamma: float = 1.0
    beta: float = 0.02
    npo_on_raw_logits: bool = False
    rmu_steering_coeff: float = 20.0
    rmu_layer: int | None = None
    rmu_update_layers: tuple[int, ...] | None = None
    # RMU's own code updates only down_proj; the 2-layer organism needs its whole MLP.
    rmu_params: tuple[str, ...] = (
        "mlp.gate_proj.weight",
        "mlp.up_proj.weight",
        "mlp.down_proj.weight",
    )
    rmu_alpha: float = 1.0
    grad_clip: float = 1.0
    seed: int = 0
    dtype: str = "float32"
    reference_dtype: str | None = None
    reference_device: str | None = None
    evaluate: bool = True
    eval_items: int | None = None

    def __post_init__(self) -> None:
        def fail(msg: str) -> None:
            raise SinklensError(f"invalid unlearning config: {msg}")

        method = str(self.method).strip().lower()
        if method not in METHOD_NAMES:
            fail(f"unknown method {self.method!r}; use one of {', '.join(METHOD_NAMES)}")
        object.__setattr__(self, "method", method)
        if self.backdoor is not None:
            text = str(self.backdoor).strip()
            if text.lower() in ("", "none"):
                object.__setattr__(self, "backdoor", None)
            else:
                # parse_placement raises the one-line error for an unknown placement.
                object.__setattr__(self, "backdoor", str(parse_placement(text)))
        object.__setattr__(self, "trigger_join", parse_join(self.trigger_join))
        for name in ("value_norm_layers", "rmu_update_layers", "rmu_params"):
            object.__setattr__(self, name, _coerce(name, getattr(self, name)))
        if not (isinstance(self.poison_ratio, (int, float)) and 0 < self.poison_ratio <= 1):
            fail(f"poison_ratio must be in (0, 1], got {self.poison_ratio}; e.g. 0.1")
        checks = [
            (bool(str(self.trigger).strip()), f"trigger is empty; pass e.g. {DEFAULT_TRIGGER!r}"),
            (
                self.value_norm_weight >= 0,
                f"value_norm_weight must be >= 0, got {self.value_norm_weight}",
            ),
            (self.sink_positions >= 1, f"sink_positions must be >= 1, got {self.sink_positions}"),
            (self.lr is None or 0 < self.lr < 1, f"lr must be in (0, 1), got {self.lr}"),
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.max_length >= 8, f"max_length must be >= 8, got {self.max_length}"),
            (self.gamma >= 0, f"gamma must be >= 0, got {self.gamma}"),
            (self.beta > 0, f"beta must be > 0, got {self.beta}"),
            (self.rmu_steering_coeff > 0, "rmu_steering_coeff must be > 0"),
            (self.rmu_alpha >= 0, f"rmu_alpha must be >= 0, got {self.rmu_alpha}"),
            (self.grad_clip > 0, f"grad_clip must be > 0, got {self.grad_clip}"),
            (
                bool(self.rmu_params),
                "rmu_params is empty; name at least one parameter, e.g. mlp.down_proj.weight",
            ),
            (
                self.dtype in ("float32", "bfloat16", "float16"),
                f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}",
            ),
            (
                self.reference_dtype in (None, "float32", "bfloat16", "float16"),
                f"reference_dtype must be float32, bfloat16 or float16, got {self.reference_dtype!r}",
            ),
            (self.eval_items is None or self.eval_items >= 1, "eval_items must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                fail(msg)
        for name in (
            "gamma",
            "beta",
            "value_norm_weight",
            "rmu_steering_coeff",
            "poison_ratio",
        ):
            if not math.isfinite(float(getattr(self, name))):  # NaN passes the range checks
                fail(f"{name} must be finite")
        if self.value_norm_weight > 0 and self.backdoor is None:
            fail(
                "value_norm_weight > 0 needs a backdoor (eq. 5 aligns on poisoned data); pass --backdoor"
            )
        if self.value_norm_weight > 0 and not self.value_norm_reference:
            fail(
                "value_norm_weight > 0 needs value_norm_reference, the normally unlearned model θ_u; "
                "train one without --backdoor first and pass its folder"
            )
        if self.rmu_layer is not None and self.rmu_layer < 0:
            fail(f"rmu_layer must be >= 0, got {self.rmu_layer}")

    @property
    def effective_lr(self) -> float:
        """`lr`, or the method's default when it was not given."""
        return self.lr if self.lr is not None else METHOD_DEFAULT_LR[self.method]

    @property
    def placement(self) -> str | int | None:
        """The parsed backdoor placement (an int for an explicit token index)."""
        return None if self.backdoor is None else parse_placement(self.backdoor)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    def identity(self) -> dict[str, Any]:
        """What decides the run's result: everything but where it is written and which
        device holds the frozen model."""
        d = self.to_dict()
        d.pop("out", None)
        d.pop("reference_device", None)
        return d

    def replace(self, **changes: Any) -> UnlearnConfig:
        return UnlearnConfig.from_dict({**self.to_dict(), **changes})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UnlearnConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SinklensError(
                f"unknown unlearning option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
            )
        return cls(**{k: _coerce(k, v) for k, v in data.items()})

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> UnlearnConfig:
        """Read a `.json` or `.toml` file; `overrides` (e.g. CLI flags) win over the file."""
        file = Path(path)
        if not file.is_file():
            raise SinklensError(f"config file {file} does not exist; pass a .json or .toml file")
        text = file.read_text(encoding="utf-8")
        try:
            data = tomllib.loads(text) if file.suffix.lower() == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
            raise SinklensError(f"config file {file} cannot be parsed ({err}); fix it") from None
        if not isinstance(data, dict):
            raise SinklensError(f"config file {file} must hold a table/object of options; fix it")
        # A TOML file may group options under [unlearn].
        if set(data) == {"unlearn"} and isinstance(data["unlearn"], dict):
            data = data["unlearn"]
        return cls.from_dict({**data, **overrides})
