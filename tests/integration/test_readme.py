"""The README's shell examples run as written on the organism.

Every `sinklens …` line of the "From the shell" block is run in a fresh folder, in order (the
later lines read what `unlearn --out runs/npo-prefix` wrote). The `reproduce` lines are
left to tests/integration/test_reproduce.py, which runs the same code on reduced settings
(the whole study takes minutes); a test below keeps that list honest."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from sinklens.cli import main

README = Path(__file__).parents[2] / "README.md"
COVERED_ELSEWHERE = ("sinklens reproduce",)


def shell_examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### From the shell") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the README's 'From the shell' section has no bash block"
    lines = []
    for line in block.group(1).splitlines():
        command = line.split("  #")[0].strip()
        if command.startswith("sinklens "):
            lines.append(command)
    return lines


def test_the_examples_are_found_and_only_reproduce_is_left_out():
    examples = shell_examples()
    assert len(examples) >= 8
    skipped = [e for e in examples if e.startswith(COVERED_ELSEWHERE)]
    assert skipped and all("reproduce" in e for e in skipped)


@pytest.mark.slow
def test_every_shell_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SINKLENS_CACHE", str(tmp_path / "cache"))
    for command in shell_examples():
        if command.startswith(COVERED_ELSEWHERE):
            continue
        code = main(shlex.split(command)[1:])
        out = capsys.readouterr()
        assert code == 0, f"`{command}` exited {code}:\n{out.out[-2000:]}\n{out.err[-2000:]}"
