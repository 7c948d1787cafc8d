"""The answer cache: deterministic requests answered again without a backend.

A request is deterministic when it asks for ``temperature`` 0 (Ollama: in ``options``)
or a fixed ``seed``. Its key is the SHA-256 of the route, the backend models its model
name stands for (an alias and its target share answers) and the rest of the body as
canonical JSON (key order and whitespace do not matter). The value is the answer's bytes
as the caller got them, streamed or not: a cached stream is replayed as a stream. Only
complete 200 answers are kept, for ``ttl_s`` seconds, at most ``max_entries`` of them.
A caller opts out with ``Cache-Control: no-cache`` (or ``no-store``).

SQLite (WAL) by default: a file several gateway processes on one host can share. With
``cache.redis_url``, Redis instead, so gateway replicas on several hosts share answers;
entries expire after ``ttl_s`` there too, and Redis's own memory policy bounds their number.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("clusterai.gateway")


@dataclass(frozen=True)
class Cached:
    content_type: str
    body: bytes


def deterministic(body: dict[str, Any]) -> bool:
    options = body.get("options") if isinstance(body.get("options"), dict) else {}
    assert isinstance(options, dict)
    for source in (body, options):
        if source.get("temperature") == 0 and not isinstance(source.get("temperature"), bool):
            return True
        seed = source.get("seed")
        if isinstance(seed, int) and not isinstance(seed, bool):
            return True
    return False


def cache_key(route: str, models: list[str], body: dict[str, Any]) -> str:
    rest = {k: v for k, v in body.items() if k not in ("model", "stream_options")}
    rest.setdefault("stream", route.startswith("/api/") and route != "/api/embed")
    canonical = json.dumps(
        {"route": route, "models": models, "body": rest},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class RedisCache:
    """The same cache in Redis (``redis://host:port/db``)."""

    PREFIX = "clusterai:answer:"

    def __init__(self, url: str, ttl_s: float) -> None:
        import redis

        self.ttl_ms = max(1, int(ttl_s * 1000))
        self._redis = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._errors = (redis.RedisError,)
        self.hits = self.misses = 0

    def get(self, key: str) -> Cached | None:
        found: list[Any] = [None, None]
        with contextlib.suppress(*self._errors):  # an unreachable cache is a miss
            found = list(self._redis.hmget(self.PREFIX + key, ["type", "body"]))
        kind, body = found
        if not isinstance(kind, bytes) or not isinstance(body, bytes):
            self.misses += 1
            return None
        self.hits += 1
        return Cached(kind.decode(), body)

    def put(self, key: str, content_type: str, body: bytes) -> None:
        name = self.PREFIX + key
        try:
            with self._redis.pipeline() as pipe:
                pipe.hset(name, mapping={"type": content_type, "body": body})
                pipe.pexpire(name, self.ttl_ms)
                pipe.execute()
        except self._errors:
            log.warning("the Redis cache is unreachable; the answer is not kept")

    def close(self) -> None:
        self._redis.close()


class AnswerCache:
    def __init__(self, path: Path | str, ttl_s: float, max_entries: int) -> None:
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=2000")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, expires REAL NOT NULL,"
            " content_type TEXT NOT NULL, body BLOB NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS answers_expires ON answers (expires)")
        self.hits = self.misses = 0

    def get(self, key: str) -> Cached | None:
        row = self._db.execute(
            "SELECT content_type, body FROM answers WHERE key = ? AND expires > ?",
            (key, time.time()),
        ).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return Cached(str(row[0]), bytes(row[1]))

    def put(self, key: str, content_type: str, body: bytes) -> None:
        now = time.time()
        self._db.execute(
            "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)",
            (key, now + self.ttl_s, content_type, body),
        )
        self._db.execute("DELETE FROM answers WHERE expires <= ?", (now,))
        self._db.execute(
            "DELETE FROM answers WHERE key IN (SELECT key FROM answers ORDER BY expires DESC"
            " LIMIT -1 OFFSET ?)",
            (self.max_entries,),
        )

    def close(self) -> None:
        self._db.close()
