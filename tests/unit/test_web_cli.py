"""``clusterai web users``: the password from stdin or a prompt, never argv; bad input is
one line and exit 2, and changes nothing."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from clusterai_runner.cli import main


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLUSTERAI_STATE_DIR", str(tmp_path))
    return tmp_path


def users_json(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    capsys.readouterr()
    assert main(["web", "users", "list", "--json"]) == 0
    listed: list[dict[str, object]] = json.loads(capsys.readouterr().out)
    return listed


def test_a_user_is_added_with_the_password_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], state: Path
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
    assert main(["web", "users", "add", "ada", "--role", "admin"]) == 0
    assert "user ada added (admin)" in capsys.readouterr().out
    (user,) = users_json(capsys)
    assert (user["name"], user["role"]) == ("ada", "admin")
    assert "password_hash" not in user
    assert b"a long enough password" not in (state / "state.db").read_bytes()


@pytest.mark.parametrize(
    ("args", "stdin", "expected"),
    [
        (["ada", "--role", "admin"], "short\n", "error: the password of ada: is shorter than 12"),
        (["ada", "--role", "admin"], "", "error: stdin: gave no password"),
        (["Ada!", "--role", "admin"], "a long enough password\n", "error: user name 'Ada!'"),
        (["ada", "--role", "root"], "a long enough password\n",
         "error: clusterai web users add: Invalid value for '--role'"),
        (["ada", "--role", "admin", "--password", "x"], "",
         "error: clusterai web users add: No such option '--password'"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_exit_2_and_adds_nobody(
    args: list[str], stdin: str, expected: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert main(["web", "users", "add", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(expected), err
    assert err.count("\n") == 1
    assert users_json(capsys) == []


def test_a_second_user_of_the_same_name_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(2):
        monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
        code = main(["web", "users", "add", "ada", "--role", "viewer"])
    assert code == 2
    assert "error: user ada: a user of that name exists" in capsys.readouterr().err


def test_a_password_is_reset_and_a_user_removed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
    assert main(["web", "users", "add", "ada", "--role", "viewer"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("another long password\n"))
    assert main(["web", "users", "password", "ada"]) == 0
    assert main(["web", "users", "remove", "ada"]) == 0
    assert main(["web", "users", "remove", "ada"]) == 2
    assert "error: user ada: no such user" in capsys.readouterr().err


def test_serve_refuses_a_bad_listen_address(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["web", "serve", "--listen", "nowhere"]) == 2
    assert capsys.readouterr().err.startswith("error: --listen: 'nowhere' is not HOST:PORT")
