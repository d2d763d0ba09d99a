import subprocess
import sys

import pytest

from sinklens import __version__
from sinklens.cli import app, main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sinklens.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_version(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_help_lists_every_command_with_a_description(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    names = [g.name for g in app.registered_groups] + [c.name for c in app.registered_commands]
    assert names, "no command registered"
    for group in app.registered_groups:
        text = group.help or group.typer_instance.info.help
        assert group.name in out and text, f"{group.name} has no one-line description"
    for command in app.registered_commands:
        assert command.name in out
        assert command.help or (command.callback and command.callback.__doc__), command.name


@pytest.mark.parametrize("group", ["organism", "zoo", "analyze", "patch"])
def test_every_subcommand_has_help(group, capsys):
    assert main([group, "--help"]) == 0
    assert "Usage" in capsys.readouterr().out


def test_unknown_command_fails_without_traceback():
    proc = run_cli("no-such-command")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["figure", "no-such-figure"],
        ["figure", "attn-diff", "--layer", "99", "--original", "/nonexistent/model"],
        ["unlearn", "--method", "sgd", "--out", "x"],
        ["analyze", "attention-diff", "--original", "/nonexistent/model"],
        ["figure", "ue-be", "--seeds", "0,x"],
        ["reproduce", "--seeds", "1,1", "--out", "unused-folder"],
        ["reproduce", "--out", "/etc/hostname"],
        ["zoo", "build", "--out", "unused-folder", "--seeds", "-1"],
        ["evaluate", "--trigger-gain", "--model", "/nonexistent/model"],
    ],
)
def test_bad_input_is_one_line_on_stderr(args):
    proc = run_cli(*args)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "Traceback" not in proc.stderr
