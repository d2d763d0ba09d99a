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


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["patch", "heads", "--limit", "x"], "--limit"),
        (["patch", "hedz"], "hedz"),
        (["figure", "list", "--bogus"], "--bogus"),
        (["model", "fetch"], "name"),
    ],
)
def test_usage_errors_are_one_line_naming_the_option(args, names):
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and names in lines[0] and "--help" in lines[0], proc.stderr
    assert "--debug" not in lines[0]


def test_an_interrupt_exits_130_with_one_line(tmp_path):
    """Ctrl-C (SIGINT) in the middle of a command: non-zero, one line, never exit 0."""
    import signal
    import time

    script = (
        "import sys, time\n"
        "from sinklens.cli import app, main\n"
        "@app.command('sleep-for-test')\n"
        "def _sleep() -> None:\n"
        "    print('ready', flush=True); time.sleep(60)\n"
        "sys.exit(main(['sleep-for-test']))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0] and "again" in lines[0], err


def test_an_internal_error_says_it_is_a_bug():
    script = (
        "import sys\n"
        "from sinklens.cli import app, main\n"
        "@app.command('fail-for-test')\n"
        "def _fail() -> None:\n"
        "    [][1]\n"
        "sys.exit(main(['fail-for-test']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "internal error" in lines[0] and "bug" in lines[0] and "--debug" in lines[0]
    assert "IndexError" in lines[0] and "report" in lines[0]


@pytest.mark.parametrize("command", ["heads", "sweep", "cross-model", "ablate-sinks"])
def test_patch_out_is_kept_unless_overwrite(command, tmp_path):
    """Every patch command refuses an existing --out and takes --overwrite, as its help says;
    the file is untouched either way when the run then fails."""
    out = tmp_path / "earlier.json"
    out.write_text("{}\n")
    refused = run_cli("patch", command, "--backdoored", str(tmp_path / "none"), "--out", str(out))
    assert refused.returncode == 2 and "pass --overwrite" in refused.stderr
    allowed = run_cli(
        "patch", command, "--backdoored", str(tmp_path / "none"), "--out", str(out), "--overwrite"
    )
    assert allowed.returncode == 2 and "--overwrite" not in allowed.stderr
    assert out.read_text() == "{}\n"
