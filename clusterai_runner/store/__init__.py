"""The state store: hosts, runs and each run's per-host task events, the gateway's API
keys (hashed) and usage records, the web app's users (hashed passwords) and audit trail,
the cloud workers' launch records, the autoscaler's decisions, and model rollouts.

The bottom layer of the package: it imports nothing of ours but ``errors`` (an import
contract checks it). SQLite by default (a file under the state directory, in WAL mode so
readers never wait for the CLI's writer); any SQLAlchemy URL works, e.g.
``postgresql+psycopg://...`` when several control processes share one store. One module
per table group (``hosts``, ``runs``, ``keys``, ``users``, ``cloud``, ``autoscale``,
``rollouts``) over
``base`` (engine, transactions, migrations); ``schema`` holds the tables as read and written
now, ``migrations`` the frozen steps that build them. A store written by a newer clusterai
is refused rather than damaged.
"""

from __future__ import annotations

from clusterai_runner.errors import StoreError
from clusterai_runner.store.autoscale import AutoscaleDecision, AutoscaleRecords
from clusterai_runner.store.cloud import CLOUD_STATES, LIVE_STATES, CloudInstance, CloudRecords
from clusterai_runner.store.hosts import Host, HostRecords
from clusterai_runner.store.keys import USAGE_FIELDS, ApiKey, KeyRecords
from clusterai_runner.store.migrations import MIGRATIONS, SCHEMA_VERSION
from clusterai_runner.store.rollouts import Rollout, RolloutRecords, RolloutStep
from clusterai_runner.store.runs import Event, Run, RunRecords
from clusterai_runner.store.schema import COUNTERS, metadata
from clusterai_runner.store.users import AuditEntry, User, UserRecords


class Store(
    HostRecords, RunRecords, KeyRecords, UserRecords, CloudRecords, AutoscaleRecords,
    RolloutRecords,
):  # fmt: skip
    """One state store. ``Store.open(url)`` creates or migrates it."""


__all__ = [
    "CLOUD_STATES",
    "COUNTERS",
    "LIVE_STATES",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "USAGE_FIELDS",
    "ApiKey",
    "AuditEntry",
    "AutoscaleDecision",
    "CloudInstance",
    "Event",
    "Host",
    "Rollout",
    "RolloutStep",
    "Run",
    "Store",
    "StoreError",
    "User",
    "metadata",
]
