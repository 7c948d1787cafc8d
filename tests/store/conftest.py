"""Every store test runs twice: on a SQLite file and on a real PostgreSQL server.

The server is Debian's ``postgresql``, started for this session in a temporary
directory (``initdb``, then ``pg_ctl``) on a free port of 127.0.0.1, as the ``postgres``
system user (PostgreSQL refuses to run as root), and stopped by its own PID file at the
end. Each test gets a database of its own. Without the package the PostgreSQL half is
skipped on a developer's machine and fails under CI (CI=true), where it must run.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.helpers import free_port


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _missing() -> str | None:
    if _pg_bin() is None:
        return "PostgreSQL is not installed (apt-get install -y postgresql)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "there is no postgres user (apt-get install -y postgresql)"
    if os.geteuid() != 0:
        return "starting PostgreSQL as the postgres user needs root"
    return None


def _as_postgres(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A URL of a server's ``postgres`` database (the admin connection)."""
    reason = _missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    pg = _pg_bin()
    assert pg is not None
    home = Path(tempfile.mkdtemp(prefix="clusterai-pg-"))
    shutil.chown(home, "postgres", "postgres")
    data = home / "data"
    made = _as_postgres(str(pg / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust")
    assert made.returncode == 0, made.stderr
    for _attempt in range(5):
        port = free_port()
        options = f"-c listen_addresses=127.0.0.1 -c port={port} -k {home} -c fsync=off"
        started = _as_postgres(
            str(pg / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(home / "log"),
            "-o",
            options,
            "-w",
            "start",
        )
        if started.returncode == 0:
            break
    else:
        raise AssertionError(f"PostgreSQL did not start: {(home / 'log').read_text()[-2000:]}")
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    try:
        yield url
    finally:
        stopped = _as_postgres(str(pg / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        assert stopped.returncode == 0, stopped.stderr
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(autouse=True)
def engines(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[sa.Engine]]:
    """Every engine a test makes (its stores' and its own), disposed when it ends, so no
    connection outlives its test or its database."""
    made: list[sa.Engine] = []
    create = sa.create_engine

    def tracked(*args: Any, **kwargs: Any) -> sa.Engine:
        engine = create(*args, **kwargs)
        made.append(engine)
        return engine

    monkeypatch.setattr(sa, "create_engine", tracked)
    yield made
    for engine in made:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(
    request: pytest.FixtureRequest, tmp_path: Path, engines: list[sa.Engine]
) -> Iterator[str]:
    """A URL of an empty database: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    admin_url: str = request.getfixturevalue("postgres_server")
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        for engine in engines:
            engine.dispose()
        with admin.connect() as connection:
            connection.execute(sa.text(f"DROP DATABASE {name} WITH (FORCE)"))
        admin.dispose()
