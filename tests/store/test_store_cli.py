"""A store that cannot be used (a server that refuses, a SQLite file another process
holds locked) is one line and exit 2 from every command that reads it, not an
internal error."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from clusterai_runner.cli import main
from clusterai_runner.store import Store

COMMANDS = [["runs", "list"], ["runs", "show", "1"], ["gateway", "keys", "list"]]


@pytest.mark.parametrize("args", COMMANDS)
def test_an_unreachable_store_is_one_line_and_exit_2(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CLUSTERAI_STATE_URL", "postgresql+psycopg://ops:pw@127.0.0.1:1/cai")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("error: state store postgresql+psycopg://ops:***@127.0.0.1:1/cai: ")
    assert "(check that the file or server is reachable and writable, and retry)" in err


def test_a_locked_store_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "state.db"
    Store.open(f"sqlite:///{path}").close()
    monkeypatch.setenv("CLUSTERAI_STATE_DIR", str(tmp_path))
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        assert main(["gateway", "keys", "revoke", "nobody"]) == 2
    finally:
        holder.close()
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: state store sqlite:///{path}: database is locked (")
