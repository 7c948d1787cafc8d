"""Opening a store: the engine, its transactions, the schema version and migrations.

Safe to share: every call takes a connection from the engine's pool for one
transaction and gives it back, so one ``Store`` serves several threads at once, and an
asyncio loop calls it through ``offload`` (a worker thread) without blocking.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, ParamSpec, Self, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from clusterai_runner.errors import StoreError
from clusterai_runner.store.migrations import MIGRATIONS, SCHEMA_VERSION
from clusterai_runner.store.schema import schema_version

P = ParamSpec("P")
R = TypeVar("R")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _first_line(exc: sa.exc.DBAPIError) -> str:
    return str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)


class StoreBase:
    """The engine and its transactions; the record groups build on it."""

    def __init__(self, engine: Engine, url: str) -> None:
        self._engine = engine
        self.url = url

    @classmethod
    def open(cls, url: str) -> Self:
        """The store at ``url``, created or migrated to this version's schema."""
        try:
            engine = sa.create_engine(url, pool_pre_ping=not url.startswith("sqlite"))
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise StoreError(
                "state store",
                f"{url!r} is not a usable database URL ({exc})",
                "use sqlite:////path/state.db or a SQLAlchemy URL",
            ) from exc
        if engine.dialect.name == "sqlite":
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        store = cls(engine, url)
        store._migrate()
        return store

    def close(self) -> None:
        self._engine.dispose()

    async def offload(self, call: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run one of the store's calls in a worker thread, for code on an asyncio loop."""
        return await asyncio.to_thread(call, *args, **kwargs)

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        try:
            with self._engine.begin() as connection:
                yield connection
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise StoreError(
                f"state store {self._shown_url()}",
                _first_line(exc),
                "check that the file or server is reachable and writable, and retry",
            ) from exc
        except sa.exc.IntegrityError as exc:
            # A write that conflicts with a record the store holds (a unique one written
            # twice): the store is sound, and the transaction wrote nothing.
            raise StoreError(
                f"state store {self._shown_url()}",
                f"refused a write that conflicts with a record it holds ({_first_line(exc)})",
                "nothing was written; retry",
            ) from exc
        except sa.exc.DatabaseError as exc:
            # Not a database, a damaged one, or another program's tables under our names.
            raise StoreError(
                f"state store {self._shown_url()}",
                f"is damaged or not a Cluster AI store ({_first_line(exc)})",
                "move it aside to start an empty store, or restore it from a backup",
            ) from exc

    def _shown_url(self) -> str:
        """The URL without its password, for messages."""
        try:
            return sa.engine.make_url(self.url).render_as_string(hide_password=True)
        except sa.exc.ArgumentError:
            return self.url

    def _migrate(self) -> None:
        with self._begin() as connection:
            inspector = sa.inspect(connection)
            if not inspector.has_table("schema_version"):
                if inspector.get_table_names():
                    raise StoreError(
                        f"state store {self._shown_url()}",
                        "it holds tables but no schema version",
                        "point CLUSTERAI_STATE_URL at a Cluster AI store or an empty database",
                    )
                schema_version.create(connection)
                connection.execute(schema_version.insert().values(version=0))
            row = connection.execute(sa.select(schema_version.c.version)).first()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"state store {self._shown_url()}",
                    f"schema version {version} was written by a newer clusterai"
                    f" (this one knows up to {SCHEMA_VERSION})",
                    "upgrade clusterai; the store was left untouched",
                )
            for step in MIGRATIONS[version:]:
                step(connection)
            if version < SCHEMA_VERSION:
                connection.execute(schema_version.update().values(version=SCHEMA_VERSION))
