"""Model rollouts (``clusterai models rollout``): each rollout's alias, the model it moves
from and to, its workers, how it ended and why, and every step it took (drain, pull,
evaluate, undrain, roll back, move the alias), each with its outcome and the run it made."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from clusterai_runner.store.base import StoreBase, now
from clusterai_runner.store.schema import rollout_steps, rollouts

ROLLOUT_STATUSES = ("running", "succeeded", "failed")
STEP_OUTCOMES = ("succeeded", "failed")


@dataclass(frozen=True)
class RolloutStep:
    id: int
    rollout_id: int
    at: str
    step: str
    hosts: list[str]
    outcome: str
    detail: str
    run_id: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Rollout:
    id: int
    alias: str
    from_model: str
    to_model: str
    hosts: list[str]
    status: str
    reason: str
    started_at: str
    finished_at: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RolloutRecords(StoreBase):
    def start_rollout(self, alias: str, from_model: str, to_model: str, hosts: list[str]) -> int:
        with self._begin() as connection:
            result = connection.execute(
                rollouts.insert().values(
                    alias=alias, from_model=from_model, to_model=to_model,
                    hosts=json.dumps(hosts), status="running", reason="", started_at=now(),
                )
            )  # fmt: skip
            key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    def add_rollout_step(
        self,
        rollout: int,
        step: str,
        hosts: list[str],
        outcome: str,
        detail: str = "",
        run_id: int | None = None,
    ) -> int:
        if outcome not in STEP_OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        with self._begin() as connection:
            result = connection.execute(
                rollout_steps.insert().values(
                    rollout_id=rollout, at=now(), step=step, hosts=json.dumps(hosts),
                    outcome=outcome, detail=detail, run_id=run_id,
                )
            )  # fmt: skip
            key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    def finish_rollout(self, rollout: int, status: str, reason: str = "") -> None:
        if status not in ROLLOUT_STATUSES[1:]:
            raise ValueError(f"unknown status {status!r}")
        with self._begin() as connection:
            connection.execute(
                rollouts.update()
                .where(rollouts.c.id == rollout)
                .values(status=status, reason=reason, finished_at=now())
            )

    def rollouts(self, limit: int = 20) -> list[Rollout]:
        """The newest first."""
        query = sa.select(rollouts).order_by(rollouts.c.id.desc()).limit(limit)
        with self._begin() as connection:
            rows = connection.execute(query).all()
        return [_rollout(row) for row in rows]

    def rollout(self, rollout: int) -> Rollout | None:
        with self._begin() as connection:
            row = connection.execute(sa.select(rollouts).where(rollouts.c.id == rollout)).first()
        return _rollout(row) if row is not None else None

    def rollout_steps(self, rollout: int) -> list[RolloutStep]:
        """In the order they were taken."""
        c = rollout_steps.c
        query = sa.select(rollout_steps).where(c.rollout_id == rollout).order_by(c.id)
        with self._begin() as connection:
            rows = connection.execute(query).all()
        return [RolloutStep(**{**row._mapping, "hosts": json.loads(row.hosts)}) for row in rows]


def _rollout(row: sa.Row[Any]) -> Rollout:
    return Rollout(**{**row._mapping, "hosts": json.loads(row.hosts)})
