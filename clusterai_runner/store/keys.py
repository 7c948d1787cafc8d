"""The gateway's API keys (prefix and SHA-256 only) and its usage records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from clusterai_runner.errors import StoreError
from clusterai_runner.store.base import StoreBase, now
from clusterai_runner.store.schema import api_keys, usage_records


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
    tenant: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "prefix": self.prefix,
            "admin": self.admin,
            "tenant": self.tenant,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


USAGE_FIELDS = (
    "at", "key_id", "route", "model", "backend", "status", "prompt_tokens",
    "completion_tokens", "latency_ms", "ttft_ms", "cache_hit", "record_id",
)  # fmt: skip


class KeyRecords(StoreBase):
    def add_key(
        self,
        name: str,
        prefix: str,
        digest: str,
        admin: bool,
        rpm: int | None,
        tpm: int | None,
        tenant: bool = False,
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
                    tenant=tenant, created_at=now(),
                )
            )  # fmt: skip

    def put_key(
        self,
        name: str,
        prefix: str,
        digest: str,
        admin: bool,
        rpm: int | None,
        tpm: int | None,
        tenant: bool = False,
    ) -> bool:
        """Make the key of this name exactly this one, active; False when it already was."""
        wanted = {"prefix": prefix, "hash": digest, "admin": admin, "rpm": rpm, "tpm": tpm,
                  "tenant": tenant}  # fmt: skip
        with self._begin() as connection:
            row = connection.execute(sa.select(api_keys).where(api_keys.c.name == name)).first()
            if row is None:
                connection.execute(api_keys.insert().values(name=name, created_at=now(), **wanted))
                return True
            current = row._mapping
            if current["revoked_at"] is None and all(current[k] == v for k, v in wanted.items()):
                return False
            connection.execute(
                api_keys.update()
                .where(api_keys.c.name == name)
                .values(revoked_at=None, created_at=now(), **wanted)
            )
            return True

    def revoke_key(self, name: str) -> bool:
        with self._begin() as connection:
            result = connection.execute(
                api_keys.update()
                .where((api_keys.c.name == name) & api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now())
            )
            return result.rowcount > 0

    def list_keys(self, include_revoked: bool = True) -> list[ApiKey]:
        query = sa.select(api_keys).order_by(api_keys.c.id)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        with self._begin() as connection:
            rows = connection.execute(query).all()
        return [ApiKey(**r._mapping) for r in rows]

    def add_usage(self, records: list[dict[str, Any]]) -> int:
        """Store the records, skipping those whose ``record_id`` the store already holds
        (the gateway sends a batch again when it cannot know whether it was stored).
        Returns how many were new."""
        ids = [r["record_id"] for r in records if r.get("record_id")]
        with self._begin() as connection:
            held = set()
            for first in range(0, len(ids), 500):
                held |= set(connection.scalars(
                    sa.select(usage_records.c.record_id).where(
                        usage_records.c.record_id.in_(ids[first : first + 500])
                    )
                ))  # fmt: skip
            new = [r for r in records if not r.get("record_id") or r["record_id"] not in held]
            if new:
                connection.execute(
                    usage_records.insert(), [{f: r.get(f) for f in USAGE_FIELDS} for r in new]
                )
        return len(new)

    def usage(self, limit: int = 1000) -> list[dict[str, Any]]:
        with self._begin() as connection:
            rows = connection.execute(
                sa.select(usage_records).order_by(usage_records.c.id.desc()).limit(limit)
            ).all()
        return [dict(r._mapping) for r in rows]
