"""The state store: hosts, runs and each run's per-host task events, the gateway's API
keys (hashed) and usage records.

The bottom layer of the package: it imports nothing else of ours. SQLite by default (a
file under the state directory, in WAL mode so readers never wait for the CLI's
writer); any SQLAlchemy URL works, e.g. ``postgresql+psycopg://...`` when several control
processes share one store. The schema is versioned: ``schema_version`` holds the version,
``MIGRATIONS`` brings an older store up to date inside one transaction, and a store
written by a newer clusterai is refused rather than damaged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine


class StoreError(Exception):
    """The store cannot be used: ``what``, ``why`` and ``fix`` for a one-line message."""

    def __init__(self, what: str, why: str, fix: str) -> None:
        self.what, self.why, self.fix = what, why, fix
        super().__init__(f"{what}: {why} ({fix})")


metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
)

hosts = sa.Table(
    "hosts",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("address", sa.String(255), nullable=False),
    sa.Column("groups", sa.Text, nullable=False),  # JSON list
    sa.Column("added_at", sa.String(32), nullable=False),
    # JSON object of connection variables (ansible_user, ansible_port, ...); version 2
    sa.Column("vars", sa.Text, nullable=False, server_default="{}"),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("playbook", sa.String(255), nullable=False),
    sa.Column("inventory", sa.Text, nullable=False),
    sa.Column("limit_pattern", sa.Text, nullable=False, default=""),
    sa.Column("started_at", sa.String(32), nullable=False),
    sa.Column("finished_at", sa.String(32)),
    # running, successful, failed, canceled
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("rc", sa.Integer),
)

run_hosts = sa.Table(
    "run_hosts",
    metadata,
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("host", sa.String(255), primary_key=True),
    sa.Column("ok", sa.Integer, nullable=False, default=0),
    sa.Column("changed", sa.Integer, nullable=False, default=0),
    sa.Column("unreachable", sa.Integer, nullable=False, default=0),
    sa.Column("failed", sa.Integer, nullable=False, default=0),
    sa.Column("skipped", sa.Integer, nullable=False, default=0),
    sa.Column("rescued", sa.Integer, nullable=False, default=0),
    sa.Column("ignored", sa.Integer, nullable=False, default=0),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False, index=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("task", sa.Text, nullable=False),
    # ok, changed, failed, skipped, unreachable
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("message", sa.Text, nullable=False, default=""),
    sa.Column("at", sa.String(32), nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("prefix", sa.String(32), nullable=False, unique=True),
    # SHA-256 of the whole key: keys are long random strings, so a fast hash is enough.
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("admin", sa.Boolean, nullable=False, default=False),
    sa.Column("rpm", sa.Integer),  # requests per minute; NULL: no limit
    sa.Column("tpm", sa.Integer),  # tokens per minute; NULL: no limit
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("revoked_at", sa.String(32)),
)

usage_records = sa.Table(
    "usage",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.String(32), nullable=False, index=True),
    sa.Column("key_id", sa.Integer),  # NULL when the gateway runs without keys
    sa.Column("route", sa.String(64), nullable=False),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("backend", sa.String(255), nullable=False, default=""),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("prompt_tokens", sa.Integer, nullable=False, default=0),
    sa.Column("completion_tokens", sa.Integer, nullable=False, default=0),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("ttft_ms", sa.Float),
    sa.Column("cache_hit", sa.Boolean, nullable=False, default=False),
)

COUNTERS = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")


def _create_v1(connection: Connection) -> None:
    metadata.create_all(connection, tables=[hosts, runs, run_hosts, events])


def _add_host_vars_v2(connection: Connection) -> None:
    # A store created by this version already has the column: _create_v1 uses the
    # current table definitions.
    if "vars" not in {c["name"] for c in sa.inspect(connection).get_columns("hosts")}:
        connection.execute(sa.text("ALTER TABLE hosts ADD COLUMN vars TEXT NOT NULL DEFAULT '{}'"))


def _create_gateway_tables_v3(connection: Connection) -> None:
    metadata.create_all(connection, tables=[api_keys, usage_records])


# MIGRATIONS[n] takes a store from version n to n + 1.
MIGRATIONS: list[Callable[[Connection], None]] = [
    _create_v1,
    _add_host_vars_v2,
    _create_gateway_tables_v3,
]
SCHEMA_VERSION = len(MIGRATIONS)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    groups: list[str]
    added_at: str
    variables: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "groups": self.groups,
            "added_at": self.added_at,
            "vars": self.variables,
        }


@dataclass(frozen=True)
class Event:
    host: str
    task: str
    status: str
    message: str
    at: str


@dataclass(frozen=True)
class Run:
    id: int
    playbook: str
    inventory: str
    limit: str
    started_at: str
    finished_at: str | None
    status: str
    rc: int | None
    recap: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "playbook": self.playbook,
            "inventory": self.inventory,
            "limit": self.limit,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "status": self.status,
            "rc": self.rc,
            "recap": self.recap,
        }


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    prefix: str
    hash: str
    admin: bool
    rpm: int | None
    tpm: int | None
    created_at: str
    revoked_at: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "prefix": self.prefix,
            "admin": self.admin,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


USAGE_FIELDS = (
    "at", "key_id", "route", "model", "backend", "status", "prompt_tokens",
    "completion_tokens", "latency_ms", "ttft_ms", "cache_hit",
)  # fmt: skip


class Store:
    """One state store. ``Store.open(url)`` creates or migrates it."""

    def __init__(self, engine: Engine, url: str) -> None:
        self._engine = engine
        self.url = url

    @classmethod
    def open(cls, url: str) -> Store:
        try:
            engine = sa.create_engine(url)
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

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        try:
            with self._engine.begin() as connection:
                yield connection
        except sa.exc.OperationalError as exc:
            raise StoreError(
                f"state store {self.url}",
                str(exc.orig).splitlines()[0] if exc.orig else str(exc),
                "check that the file or server is reachable and writable",
            ) from exc

    def _migrate(self) -> None:
        with self._begin() as connection:
            inspector = sa.inspect(connection)
            if not inspector.has_table("schema_version"):
                if inspector.get_table_names():
                    raise StoreError(
                        f"state store {self.url}",
                        "it holds tables but no schema version",
                        "point CLUSTERAI_STATE_URL at a Cluster AI store or an empty database",
                    )
                metadata.create_all(connection, tables=[schema_version])
                connection.execute(schema_version.insert().values(version=0))
            row = connection.execute(sa.select(schema_version.c.version)).first()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"state store {self.url}",
                    f"schema version {version} was written by a newer clusterai"
                    f" (this one knows up to {SCHEMA_VERSION})",
                    "upgrade clusterai; the store was left untouched",
                )
            for step in MIGRATIONS[version:]:
                step(connection)
            if version < SCHEMA_VERSION:
                connection.execute(schema_version.update().values(version=SCHEMA_VERSION))

    # --- Hosts -------------------------------------------------------------------

    def put_host(
        self,
        name: str,
        address: str,
        groups: list[str],
        variables: dict[str, Any] | None = None,
    ) -> None:
        with self._begin() as connection:
            connection.execute(hosts.delete().where(hosts.c.name == name))
            connection.execute(
                hosts.insert().values(
                    name=name,
                    address=address,
                    groups=json.dumps(groups),
                    added_at=_now(),
                    vars=json.dumps(variables or {}, sort_keys=True),
                )
            )

    def remove_host(self, name: str) -> bool:
        with self._begin() as connection:
            return connection.execute(hosts.delete().where(hosts.c.name == name)).rowcount > 0

    def hosts(self) -> list[Host]:
        with self._begin() as connection:
            rows = connection.execute(sa.select(hosts).order_by(hosts.c.name)).all()
        return [
            Host(r.name, r.address, json.loads(r.groups), r.added_at, json.loads(r.vars))
            for r in rows
        ]

    # --- API keys and usage --------------------------------------------------------

    def add_key(
        self, name: str, prefix: str, digest: str, admin: bool, rpm: int | None, tpm: int | None
    ) -> None:
        with self._begin() as connection:
            taken = connection.execute(
                sa.select(api_keys.c.id).where(api_keys.c.name == name)
            ).first()
            if taken is not None:
                raise StoreError(f"key {name}", "a key of that name exists", "pick another name")
            connection.execute(
                api_keys.insert().values(
                    name=name, prefix=prefix, hash=digest, admin=admin, rpm=rpm, tpm=tpm,
                    created_at=_now(),
                )
            )  # fmt: skip

    def put_key(
        self, name: str, prefix: str, digest: str, admin: bool, rpm: int | None, tpm: int | None
    ) -> bool:
        """Make the key of this name exactly this one, active; False when it already was."""
        wanted = {"prefix": prefix, "hash": digest, "admin": admin, "rpm": rpm, "tpm": tpm}
        with self._begin() as connection:
            row = connection.execute(sa.select(api_keys).where(api_keys.c.name == name)).first()
            if row is None:
                connection.execute(api_keys.insert().values(name=name, created_at=_now(), **wanted))
                return True
            current = row._mapping
            if current["revoked_at"] is None and all(current[k] == v for k, v in wanted.items()):
                return False
            connection.execute(
                api_keys.update()
                .where(api_keys.c.name == name)
                .values(revoked_at=None, created_at=_now(), **wanted)
            )
            return True

    def revoke_key(self, name: str) -> bool:
        with self._begin() as connection:
            result = connection.execute(
                api_keys.update()
                .where((api_keys.c.name == name) & api_keys.c.revoked_at.is_(None))
                .values(revoked_at=_now())
            )
            return result.rowcount > 0

    def list_keys(self, include_revoked: bool = True) -> list[ApiKey]:
        query = sa.select(api_keys).order_by(api_keys.c.id)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        with self._begin() as connection:
            rows = connection.execute(query).all()
        return [ApiKey(**r._mapping) for r in rows]

    def add_usage(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        with self._begin() as connection:
            connection.execute(
                usage_records.insert(), [{f: r.get(f) for f in USAGE_FIELDS} for r in records]
            )

    def usage(self, limit: int = 1000) -> list[dict[str, Any]]:
        with self._begin() as connection:
            rows = connection.execute(
                sa.select(usage_records).order_by(usage_records.c.id.desc()).limit(limit)
            ).all()
        return [dict(r._mapping) for r in rows]

    # --- Runs ----------------------------------------------------------------------

    def start_run(self, playbook: str, inventory: str, limit: str = "") -> int:
        with self._begin() as connection:
            result = connection.execute(
                runs.insert().values(
                    playbook=playbook,
                    inventory=inventory,
                    limit_pattern=limit,
                    started_at=_now(),
                    status="running",
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def add_event(self, run_id: int, host: str, task: str, status: str, message: str) -> None:
        with self._begin() as connection:
            connection.execute(
                events.insert().values(
                    run_id=run_id, host=host, task=task, status=status, message=message, at=_now()
                )
            )

    def finish_run(
        self, run_id: int, status: str, rc: int | None, recap: dict[str, dict[str, int]]
    ) -> None:
        with self._begin() as connection:
            connection.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(status=status, rc=rc, finished_at=_now())
            )
            for host, counters in recap.items():
                connection.execute(
                    run_hosts.insert().values(
                        run_id=run_id, host=host, **{c: int(counters.get(c, 0)) for c in COUNTERS}
                    )
                )

    def runs(self, limit: int = 50) -> list[Run]:
        with self._begin() as connection:
            rows = connection.execute(sa.select(runs).order_by(runs.c.id.desc()).limit(limit)).all()
            return [self._run(connection, row) for row in rows]

    def run(self, run_id: int) -> Run | None:
        with self._begin() as connection:
            row = connection.execute(sa.select(runs).where(runs.c.id == run_id)).first()
            return self._run(connection, row) if row else None

    def last_results(self) -> dict[str, tuple[int, str, dict[str, int]]]:
        """Each host's latest finished run: (run id, playbook, that host's recap counters)."""
        latest = (
            sa.select(run_hosts.c.host, sa.func.max(run_hosts.c.run_id).label("run_id"))
            .group_by(run_hosts.c.host)
            .subquery()
        )
        query = (
            sa.select(run_hosts, runs.c.playbook)
            .join(
                latest,
                (run_hosts.c.host == latest.c.host) & (run_hosts.c.run_id == latest.c.run_id),
            )
            .join(runs, runs.c.id == run_hosts.c.run_id)
        )
        with self._begin() as connection:
            rows = connection.execute(query).all()
        return {
            r.host: (r.run_id, r.playbook, {c: int(getattr(r, c)) for c in COUNTERS}) for r in rows
        }

    def events(self, run_id: int, host: str | None = None) -> list[Event]:
        query = sa.select(events).where(events.c.run_id == run_id).order_by(events.c.id)
        if host:
            query = query.where(events.c.host == host)
        with self._begin() as connection:
            rows = connection.execute(query).all()
        return [Event(r.host, r.task, r.status, r.message, r.at) for r in rows]

    @staticmethod
    def _run(connection: Connection, row: Any) -> Run:
        recap_rows = connection.execute(
            sa.select(run_hosts).where(run_hosts.c.run_id == row.id).order_by(run_hosts.c.host)
        ).all()
        recap = {r.host: {c: int(getattr(r, c)) for c in COUNTERS} for r in recap_rows}
        return Run(
            row.id,
            row.playbook,
            row.inventory,
            row.limit_pattern,
            row.started_at,
            row.finished_at,
            row.status,
            row.rc,
            recap,
        )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
