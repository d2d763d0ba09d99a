"""Where each model family keeps its decoder layers and the attention parts sinklens reads.

One table, keyed by the Hugging Face model class (as TransformerLens keys its architecture
adapters), read by the hf and nnsight back ends (values, head outputs, patterns) and by
unlearning (RMU's layer outputs, value-norm alignment). A class that is not in the table is
read by structure when its attention has a separate `v_proj`; a fused query-key-value
projection is read only with a layout from the table, because reading one family's layout
with another's gives plausible, wrong values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from jaxtyping import Float
from torch import Tensor, nn

from sinklens.errors import SinklensError

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "architecture_of",
    "decoder_layers",
    "get_module",
    "split_values",
]

# "separate": a v_proj whose output is [kv * d_head]; "fused": [q (heads) | k (kv) | v (kv)]
# (GPT-2's c_attn, Phi-3's qkv_proj); "per_head": [head, (q, k, v), d_head] (GPT-NeoX's and
# Bloom's query_key_value).
ValueLayout = Literal["separate", "fused", "per_head"]


@dataclass(frozen=True)
class Architecture:
    """Dotted module paths of one family, from the causal LM down."""

    layers: str  # the ModuleList of decoder blocks
    attn: str  # the attention module inside a block (its output holds the weights)
    value: str  # inside `attn`: the module whose output holds the values
    out_proj: str  # inside `attn`: the module whose input is the per-head attention output
    value_layout: ValueLayout = "separate"

    @property
    def fused_qkv(self) -> bool:
        return self.value_layout != "separate"


_LLAMA_LIKE = Architecture("model.layers", "self_attn", "v_proj", "o_proj")

ARCHITECTURES: dict[str, Architecture] = {
    **dict.fromkeys(
        (
            "LlamaForCausalLM",
            "MistralForCausalLM",
            "MixtralForCausalLM",
            "Qwen2ForCausalLM",
            "Qwen2MoeForCausalLM",
            "Qwen3ForCausalLM",
            "Qwen3MoeForCausalLM",
            "GemmaForCausalLM",
            "Gemma2ForCausalLM",
            "Gemma3ForCausalLM",
            "StableLmForCausalLM",
            "OlmoForCausalLM",
            "Olmo2ForCausalLM",
            "GraniteForCausalLM",
            "CohereForCausalLM",
            "SmolLM3ForCausalLM",
        ),
        _LLAMA_LIKE,
    ),
    "PhiForCausalLM": Architecture("model.layers", "self_attn", "v_proj", "dense"),
    "Phi3ForCausalLM": Architecture("model.layers", "self_attn", "qkv_proj", "o_proj", "fused"),
    "GPT2LMHeadModel": Architecture("transformer.h", "attn", "c_attn", "c_proj", "fused"),
    "GPTJForCausalLM": Architecture("transformer.h", "attn", "v_proj", "out_proj"),
    # GPT-Neo nests its attention one level deeper.
    "GPTNeoForCausalLM": Architecture("transformer.h", "attn.attention", "v_proj", "out_proj"),
    "GPTNeoXForCausalLM": Architecture(
        "gpt_neox.layers", "attention", "query_key_value", "dense", "per_head"
    ),
    "BloomForCausalLM": Architecture(
        "transformer.h", "self_attention", "query_key_value", "dense", "per_head"
    ),
    "OPTForCausalLM": Architecture("model.decoder.layers", "self_attn", "v_proj", "out_proj"),
}

# For classes not in the table: where decoder blocks usually live, and the usual names of
# the attention module and its output projection.
_LAYER_PATHS = (
    "model.layers",
    "transformer.h",
    "gpt_neox.layers",
    "model.decoder.layers",
    "transformer.layers",
    "model.model.layers",
)
_ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")
_OUT_NAMES = ("o_proj", "out_proj", "dense", "c_proj")


def get_module(obj: Any, dotted: str) -> Any:
    """`obj.a.0.b` for the path "a.0.b" (integers index into module lists)."""
    for part in dotted.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def _unwrapped(model: nn.Module) -> nn.Module:
    # DDP and FSDP (1) wrap the causal LM as `.module`; FSDP 2 subclasses it, which the MRO
    # lookup below sees through.
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) else model


def _by_structure(model: nn.Module) -> Architecture | None:
    for layers in _LAYER_PATHS:
        try:
            first = get_module(model, layers + ".0")
        except (AttributeError, IndexError, TypeError):
            continue
        for attn in _ATTN_NAMES:
            module = getattr(first, attn, None)
            out = next((name for name in _OUT_NAMES if hasattr(module, name)), None)
            if module is not None and out is not None and hasattr(module, "v_proj"):
                return Architecture(layers, attn, "v_proj", out)
    return None


def architecture_of(model: nn.Module) -> Architecture:
    """The table's entry for `model`'s class (or a base class), else one found by structure
    for a family with a separate `v_proj`; a one-line error otherwise."""
    model = _unwrapped(model)
    for cls in type(model).__mro__:
        if cls.__name__ in ARCHITECTURES:
            return ARCHITECTURES[cls.__name__]
    found = _by_structure(model)
    if found is not None:
        return found
    model_type = str(getattr(getattr(model, "config", None), "model_type", "") or "")
    raise SinklensError(
        f"sinklens cannot read the attention values of {type(model).__name__} "
        f"(model_type {model_type!r}): no v_proj and no fused qkv projection of a known "
        "layout; use a Llama-, Qwen-, Mistral-, Gemma-, Phi-, GPT-2-, GPT-J-, GPT-Neo-, "
        "GPT-NeoX-, OPT- or Bloom-family model"
    )


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a causal LM (`model.layers` for the Llama family)."""
    model = _unwrapped(model)
    for cls in type(model).__mro__:
        if cls.__name__ in ARCHITECTURES:
            return get_module(model, ARCHITECTURES[cls.__name__].layers)
    for path in _LAYER_PATHS:
        try:
            blocks = get_module(model, path)
        except AttributeError:
            continue
        if isinstance(blocks, nn.ModuleList):
            return blocks
    raise SinklensError(
        f"cannot find the decoder layers of {type(model).__name__}; use a causal LM of a "
        "family in sinklens.models.ARCHITECTURES"
    )


def split_values(
    output: Float[Tensor, "batch pos width"],
    layout: ValueLayout,
    *,
    n_heads: int,
    n_kv_heads: int,
    d_head: int,
) -> Float[Tensor, "batch pos kv d_head"]:
    """The value vectors per key-value head from the output of an architecture's `value`
    module."""
    if layout == "fused":  # [q (heads) | k (kv) | v (kv)]
        output = output[..., (n_heads + n_kv_heads) * d_head :]
    elif layout == "per_head":  # [head, (q, k, v), d_head], never [q | k | v]
        return output.reshape(*output.shape[:2], n_heads, 3, d_head)[..., 2, :]
    return output.reshape(*output.shape[:2], n_kv_heads, d_head)
