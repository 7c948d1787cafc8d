"""The schema's history. ``MIGRATIONS[n]`` takes a store from version n to n + 1.

Frozen: each step creates exactly what its version had, with its own copy of the table
definitions, so version 1 stays what version 1 was however ``schema`` grows. A new
version is a new step appended here and the matching change in ``schema``.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection


def _v1_hosts_runs_events(connection: Connection) -> None:
    frozen = sa.MetaData()
    sa.Table(
        "hosts",
        frozen,
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("groups", sa.Text, nullable=False),
        sa.Column("added_at", sa.String(32), nullable=False),
    )
    sa.Table(
        "runs",
        frozen,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("playbook", sa.String(255), nullable=False),
        sa.Column("inventory", sa.Text, nullable=False),
        sa.Column("limit_pattern", sa.Text, nullable=False),
        sa.Column("started_at", sa.String(32), nullable=False),
        sa.Column("finished_at", sa.String(32)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("rc", sa.Integer),
    )
    sa.Table(
        "run_hosts",
        frozen,
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), primary_key=True),
        sa.Column("host", sa.String(255), primary_key=True),
        *(
            sa.Column(counter, sa.Integer, nullable=False)
            for counter in ("ok", "changed", "unreachable", "failed", "skipped", "rescued")
        ),
        sa.Column("ignored", sa.Integer, nullable=False),
    )
    sa.Table(
        "events",
        frozen,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False, index=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("task", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("at", sa.String(32), nullable=False),
    )
    frozen.create_all(connection)


def _v2_host_vars(connection: Connection) -> None:
    # Stores created by clusterai 0.2 and 0.3 built version 1 from the version 2 table,
    # so the column may already be there.
    if "vars" not in {c["name"] for c in sa.inspect(connection).get_columns("hosts")}:
        connection.execute(sa.text("ALTER TABLE hosts ADD COLUMN vars TEXT NOT NULL DEFAULT '{}'"))


def _v3_gateway_keys_and_usage(connection: Connection) -> None:
    frozen = sa.MetaData()
    sa.Table(
        "api_keys",
        frozen,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("prefix", sa.String(32), nullable=False, unique=True),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("admin", sa.Boolean, nullable=False),
        sa.Column("rpm", sa.Integer),
        sa.Column("tpm", sa.Integer),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("revoked_at", sa.String(32)),
    )
    sa.Table(
        "usage",
        frozen,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.String(32), nullable=False, index=True),
        sa.Column("key_id", sa.Integer),
        sa.Column("route", sa.String(64), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("backend", sa.String(255), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("ttft_ms", sa.Float),
        sa.Column("cache_hit", sa.Boolean, nullable=False),
    )
    frozen.create_all(connection, checkfirst=True)


def _v4_usage_record_ids(connection: Connection) -> None:
    connection.execute(sa.text("ALTER TABLE usage ADD COLUMN record_id VARCHAR(32)"))
    connection.execute(sa.text("CREATE UNIQUE INDEX ix_usage_record_id ON usage (record_id)"))


def _v5_tenant_keys(connection: Connection) -> None:
    connection.execute(
        sa.text("ALTER TABLE api_keys ADD COLUMN tenant BOOLEAN NOT NULL DEFAULT FALSE")
    )


def _v6_web_users_and_audit(connection: Connection) -> None:
    frozen = sa.MetaData()
    sa.Table(
        "users",
        frozen,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("failed_logins", sa.Integer, nullable=False),
        sa.Column("locked_until", sa.String(32)),
        sa.Column("last_login_at", sa.String(32)),
    )
    sa.Table(
        "audit",
        frozen,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.String(32), nullable=False, index=True),
        sa.Column("user", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
    )
    frozen.create_all(connection)


def _v7_hourly_usage(connection: Connection) -> None:
    bounds = (5, 10, 20, 35, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000,
              5000, 10000, 30000)  # fmt: skip
    buckets = len(bounds) + 1
    frozen = sa.MetaData()
    hourly = sa.Table(
        "usage_hourly",
        frozen,
        sa.Column("hour", sa.String(13), primary_key=True),
        sa.Column("key_id", sa.Integer, primary_key=True),
        sa.Column("model", sa.String(255), primary_key=True),
        sa.Column("backend", sa.String(255), primary_key=True),
        sa.Column("route", sa.String(64), primary_key=True),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
        sa.Column("cache_hits", sa.Integer, nullable=False),
        *(sa.Column(f"latency_{i}", sa.Integer, nullable=False) for i in range(buckets)),
        *(sa.Column(f"ttft_{i}", sa.Integer, nullable=False) for i in range(buckets)),
    )
    frozen.create_all(connection)
    # The records a store already holds, summed into it.
    usage = sa.table("usage", *(sa.column(c) for c in (
        "at", "key_id", "model", "backend", "route", "status", "prompt_tokens",
        "completion_tokens", "cache_hit", "latency_ms", "ttft_ms")))  # fmt: skip
    c = usage.c

    def bucket(column: sa.ColumnElement[float], index: int) -> sa.ColumnElement[int]:
        low = bounds[index - 1] if index else None
        high = bounds[index] if index < len(bounds) else None
        test: sa.ColumnElement[bool] = column.is_not(None)
        if low is not None:
            test &= column > low
        if high is not None:
            test &= column <= high
        return sa.func.sum(sa.case((test, 1), else_=0))

    hour = sa.func.substr(c.at, 1, 13)
    key = sa.func.coalesce(c.key_id, 0)
    select = sa.select(
        hour, key, c.model, c.backend, c.route, sa.func.count(),
        sa.func.sum(c.prompt_tokens), sa.func.sum(c.completion_tokens),
        sa.func.sum(sa.case((c.status >= 400, 1), else_=0)),
        sa.func.sum(sa.case((c.cache_hit, 1), else_=0)),
        *(bucket(c.latency_ms, i) for i in range(buckets)),
        *(bucket(c.ttft_ms, i) for i in range(buckets)),
    ).group_by(hour, key, c.model, c.backend, c.route)  # fmt: skip
    connection.execute(hourly.insert().from_select([col.name for col in hourly.c], select))


def _v8_cloud_instances(connection: Connection) -> None:
    frozen = sa.MetaData()
    sa.Table(
        "cloud_instances",
        frozen,
        sa.Column("intent", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("instance_type", sa.String(64), nullable=False),
        sa.Column("spot", sa.Boolean, nullable=False),
        sa.Column("hourly_usd", sa.Float, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("instance_id", sa.String(64)),
        sa.Column("address", sa.String(255)),
        sa.Column("host_key", sa.Text),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("launched_at", sa.String(32)),
        sa.Column("ended_at", sa.String(32)),
        sa.Column("updated_at", sa.String(32), nullable=False),
    )
    frozen.create_all(connection)


def _v9_autoscale(connection: Connection) -> None:
    frozen = sa.MetaData()
    sa.Table(
        "autoscale_decisions",
        frozen,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.String(32), nullable=False, index=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("pool", sa.String(64), nullable=False, default=""),
        sa.Column("host", sa.String(255), nullable=False, default=""),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("inputs", sa.Text, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error", sa.Text, nullable=False, default=""),
        sa.Column("run_id", sa.Integer),
        sa.Column("seconds", sa.Float),
    )
    sa.Table(
        "autoscale_memory",
        frozen,
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
    )
    frozen.create_all(connection)


def _v10_rollouts(connection: Connection) -> None:
    frozen = sa.MetaData()
    sa.Table(
        "rollouts",
        frozen,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("alias", sa.String(255), nullable=False),
        sa.Column("from_model", sa.String(255), nullable=False),
        sa.Column("to_model", sa.String(255), nullable=False),
        sa.Column("hosts", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False, default=""),
        sa.Column("started_at", sa.String(32), nullable=False, index=True),
        sa.Column("finished_at", sa.String(32)),
    )
    sa.Table(
        "rollout_steps",
        frozen,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "rollout_id", sa.Integer, sa.ForeignKey("rollouts.id"), nullable=False, index=True
        ),
        sa.Column("at", sa.String(32), nullable=False),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("hosts", sa.Text, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=False, default=""),
        sa.Column("run_id", sa.Integer),
    )
    frozen.create_all(connection)


MIGRATIONS: list[Callable[[Connection], None]] = [
    _v1_hosts_runs_events,
    _v2_host_vars,
    _v3_gateway_keys_and_usage,
    _v4_usage_record_ids,
    _v5_tenant_keys,
    _v6_web_users_and_audit,
    _v7_hourly_usage,
    _v8_cloud_instances,
    _v9_autoscale,
    _v10_rollouts,
]
SCHEMA_VERSION = len(MIGRATIONS)
