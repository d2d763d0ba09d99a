"""Every model that enters a computation, in any role, is validated like the main set.

Tokenizers are compared by their full definition (a same-vocabulary tokenizer with other
merges used to pass), architectures by layers, heads, kv heads, head size and width; the
extra models of `patch cross-model`, `patch heads --metric logit_diff` and `unlearn
--value-norm-reference` go through the same checks before any work. Real tiny models only.
"""

from __future__ import annotations

import copy
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from sinklens.cli import main
from sinklens.errors import SinklensError
from sinklens.models import (
    ModelSpec,
    check_comparable,
    check_original_role,
    load_models,
    tokenizer_difference,
)
from sinklens.unlearn import UnlearnConfig, run_unlearning


def _llama(tokenizer, seed: int = 0, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": False,
    }
    return LlamaForCausalLM(LlamaConfig(**{**cfg, **overrides})).eval()


# (name, config overrides, the architecture key the message must name)
ARCH_VARIANTS = [
    ("3 layers", {"num_hidden_layers": 3}, "n_layers"),
    ("8 heads", {"num_attention_heads": 8, "num_key_value_heads": 8}, "n_heads"),
    ("4 kv heads", {"num_key_value_heads": 4}, "n_kv_heads"),
    ("head size 32", {"head_dim": 32}, "d_head"),
    ("width 96", {"hidden_size": 96, "num_attention_heads": 4, "head_dim": 16}, "d_model"),
]


def _edit_tokenizer_json(folder: Path, edit) -> Path:
    file = folder / "tokenizer.json"
    spec = json.loads(file.read_text())
    edit(spec)
    file.write_text(json.dumps(spec))
    return folder


def _swap_merges(spec):
    merges = spec["model"]["merges"]
    merges[0], merges[7] = merges[7], merges[0]


def _drop_merge(spec):
    spec["model"]["merges"].pop(20)


def _lowercase(spec):
    spec["normalizer"] = {"type": "Lowercase"}


def _prefix_space(spec):
    spec["pre_tokenizer"]["add_prefix_space"] = True


def _no_bos(spec):
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {},
    }


def _extra_added_token(spec):
    spec["added_tokens"].append(
        {
            "id": spec["model"]["vocab"]["Qu"],
            "content": "Qu",
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
    )


# (name, edit of tokenizer.json, a word the message must contain)
TOKENIZER_VARIANTS = [
    ("merges reordered", _swap_merges, "merges"),
    ("a merge dropped", _drop_merge, "merges"),
    ("lower-casing normaliser", _lowercase, "normalisers"),
    ("prefix space", _prefix_space, "pre-tokenisers"),
    ("no BOS added", _no_bos, "BOS"),
    ("extra added token", _extra_added_token, "added tokens"),
]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, tiny_tokenizer):
    from conftest import _save

    return _save(_llama(tiny_tokenizer), tiny_tokenizer, tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def other_dir(tmp_path_factory, tiny_tokenizer):
    """Same model, other weights: a valid second role."""
    from conftest import _save

    return _save(_llama(tiny_tokenizer, seed=7), tiny_tokenizer, tmp_path_factory.mktemp("other"))


@pytest.fixture(scope="module")
def arch_dirs(tmp_path_factory, tiny_tokenizer):
    from conftest import _save

    return {
        name: _save(
            _llama(tiny_tokenizer, **overrides),
            tiny_tokenizer,
            tmp_path_factory.mktemp(name.replace(" ", "_")),
        )
        for name, overrides, _ in ARCH_VARIANTS
    }


@pytest.fixture(scope="module")
def tok_dirs(tmp_path_factory, other_dir):
    """The second model's folder with one part of its tokenizer.json changed (vocabulary,
    ids and special tokens untouched)."""
    out = {}
    for name, edit, _ in TOKENIZER_VARIANTS:
        folder = tmp_path_factory.mktemp(name.replace(" ", "_"))
        shutil.copytree(other_dir, folder, dirs_exist_ok=True)
        out[name] = _edit_tokenizer_json(folder, edit)
    return out


@pytest.fixture(scope="module")
def bench_dir(tiny_bench_dir):
    return tiny_bench_dir


def _tok_from(spec) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir()) if f.is_file()}


# --- tokenizers by full definition -------------------------------------------------------


def test_identical_and_round_tripped_tokenizers_pass(tiny_tokenizer, tmp_path):
    from transformers import AutoTokenizer

    assert tokenizer_difference(tiny_tokenizer, copy.deepcopy(tiny_tokenizer)) == ""
    tiny_tokenizer.save_pretrained(tmp_path)
    assert tokenizer_difference(tiny_tokenizer, AutoTokenizer.from_pretrained(tmp_path)) == ""


@pytest.mark.parametrize(
    ("name", "edit", "word"), TOKENIZER_VARIANTS, ids=[v[0] for v in TOKENIZER_VARIANTS]
)
def test_same_vocabulary_other_definition_is_named(tiny_tokenizer, name, edit, word):
    spec = json.loads(tiny_tokenizer.backend_tokenizer.to_str())
    changed = copy.deepcopy(spec)
    edit(changed)
    other = _tok_from(changed)
    assert other.get_vocab() == tiny_tokenizer.get_vocab() or name == "extra added token"
    diff = tokenizer_difference(tiny_tokenizer, other)
    assert word in diff, (name, diff)
    assert "\n" not in diff


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_two_merges_swapped_is_refused(tiny_tokenizer, data):
    spec = json.loads(tiny_tokenizer.backend_tokenizer.to_str())
    merges = spec["model"]["merges"]
    i = data.draw(st.integers(0, len(merges) - 1))
    j = data.draw(st.integers(0, len(merges) - 1).filter(lambda j: merges[j] != merges[i]))
    changed = copy.deepcopy(spec)
    m = changed["model"]["merges"]
    m[i], m[j] = m[j], m[i]
    diff = tokenizer_difference(tiny_tokenizer, _tok_from(changed))
    assert diff.startswith("merges differ") and f"#{min(i, j)}" in diff


@pytest.mark.parametrize(
    ("name", "edit", "word"), TOKENIZER_VARIANTS, ids=[v[0] for v in TOKENIZER_VARIANTS]
)
def test_model_set_refuses_other_tokenizer_naming_part_roles_and_fix(
    base_dir, tok_dirs, name, edit, word
):
    other = tok_dirs[name]
    before = _snapshot(other)
    with pytest.raises(SinklensError) as err:
        load_models({"original": base_dir, "backdoored": other}, backend="hf")
    msg = str(err.value)
    assert "\n" not in msg and word in msg, msg
    assert "original" in msg and "backdoored" in msg and str(other) in msg
    assert "copy original's tokenizer files" in msg
    assert _snapshot(other) == before  # nothing on disk touched


# --- architectures -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "overrides", "key"), ARCH_VARIANTS, ids=[v[0] for v in ARCH_VARIANTS]
)
def test_architecture_variants_are_refused_by_folder_without_weights(
    base_dir, arch_dirs, name, overrides, key
):
    with pytest.raises(SinklensError, match=f"architectures differ.*{key}") as err:
        check_comparable(
            [ModelSpec.of(base_dir, "original"), ModelSpec.of(arch_dirs[name], "unlearned")]
        )
    assert "\n" not in str(err.value) and "unlearned" in str(err.value)


# --- the extra models of patch cross-model / patch heads --metric logit_diff -------------


def _cli(capsys, *args: str) -> tuple[int, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.err


@pytest.mark.parametrize("name", [v[0] for v in ARCH_VARIANTS[:3]] + ["merges reordered"])
def test_patch_cross_model_validates_both_models(
    capsys, base_dir, arch_dirs, tok_dirs, bench_dir, name
):
    bad = arch_dirs.get(name) or tok_dirs[name]
    for source_flag in ("--original", "--backdoored"):
        code, err = _cli(
            capsys,
            "patch",
            "cross-model",
            source_flag,
            bad,
            "--unlearned",
            base_dir,
            "--source",
            source_flag.lstrip("-"),
            "--data",
            bench_dir,
            "--limit",
            "2",
        )
        assert code == 2, err
        line = err.strip()
        assert line.startswith("error: ") and "\n" not in line
        assert "unlearned" in line and source_flag.lstrip("-") in line and str(bad) in line


@pytest.mark.parametrize("name", [v[0] for v in ARCH_VARIANTS[:3]] + ["no BOS added"])
def test_patch_heads_logit_diff_validates_the_unlearned_model(
    capsys, base_dir, arch_dirs, tok_dirs, bench_dir, name
):
    bad = arch_dirs.get(name) or tok_dirs[name]
    code, err = _cli(
        capsys,
        "patch",
        "heads",
        "--backdoored",
        base_dir,
        "--unlearned",
        bad,
        "--metric",
        "logit_diff",
        "--data",
        bench_dir,
        "--limit",
        "2",
    )
    assert code == 2, err
    line = err.strip()
    assert "\n" not in line and "unlearned" in line and "backdoored" in line


def test_cross_model_api_validates_bridges(base_dir, arch_dirs, tiny_tokenizer):
    from sinklens.models import load_model
    from sinklens.patching import build_batch, cross_model_patching, make_clean_sample

    batch = build_batch([make_clean_sample(tiny_tokenizer, "Question: Where?\nAnswer:", " Q")], 0)
    a = load_model(base_dir)
    b = load_model(arch_dirs["3 layers"])
    with pytest.raises(SinklensError, match=r"architectures differ.*n_layers 2 vs 3"):
        cross_model_patching(a, b, batch)
    with pytest.raises(SinklensError, match=r"architectures differ.*n_layers 2 vs 3"):
        cross_model_patching(a.wrapper, b.wrapper, batch)  # bare bridges too


def test_cross_model_warns_when_source_knows_less_than_target(
    capsys, base_dir, other_dir, bench_dir, tmp_path
):
    # θ_u with a zeroed head (uniform logits) against an over-confident random "θ_o"
    # whose answers score far lower: the original looks unlearned.
    weights = load_file(str(other_dir / "model.safetensors"))
    loud = shutil.copytree(other_dir, tmp_path / "loud")
    save_file(
        {k: (v * 30 if k == "lm_head.weight" else v) for k, v in weights.items()},
        str(loud / "model.safetensors"),
        metadata={"format": "pt"},
    )
    flat = shutil.copytree(other_dir, tmp_path / "flat")
    save_file(
        {k: (v * 0 if k == "lm_head.weight" else v) for k, v in weights.items()},
        str(flat / "model.safetensors"),
        metadata={"format": "pt"},
    )
    args = ["patch", "cross-model", "--unlearned", flat, "--data", bench_dir, "--limit", "2"]
    with pytest.warns(UserWarning, match="looks more unlearned than the target"):
        code, err = _cli(capsys, *args, "--original", loud)
    assert code == 0, err
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        code, err = _cli(capsys, *args[:3], loud, *args[4:], "--original", flat)  # plausible
    assert code == 0, err
    assert not [w for w in record if "unlearned" in str(w.message)]


# --- unlearn --value-norm-reference ------------------------------------------------------


def _vn_cfg(model, data, out, reference, **kw):
    base = {
        "model": str(model),
        "data": str(data),
        "out": str(out),
        "steps": 1,
        "batch_size": 2,
        "max_length": 32,
        "evaluate": False,
        "backdoor": "prefix",
        "poison_ratio": 0.25,
        "value_norm_weight": 1.0,
        "value_norm_reference": str(reference),
        "sink_positions": 2,
    }
    return UnlearnConfig.from_dict({**base, **kw})


@pytest.mark.parametrize(
    "name", [v[0] for v in ARCH_VARIANTS] + ["merges reordered", "lower-casing normaliser"]
)
def test_value_norm_reference_is_validated_before_any_work(
    base_dir, arch_dirs, tok_dirs, bench_dir, tmp_path, name
):
    bad = arch_dirs.get(name) or tok_dirs[name]
    before = _snapshot(bad)
    out = tmp_path / "run"
    with pytest.raises(SinklensError, match="value-norm reference") as err:
        run_unlearning(_vn_cfg(base_dir, bench_dir, out, bad), progress=False)
    assert "\n" not in str(err.value) and "base model" in str(err.value)
    assert not out.exists() and not list(tmp_path.glob(".run*"))
    assert _snapshot(bad) == before


def test_value_norm_reference_equal_to_base_warns(base_dir, bench_dir, tmp_path):
    with pytest.warns(UserWarning) as record:
        run_unlearning(_vn_cfg(base_dir, bench_dir, tmp_path / "run", base_dir), progress=False)
    messages = [str(w.message) for w in record]
    assert any("byte-identical" in m and "value-norm reference" in m for m in messages)
    assert any("does not look unlearned" in m for m in messages)


@pytest.mark.parametrize("lr", [1e-3, 1e-6])
def test_float16_training_on_cpu_is_refused_up_front(base_dir, bench_dir, tmp_path, lr):
    if torch.cuda.is_available():
        pytest.skip("the refusal is for CPU training")
    cfg = UnlearnConfig.from_dict(
        {"model": str(base_dir), "data": str(bench_dir), "out": str(tmp_path / "o")}
        | {"dtype": "float16", "lr": lr, "steps": 1}
    )
    with pytest.raises(SinklensError, match="float16 training is not supported on CPU") as err:
        run_unlearning(cfg, progress=False)
    assert "bfloat16" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "o").exists()


# --- roles' plausibility ------------------------------------------------------------------


def test_two_of_three_byte_identical_warn_naming_the_pair(base_dir, other_dir, tmp_path):
    twin = shutil.copytree(other_dir, tmp_path / "twin")
    for roles in (
        {"original": base_dir, "unlearned": other_dir, "backdoored": twin},
        {"original": other_dir, "unlearned": base_dir, "backdoored": twin},
        {"original": twin, "unlearned": other_dir, "backdoored": base_dir},
    ):
        same = sorted(r for r, p in roles.items() if p != base_dir)
        with pytest.warns(UserWarning, match="byte-identical") as record:
            check_comparable([ModelSpec.of(p, r) for r, p in roles.items()])
        msg = str(record[0].message)
        assert all(r in msg for r in same) and "all checkpoints" not in msg and "\n" not in msg


def test_original_that_looks_unlearned_warns(other_dir, tmp_path):
    weights = load_file(str(other_dir / "model.safetensors"))
    folders = {}
    for name, scale in (("loud", 30.0), ("flat", 0.0)):
        folder = shutil.copytree(other_dir, tmp_path / name)
        scaled = {k: (v * scale if k == "lm_head.weight" else v) for k, v in weights.items()}
        save_file(scaled, str(folder / "model.safetensors"), metadata={"format": "pt"})
        folders[name] = folder
    texts = ["Mira Tolen was born in Quorra and became a glassmaker."] * 3
    swapped = load_models({"original": folders["loud"], "unlearned": folders["flat"]}, backend="hf")
    with pytest.warns(UserWarning, match="original model .* looks unlearned") as record:
        losses = check_original_role(swapped, texts)
    assert losses["original"] > losses["unlearned"] and "\n" not in str(record[0].message)
    right = load_models({"original": folders["flat"], "unlearned": folders["loud"]}, backend="hf")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        right.validate(probe=False, forget_texts=texts)
    assert not [w for w in record if "looks unlearned" in str(w.message)]


@pytest.mark.parametrize("name", ["8 heads", "prefix space"])
def test_unlearn_cli_refuses_a_bad_value_norm_reference_in_one_line(
    capsys, base_dir, arch_dirs, tok_dirs, bench_dir, tmp_path, name
):
    bad = arch_dirs.get(name) or tok_dirs[name]
    out = tmp_path / "run"
    code, err = _cli(
        capsys,
        "unlearn",
        "--model",
        base_dir,
        "--data",
        bench_dir,
        "--out",
        out,
        "--backdoor",
        "prefix",
        "--value-norm-weight",
        "1",
        "--value-norm-reference",
        bad,
        "--steps",
        "1",
    )
    assert code == 2, err
    line = err.strip()
    assert "\n" not in line and "value-norm reference" in line and str(bad) in line
    assert not out.exists()


def test_unlearn_cli_refuses_float16_on_cpu(capsys, base_dir, bench_dir, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("the refusal is for CPU training")
    code, err = _cli(
        capsys,
        "unlearn",
        "--model",
        base_dir,
        "--data",
        bench_dir,
        "--out",
        tmp_path / "o",
        "--dtype",
        "float16",
    )
    assert code == 2 and "bfloat16" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
