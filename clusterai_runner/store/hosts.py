"""Hosts added with ``clusterai scale-out`` into the store (the dynamic inventory's)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from clusterai_runner.store.base import StoreBase, now
from clusterai_runner.store.schema import hosts


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


class HostRecords(StoreBase):
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
                    added_at=now(),
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
