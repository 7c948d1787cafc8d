"""The store's tables as this version of clusterai reads and writes them.

``migrations`` builds them step by step; a test checks that a store migrated from
nothing has exactly these columns.
"""

from __future__ import annotations

import sqlalchemy as sa

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
    # A separate tenant: the gateway's answer cache keeps its answers apart (cache.scope).
    sa.Column("tenant", sa.Boolean, nullable=False, default=False),
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
    # The gateway's id for the record: a record sent again after a crash is stored once.
    sa.Column("record_id", sa.String(32)),
    sa.Index("ix_usage_record_id", "record_id", unique=True),
)

# Usage summed per hour, key, model, backend and route (version 7), kept as records
# arrive: the usage page reads this, not the records, so a month of traffic is a few
# thousand rows to sum. Latency and time to first token are counted in buckets (upper
# bounds in LATENCY_BUCKETS_MS, the last one unbounded); p50/p95 come from them.
LATENCY_BUCKETS_MS = (5, 10, 20, 35, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500,
                      2000, 3000, 5000, 10000, 30000)  # fmt: skip
BUCKETS = len(LATENCY_BUCKETS_MS) + 1
usage_hourly = sa.Table(
    "usage_hourly",
    metadata,
    sa.Column("hour", sa.String(13), primary_key=True),  # 2026-12-06T14
    sa.Column("key_id", sa.Integer, primary_key=True),  # 0: no key
    sa.Column("model", sa.String(255), primary_key=True),
    sa.Column("backend", sa.String(255), primary_key=True),
    sa.Column("route", sa.String(64), primary_key=True),
    sa.Column("requests", sa.Integer, nullable=False),
    sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
    sa.Column("completion_tokens", sa.BigInteger, nullable=False),
    sa.Column("errors", sa.Integer, nullable=False),
    sa.Column("cache_hits", sa.Integer, nullable=False),
    *(sa.Column(f"latency_{i}", sa.Integer, nullable=False) for i in range(BUCKETS)),
    *(sa.Column(f"ttft_{i}", sa.Integer, nullable=False) for i in range(BUCKETS)),
)

# The web app's accounts (version 6). The password is an Argon2id hash; a run of wrong
# passwords locks the account until ``locked_until``.
users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),  # admin, viewer
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("failed_logins", sa.Integer, nullable=False, default=0),
    sa.Column("locked_until", sa.String(32)),
    sa.Column("last_login_at", sa.String(32)),
)

# Who did what, when, and how it ended: every web action, and every login (version 6).
audit = sa.Table(
    "audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.String(32), nullable=False, index=True),
    sa.Column("user", sa.String(64), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.Text, nullable=False, default=""),
    sa.Column("outcome", sa.String(16), nullable=False),  # ok, refused, failed
    sa.Column("detail", sa.Text, nullable=False, default=""),
    sa.Column("address", sa.String(64), nullable=False, default=""),
)

COUNTERS = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")

# Cloud workers (``clusterai cloud``), one row per launch intent, written before any call
# that can create something and kept after termination (cost, audit); version 8.
cloud_instances = sa.Table(
    "cloud_instances",
    metadata,
    # The intent's id: the instance's ClientToken and its clusterai:intent tag.
    sa.Column("intent", sa.String(64), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("instance_type", sa.String(64), nullable=False),
    sa.Column("spot", sa.Boolean, nullable=False),
    sa.Column("hourly_usd", sa.Float, nullable=False),
    # intent, launched, running, joined, draining, terminating, terminated, failed, closed
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("instance_id", sa.String(64)),
    sa.Column("address", sa.String(255)),
    # The SSH host key the instance was given in its user-data ("ssh-ed25519 AAAA...").
    sa.Column("host_key", sa.Text),
    sa.Column("error", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.String(32), nullable=False),
    # When the instance started and stopped costing money (RunInstances answered; seen
    # terminated), for the cost.
    sa.Column("launched_at", sa.String(32)),
    sa.Column("ended_at", sa.String(32)),
    sa.Column("updated_at", sa.String(32), nullable=False),
)

# The autoscaler's decisions (inputs, action, reason, outcome) and what its loop carries
# from one evaluation to the next; version 9.
autoscale_decisions = sa.Table(
    "autoscale_decisions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.String(32), nullable=False, index=True),
    sa.Column("action", sa.String(16), nullable=False),  # scale-out, scale-in, hold
    sa.Column("pool", sa.String(64), nullable=False, default=""),
    sa.Column("host", sa.String(255), nullable=False, default=""),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("inputs", sa.Text, nullable=False),  # JSON: the signals, pools and mins seen
    sa.Column("outcome", sa.String(16), nullable=False),  # running, succeeded, failed, held
    sa.Column("error", sa.Text, nullable=False, default=""),
    sa.Column("run_id", sa.Integer),
    sa.Column("seconds", sa.Float),  # how long the action took
)
autoscale_memory = sa.Table(
    "autoscale_memory",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("updated_at", sa.String(32), nullable=False),
)

# Model rollouts (`clusterai models rollout`): one row each, and every step it took; version 10.
rollouts = sa.Table(
    "rollouts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("alias", sa.String(255), nullable=False),
    sa.Column("from_model", sa.String(255), nullable=False),
    sa.Column("to_model", sa.String(255), nullable=False),
    sa.Column("hosts", sa.Text, nullable=False),  # JSON: the workers, canaries first
    sa.Column("status", sa.String(16), nullable=False),  # running, succeeded, failed
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("started_at", sa.String(32), nullable=False, index=True),
    sa.Column("finished_at", sa.String(32)),
)
rollout_steps = sa.Table(
    "rollout_steps",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("rollout_id", sa.Integer, sa.ForeignKey("rollouts.id"), nullable=False, index=True),
    sa.Column("at", sa.String(32), nullable=False),
    sa.Column("step", sa.String(32), nullable=False),  # drain, pull, evaluate, undrain, ...
    sa.Column("hosts", sa.Text, nullable=False),  # JSON
    sa.Column("outcome", sa.String(16), nullable=False),  # succeeded, failed
    sa.Column("detail", sa.Text, nullable=False, default=""),
    sa.Column("run_id", sa.Integer),
)
