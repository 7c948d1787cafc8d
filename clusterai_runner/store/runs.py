"""Playbook runs, each host's task results as they happen, and the final recap."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from clusterai_runner.store.base import StoreBase, now
from clusterai_runner.store.schema import COUNTERS, events, run_hosts, runs


@dataclass(frozen=True)
class Event:
    host: str
    task: str
    status: str
    message: str
    at: str
    id: int = 0


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


class RunRecords(StoreBase):
    def start_run(self, playbook: str, inventory: str, limit: str = "") -> int:
        with self._begin() as connection:
            result = connection.execute(
                runs.insert().values(
                    playbook=playbook,
                    inventory=inventory,
                    limit_pattern=limit,
                    started_at=now(),
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
                    run_id=run_id, host=host, task=task, status=status, message=message, at=now()
                )
            )

    def finish_run(
        self, run_id: int, status: str, rc: int | None, recap: dict[str, dict[str, int]]
    ) -> None:
        with self._begin() as connection:
            connection.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(status=status, rc=rc, finished_at=now())
            )
            for host, counters in recap.items():
                connection.execute(
                    run_hosts.insert().values(
                        run_id=run_id, host=host, **{c: int(counters.get(c, 0)) for c in COUNTERS}
                    )
                )

    def runs(
        self,
        limit: int = 50,
        playbook: str | None = None,
        status: str | None = None,
        host: str | None = None,
        before: int | None = None,
    ) -> list[Run]:
        """The newest runs first; only ``playbook``'s, in ``status``, that ended with ``host``
        in their recap, older than run ``before`` (the next page)."""
        query = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
        if playbook:
            query = query.where(runs.c.playbook == playbook)
        if status:
            query = query.where(runs.c.status == status)
        if before:
            query = query.where(runs.c.id < before)
        if host:
            query = query.where(
                sa.exists().where((run_hosts.c.run_id == runs.c.id) & (run_hosts.c.host == host))
            )
        with self._begin() as connection:
            rows = connection.execute(query).all()
            return [self._run(connection, row) for row in rows]

    def playbooks(self) -> list[str]:
        """Every playbook a stored run ran, for filters."""
        with self._begin() as connection:
            rows = connection.execute(sa.select(runs.c.playbook).distinct()).all()
        return sorted(r[0] for r in rows)

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

    def events(
        self, run_id: int, host: str | None = None, after: int = 0, limit: int | None = None
    ) -> list[Event]:
        """A run's task results in the order they came; only ``host``'s, only those after
        the result with id ``after`` (a live tail asks for what is new)."""
        query = sa.select(events).where(events.c.run_id == run_id).order_by(events.c.id)
        if host:
            query = query.where(events.c.host == host)
        if after:
            query = query.where(events.c.id > after)
        if limit:
            query = query.limit(limit)
        with self._begin() as connection:
            rows = connection.execute(query).all()
        return [Event(r.host, r.task, r.status, r.message, r.at, r.id) for r in rows]

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
