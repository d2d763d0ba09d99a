"""The architecture table against transformers' own classes: every entry's paths exist on
a real model of that class (built on the meta device from its default config, so a 7B
family costs no memory) and its value module's width fits the declared layout."""

from __future__ import annotations

import pytest
import torch
import transformers
from transformers import AutoConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from sinklens.checkpoint import model_architecture
from sinklens.errors import SinklensError
from sinklens.models import ARCHITECTURES, architecture_of, decoder_layers
from sinklens.models.architectures import get_module

MODEL_TYPE_OF = {cls: mt for mt, cls in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.items()}


def _width(module: torch.nn.Module, side: str) -> int:
    # nn.Linear has in/out_features; GPT-2's Conv1D stores its weight as [in, out].
    if isinstance(module, torch.nn.Linear):
        return module.in_features if side == "in" else module.out_features
    return int(module.weight.shape[0 if side == "in" else 1])


@pytest.mark.parametrize("class_name", sorted(ARCHITECTURES))
def test_table_entry_matches_the_transformers_class(class_name):
    if class_name not in MODEL_TYPE_OF or not hasattr(transformers, class_name):
        pytest.skip(f"{class_name} is not in this transformers release")
    config = AutoConfig.for_model(MODEL_TYPE_OF[class_name])
    with torch.device("meta"):
        model = getattr(transformers, class_name)(config)
    entry = architecture_of(model)
    assert entry is ARCHITECTURES[class_name]
    blocks = decoder_layers(model)
    dims = model_architecture(config)
    assert len(blocks) == dims["n_layers"]
    attn = get_module(blocks[0], entry.attn)
    heads, kv, d_head = dims["n_heads"], dims["n_kv_heads"], dims["d_head"]
    expected = {
        "separate": kv * d_head,
        "fused": (heads + 2 * kv) * d_head,
        "per_head": 3 * heads * d_head,
    }[entry.value_layout]
    assert _width(get_module(attn, entry.value), "out") == expected
    assert _width(get_module(attn, entry.out_proj), "in") == heads * d_head


def test_a_subclass_is_read_through_its_base_class():
    config = AutoConfig.for_model("llama", num_hidden_layers=1)

    class FSDPLlamaForCausalLM(transformers.LlamaForCausalLM):  # as FSDP 2 wraps a model
        pass

    with torch.device("meta"):
        model = FSDPLlamaForCausalLM(config)
    assert architecture_of(model) is ARCHITECTURES["LlamaForCausalLM"]


def test_an_unknown_fused_family_is_refused_in_one_line():
    config = AutoConfig.for_model("falcon", num_hidden_layers=1)
    with torch.device("meta"):
        model = transformers.FalconForCausalLM(config)
    with pytest.raises(SinklensError, match=r"^[^\n]*FalconForCausalLM[^\n]*'falcon'[^\n]*$"):
        architecture_of(model)
