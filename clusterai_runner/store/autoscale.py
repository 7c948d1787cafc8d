"""The autoscaler's decisions, each with what it saw, what it did and how that ended, and
the memory its loop carries between evaluations (timers, backoffs), so that ``once`` run
from a timer and ``run`` after a restart go on where the last evaluation stopped."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from clusterai_runner.store.base import StoreBase, now
from clusterai_runner.store.schema import autoscale_decisions, autoscale_memory

DECISION_OUTCOMES = ("running", "succeeded", "failed", "held")


@dataclass(frozen=True)
class AutoscaleDecision:
    id: int
    at: str
    action: str  # scale-out, scale-in, hold
    pool: str
    host: str
    reason: str
    inputs: dict[str, Any]
    outcome: str
    error: str
    run_id: int | None
    seconds: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class AutoscaleRecords(StoreBase):
    def record_decision(
        self,
        action: str,
        reason: str,
        inputs: dict[str, Any],
        pool: str = "",
        host: str = "",
        outcome: str = "running",
    ) -> int:
        if outcome not in DECISION_OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        with self._begin() as connection:
            result = connection.execute(
                autoscale_decisions.insert().values(
                    at=now(), action=action, pool=pool, host=host, reason=reason,
                    inputs=json.dumps(inputs, sort_keys=True), outcome=outcome, error="",
                )
            )  # fmt: skip
            key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    def finish_decision(
        self,
        decision: int,
        outcome: str,
        error: str = "",
        run_id: int | None = None,
        seconds: float | None = None,
        host: str | None = None,
    ) -> None:
        """The decision's outcome; ``host`` names the host it acted on when that was
        known only after (a new cloud worker)."""
        if outcome not in DECISION_OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        values: dict[str, Any] = {
            "outcome": outcome,
            "error": error,
            "run_id": run_id,
            "seconds": seconds,
        }
        if host is not None:
            values["host"] = host
        with self._begin() as connection:
            connection.execute(
                autoscale_decisions.update()
                .where(autoscale_decisions.c.id == decision)
                .values(**values)
            )

    def decision(self, decision: int) -> AutoscaleDecision | None:
        with self._begin() as connection:
            row = connection.execute(
                sa.select(autoscale_decisions).where(autoscale_decisions.c.id == decision)
            ).first()
        return _decision(row) if row is not None else None

    def decisions(
        self, limit: int = 50, pool: str | None = None, acted: bool = False
    ) -> list[AutoscaleDecision]:
        """The newest first; ``acted``: leave the holds out."""
        c = autoscale_decisions.c
        query = sa.select(autoscale_decisions).order_by(c.id.desc()).limit(limit)
        if pool:
            query = query.where(c.pool == pool)
        if acted:
            query = query.where(c.action != "hold")
        with self._begin() as connection:
            rows = connection.execute(query).all()
        return [_decision(row) for row in rows]

    def start_seconds(self, pool: str, last: int = 5) -> float | None:
        """The mean time of the pool's ``last`` successful scale-outs (None: none yet)."""
        c = autoscale_decisions.c
        query = (
            sa.select(c.seconds)
            .where(c.pool == pool, c.action == "scale-out", c.outcome == "succeeded")
            .where(c.seconds.is_not(None))
            .order_by(c.id.desc())
            .limit(last)
        )
        with self._begin() as connection:
            found = [float(row[0]) for row in connection.execute(query)]
        return sum(found) / len(found) if found else None

    def autoscale_memory(self, name: str = "default") -> dict[str, Any]:
        with self._begin() as connection:
            row = connection.execute(
                sa.select(autoscale_memory.c.body).where(autoscale_memory.c.name == name)
            ).first()
        loaded: dict[str, Any] = json.loads(row[0]) if row is not None else {}
        return loaded

    def save_autoscale_memory(self, body: dict[str, Any], name: str = "default") -> None:
        text = json.dumps(body, sort_keys=True)
        with self._begin() as connection:
            updated = connection.execute(
                autoscale_memory.update()
                .where(autoscale_memory.c.name == name)
                .values(body=text, updated_at=now())
            )
            if not updated.rowcount:
                connection.execute(
                    autoscale_memory.insert().values(name=name, body=text, updated_at=now())
                )


def _decision(row: sa.Row[Any]) -> AutoscaleDecision:
    values = dict(row._mapping)
    values["inputs"] = json.loads(values["inputs"])
    return AutoscaleDecision(**values)
