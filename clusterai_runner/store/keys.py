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

    def usage_summary(self, since: str, by: str, until: str | None = None) -> list[dict[str, Any]]:
        """Usage since ``since`` (an ISO time) grouped ``by`` key, model, backend, route, or a
        time bucket (minute, hour, day): requests, tokens, errors (status 400 and up), cache
        hits, and latency and time-to-first-token p50/p95. Counted in SQL (the percentiles
        by a window over each group), so the rows never leave the database."""
        u = usage_records
        buckets = {"minute": 16, "hour": 13, "day": 10}
        if by in buckets:
            group: Any = sa.func.substr(u.c.at, 1, buckets[by])
        elif by in ("model", "backend", "route"):
            group = u.c[by]
        elif by == "key":
            group = sa.func.coalesce(api_keys.c.name, "(no key)")
        else:
            raise ValueError(f"usage_summary: cannot group by {by!r}")
        window = u.c.at >= since
        if until:
            window &= u.c.at < until
        source = u.outerjoin(api_keys, api_keys.c.id == u.c.key_id) if by == "key" else u
        ranked = (
            sa.select(
                group.label("grp"),
                u.c.status, u.c.prompt_tokens, u.c.completion_tokens, u.c.cache_hit,
                u.c.latency_ms, u.c.ttft_ms,
                sa.func.row_number().over(partition_by=group, order_by=u.c.latency_ms)
                .label("lrank"),
                sa.func.count().over(partition_by=group).label("n"),
                sa.func.row_number().over(
                    partition_by=group, order_by=sa.func.coalesce(u.c.ttft_ms, 1e18)
                ).label("trank"),
                sa.func.count(u.c.ttft_ms).over(partition_by=group).label("tn"),
            )
            .select_from(source)
            .where(window)
            .subquery()
        )  # fmt: skip
        r = ranked.c

        def pick(value: Any, rank: Any, count: Any, share: float) -> Any:
            return sa.func.min(sa.case((rank >= count * share, value)))

        query = (
            sa.select(
                r.grp.label("group"),
                sa.func.count().label("requests"),
                sa.func.sum(r.prompt_tokens).label("prompt_tokens"),
                sa.func.sum(r.completion_tokens).label("completion_tokens"),
                sa.func.sum(sa.case((r.status >= 400, 1), else_=0)).label("errors"),
                sa.func.sum(sa.case((r.cache_hit, 1), else_=0)).label("cache_hits"),
                pick(r.latency_ms, r.lrank, r.n, 0.5).label("latency_p50_ms"),
                pick(r.latency_ms, r.lrank, r.n, 0.95).label("latency_p95_ms"),
                pick(r.ttft_ms, r.trank, r.tn, 0.5).label("ttft_p50_ms"),
                pick(r.ttft_ms, r.trank, r.tn, 0.95).label("ttft_p95_ms"),
            )
            .group_by(r.grp)
            .order_by(r.grp)
        )
        with self._begin() as connection:
            rows = connection.execute(query).all()
        return [dict(row._mapping) for row in rows]
