"""Cloud workers (``clusterai cloud``): one record per launch intent.

The intent is written before the call that can create an instance, and every step after
it is a state of the record, so a crash at any point leaves enough to resume or to clean
up: the instance carries the intent's id as its ClientToken and in a tag.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from clusterai_runner.store.base import StoreBase, now
from clusterai_runner.store.schema import cloud_instances

# Where a record can be: the launch's steps, the way down, and the two ends that cost
# nothing (terminated: the cloud said so; closed: the call never created an instance).
CLOUD_STATES = (
    "intent",
    "launched",
    "running",
    "joined",
    "draining",
    "terminating",
    "terminated",
    "failed",
    "closed",
)
# States whose instance may still exist (and cost money).
LIVE_STATES = ("intent", "launched", "running", "joined", "draining", "terminating", "failed")


@dataclass(frozen=True)
class CloudInstance:
    intent: str
    host: str
    instance_type: str
    spot: bool
    hourly_usd: float
    state: str
    instance_id: str | None
    address: str | None
    host_key: str | None
    error: str
    created_at: str
    launched_at: str | None
    ended_at: str | None
    updated_at: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class CloudRecords(StoreBase):
    def record_intent(
        self,
        intent: str,
        host: str,
        instance_type: str,
        spot: bool,
        hourly_usd: float,
        host_key: str | None = None,
    ) -> CloudInstance:
        """Write a launch intent, before any call that can create its instance."""
        stamp = now()
        with self._begin() as connection:
            connection.execute(
                cloud_instances.insert().values(
                    intent=intent,
                    host=host,
                    instance_type=instance_type,
                    spot=spot,
                    hourly_usd=hourly_usd,
                    state="intent",
                    host_key=host_key,
                    error="",
                    created_at=stamp,
                    updated_at=stamp,
                )
            )
        found = self.cloud_instance(intent)
        assert found is not None
        return found

    def update_cloud_instance(self, intent: str, state: str, **fields: Any) -> CloudInstance:
        """Move a record to ``state``, setting any of instance_id, address, error,
        launched_at and ended_at."""
        if state not in CLOUD_STATES:
            raise ValueError(f"unknown cloud state {state!r}")
        allowed = {"instance_id", "address", "error", "launched_at", "ended_at", "host_key"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot set {', '.join(sorted(unknown))}")
        with self._begin() as connection:
            connection.execute(
                cloud_instances.update()
                .where(cloud_instances.c.intent == intent)
                .values(state=state, updated_at=now(), **fields)
            )
        found = self.cloud_instance(intent)
        if found is None:
            raise KeyError(intent)
        return found

    def cloud_instance(self, intent: str) -> CloudInstance | None:
        with self._begin() as connection:
            row = connection.execute(
                sa.select(cloud_instances).where(cloud_instances.c.intent == intent)
            ).first()
        return _instance(row) if row is not None else None

    def cloud_instances(self, states: Iterable[str] | None = None) -> list[CloudInstance]:
        """Every record (or those in ``states``), oldest first."""
        query = sa.select(cloud_instances).order_by(
            cloud_instances.c.created_at, cloud_instances.c.intent
        )
        if states is not None:
            query = query.where(cloud_instances.c.state.in_(list(states)))
        with self._begin() as connection:
            rows = connection.execute(query).all()
        return [_instance(r) for r in rows]


def _instance(row: Any) -> CloudInstance:
    return CloudInstance(
        intent=row.intent,
        host=row.host,
        instance_type=row.instance_type,
        spot=bool(row.spot),
        hourly_usd=float(row.hourly_usd),
        state=row.state,
        instance_id=row.instance_id,
        address=row.address,
        host_key=row.host_key,
        error=row.error,
        created_at=row.created_at,
        launched_at=row.launched_at,
        ended_at=row.ended_at,
        updated_at=row.updated_at,
    )
