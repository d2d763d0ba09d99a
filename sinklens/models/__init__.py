"""A set of comparable checkpoints (θ_o, θ_u, θ_b, ...) loaded by role, through one back end.

* `architectures`: where each model family keeps its layers and attention parts (one table
  keyed by the HF class);
* `backends`: the bridge (TransformerLens), nnsight and plain-HF back ends, one class each;
* `loaded`: one loaded checkpoint and its `forward` with activation callbacks;
* `loading`: `load_model`, `load_models` and the validated `ModelSet`.

Comparability (`check_comparable`, tokenizer definitions, the original-role check) lives in
`sinklens.comparable` and is re-exported here.
"""

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
from sinklens.models.architectures import (
    ARCHITECTURES,
    Architecture,
    architecture_of,
    decoder_layers,
    split_values,
)
from sinklens.models.backends import BACKENDS, Backend, register_backend
from sinklens.models.loaded import (
    KINDS,
    ActivationFn,
    LoadedModel,
    check_layers,
    parse_dtype,
    resolve_layer,
)
from sinklens.models.loading import ROLES, ModelSet, load_model, load_models, probe_model

__all__ = [
    "ARCHITECTURES",
    "ARCHITECTURE_KEYS",
    "BACKENDS",
    "KINDS",
    "ROLES",
    "ActivationFn",
    "Architecture",
    "Backend",
    "LoadedModel",
    "ModelSet",
    "ModelSpec",
    "architecture_of",
    "check_comparable",
    "check_layers",
    "check_original_role",
    "decoder_layers",
    "forget_losses",
    "load_model",
    "load_models",
    "parse_dtype",
    "probe_model",
    "register_backend",
    "resolve_checkpoint",
    "resolve_layer",
    "split_values",
    "tokenizer_definition",
    "tokenizer_difference",
]
