"""The CLI's contract: help, exit codes and one-line errors, without root."""

import pytest

from clusterai_runner.cli import main


def test_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sandbox", "up", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--hosts" in out
    assert "130  interrupted" in out


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
