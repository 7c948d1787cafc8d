"""The gateway's API keys (prefix and SHA-256 only) and its usage records."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from clusterai_runner.errors import StoreError
from clusterai_runner.store.base import StoreBase, now
from clusterai_runner.store.schema import (
    BUCKETS,
    LATENCY_BUCKETS_MS,
    api_keys,
    usage_hourly,
    usage_records,
)


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
                self._add_hourly(connection, new)
        return len(new)

    def usage(self, limit: int = 1000) -> list[dict[str, Any]]:
        with self._begin() as connection:
            rows = connection.execute(
                sa.select(usage_records).order_by(usage_records.c.id.desc()).limit(limit)
            ).all()
        return [dict(r._mapping) for r in rows]

    def usage_summary(self, since: str, by: str) -> list[dict[str, Any]]:
        """Usage from the hour holding ``since`` (an ISO time) on, grouped ``by`` key, model,
        backend, route, hour or day: requests, tokens, errors (status 400 and up), cache
        hits, and latency and time to first token at p50 and p95. Summed in SQL over the
        hourly table; each percentile is read from its buckets, interpolated within the
        bucket it falls in (as Prometheus's histogram_quantile does)."""
        h = usage_hourly
        if by == "hour":
            group: Any = h.c.hour
        elif by == "day":
            group = sa.func.substr(h.c.hour, 1, 10)
        elif by in ("model", "backend", "route"):
            group = h.c[by]
        elif by == "key":
            group = sa.func.coalesce(api_keys.c.name, "(no key)")
        else:
            raise ValueError(f"usage_summary: cannot group by {by!r}")
        source = h.outerjoin(api_keys, api_keys.c.id == h.c.key_id) if by == "key" else h
        counted = ("requests", "prompt_tokens", "completion_tokens", "errors", "cache_hits")
        buckets = [f"latency_{i}" for i in range(BUCKETS)] + [f"ttft_{i}" for i in range(BUCKETS)]
        query = (
            sa.select(group.label("group"), *(sa.func.sum(h.c[c]).label(c) for c in counted),
                      *(sa.func.sum(h.c[b]).label(b) for b in buckets))
            .select_from(source)
            .where(h.c.hour >= since[:13])
            .group_by(group)
            .order_by(group)
        )  # fmt: skip
        with self._begin() as connection:
            rows = connection.execute(query).all()
        summary = []
        for row in rows:
            values = row._mapping
            latency = [int(values[f"latency_{i}"]) for i in range(BUCKETS)]
            ttft = [int(values[f"ttft_{i}"]) for i in range(BUCKETS)]
            entry = {"group": values["group"], **{c: int(values[c] or 0) for c in counted}}
            entry["latency_p50_ms"] = quantile(latency, 0.5)
            entry["latency_p95_ms"] = quantile(latency, 0.95)
            entry["ttft_p50_ms"] = quantile(ttft, 0.5)
            entry["ttft_p95_ms"] = quantile(ttft, 0.95)
            summary.append(entry)
        return summary

    @staticmethod
    def _add_hourly(connection: Connection, records: list[dict[str, Any]]) -> None:
        """Sum ``records`` into their hours' rows, in the transaction that stores them."""
        sums: dict[tuple[str, int, str, str, str], list[int]] = {}
        width = 5 + 2 * BUCKETS
        for r in records:
            key = (str(r["at"])[:13], int(r.get("key_id") or 0), str(r.get("model") or ""),
                   str(r.get("backend") or ""), str(r.get("route") or ""))  # fmt: skip
            row = sums.setdefault(key, [0] * width)
            row[0] += 1
            row[1] += int(r.get("prompt_tokens") or 0)
            row[2] += int(r.get("completion_tokens") or 0)
            row[3] += int(int(r.get("status") or 0) >= 400)
            row[4] += int(bool(r.get("cache_hit")))
            row[5 + bisect.bisect_left(LATENCY_BUCKETS_MS, float(r["latency_ms"]))] += 1
            if r.get("ttft_ms") is not None:
                row[5 + BUCKETS + bisect.bisect_left(LATENCY_BUCKETS_MS, float(r["ttft_ms"]))] += 1
        if not sums:
            return
        names = ["requests", "prompt_tokens", "completion_tokens", "errors", "cache_hits",
                 *(f"latency_{i}" for i in range(BUCKETS)),
                 *(f"ttft_{i}" for i in range(BUCKETS))]  # fmt: skip
        keys = ("hour", "key_id", "model", "backend", "route")
        rows = [dict(zip(keys, k, strict=True)) | dict(zip(names, v, strict=True))
                for k, v in sums.items()]  # fmt: skip
        dialect = connection.dialect.name
        insert: Any = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(
            usage_hourly
        )
        connection.execute(
            insert.on_conflict_do_update(
                index_elements=list(keys),
                set_={n: usage_hourly.c[n] + insert.excluded[n] for n in names},
            ),
            rows,
        )


def quantile(counts: list[int], share: float) -> float | None:
    """The ``share`` quantile of values counted in LATENCY_BUCKETS_MS's buckets, linear
    within its bucket; None without values. In the last, unbounded bucket: its lower edge."""
    total = sum(counts)
    if not total:
        return None
    wanted = share * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= wanted:
            low = LATENCY_BUCKETS_MS[index - 1] if index else 0.0
            if index >= len(LATENCY_BUCKETS_MS):
                return float(low)
            high = LATENCY_BUCKETS_MS[index]
            return float(low + (high - low) * (wanted - seen) / count)
        seen += count
    return float(LATENCY_BUCKETS_MS[-1])
