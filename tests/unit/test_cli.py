"""The CLI's contract: help, exit codes and one-line errors, without root."""

import subprocess
import sys

import click
import pytest

from clusterai_runner.cli import COMMANDS, cli, main


def test_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sandbox", "up", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--hosts" in out
    assert "130  interrupted" in out


def test_every_command_is_found_under_its_name_and_listed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    context = click.Context(cli)
    for name in COMMANDS:
        command = cli.get_command(context, name)
        assert command is not None and command.name == name
    assert cli.get_command(context, "frobnicate") is None
    assert main(["--help"]) == 0
    listed = capsys.readouterr().out.split("Commands:", 1)[1]
    assert all(f"  {name} " in listed for name in COMMANDS)


def test_a_command_loads_only_its_own_module() -> None:
    """`clusterai sandbox ...` imports neither the state store (SQLAlchemy) nor another
    command's module: each command starts in a fraction of a second."""
    probe = (
        "import sys; from clusterai_runner.cli import main; main(['sandbox', '--help']); "
        "print(sorted(m for m in sys.modules if m.startswith(('sqlalchemy', "
        "'clusterai_runner.cli.', 'clusterai_runner.store'))))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = done.stdout.strip().splitlines()[-1]
    assert (
        loaded == "['clusterai_runner.cli.common', 'clusterai_runner.cli.display', "
        "'clusterai_runner.cli.sandbox']"
    ), loaded


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert "clusterai, version" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["sandbox", "up", "--hosts", "0"],
            "error: clusterai sandbox up: Invalid value for '--hosts'",
        ),
        (
            ["sandbox", "up", "--hosts", "x"],
            "error: clusterai sandbox up: Invalid value for '--hosts'",
        ),
        (["sandbox", "frobnicate"], "error: clusterai sandbox: No such command 'frobnicate'"),
        (["sandbox", "status", "--name", "Bad_Name"], "error: --name: 'Bad_Name' is not a valid"),
    ],
)
def test_usage_errors_are_one_line_exit_2(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(expected)
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_bad_environment_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CLUSTERAI_STATE_DIR", "relative")
    assert main(["sandbox", "list"]) == 2
    assert capsys.readouterr().err == (
        "error: CLUSTERAI_STATE_DIR: 'relative' is not an absolute path (give a full path)\n"
    )
