"""The answer cache: deterministic requests answered again without a backend.

A request is deterministic when it asks for ``temperature`` 0 (Ollama: in ``options``)
or a fixed ``seed``. Its key is the SHA-256 of the route, the backend models its model
name stands for (an alias and its target share answers; each with its content digest
where the gateway knows it, so a new version of a model misses) and the rest of the body
as canonical JSON (key order and whitespace do not matter). The value is the answer's
bytes as the caller got them, streamed or not: a cached stream is replayed as a stream. Only
complete 200 answers are kept, for ``ttl_s`` seconds, at most ``max_entries`` of them.
A caller opts out with ``Cache-Control: no-cache`` (or ``no-store``).

SQLite (WAL) by default: a file several gateway processes on one host can share. With
``cache.redis_url``, Redis instead, so gateway replicas on several hosts share answers;
entries expire after ``ttl_s`` there too, and Redis's own memory policy bounds their number.

Nothing here blocks the event loop: SQLite runs on one worker thread of its own, Redis
through its asyncio client with short timeouts. An unreachable Redis makes misses, never
errors, and is left alone for ``RETRY_S`` after a failure (one request then tries again),
so an outage costs requests no time waiting on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterai_runner.gateway.semantic import nearest

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


def cache_key(route: str, models: list[str], body: dict[str, Any], scope: str = "") -> str:
    """The answer's key: the route, the backend models (with their content digests:
    ``Pool.versions``), the canonical body (``stream_options`` too: a stream with its
    token counts is another answer) and the scope (who may share it: "" for everyone,
    or one key's or tenant's name)."""
    rest = {k: v for k, v in body.items() if k != "model"}
    rest.setdefault("stream", route.startswith("/api/") and not route.startswith("/api/embed"))
    canonical = json.dumps(
        {"route": route, "models": models, "body": rest, "scope": scope},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class RedisCache:
    """The same cache in Redis (``redis://host:port/db``), through redis's asyncio client."""

    PREFIX = "clusterai:answer:"
    SEMANTIC = "clusterai:semantic:"
    # How long a failed Redis is skipped before one request tries it again.
    RETRY_S = 5.0
    TIMEOUT_S = 0.5

    def __init__(self, url: str, ttl_s: float) -> None:
        import redis
        import redis.asyncio

        self.ttl_ms = max(1, int(ttl_s * 1000))
        self._redis = redis.asyncio.Redis.from_url(
            url, socket_timeout=self.TIMEOUT_S, socket_connect_timeout=self.TIMEOUT_S
        )
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError, TimeoutError)
        self._down_until = 0.0
        self.hits = self.misses = 0

    def _usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, doing: str) -> None:
        if self._usable():
            log.warning(
                "the Redis cache is unreachable (%s); retrying in %.0f s", doing, self.RETRY_S
            )
        self._down_until = time.monotonic() + self.RETRY_S

    async def get(self, key: str) -> Cached | None:
        found: list[Any] = [None, None]
        if self._usable():
            try:
                found = list(await self._redis.hmget(self.PREFIX + key, ["type", "body"]))
            except self._errors:
                self._failed("reading")
        kind, body = found
        if not isinstance(kind, bytes) or not isinstance(body, bytes):
            self.misses += 1
            return None
        self.hits += 1
        return Cached(kind.decode(), body)

    async def put(self, key: str, content_type: str, body: bytes) -> None:
        if not self._usable():
            return
        name = self.PREFIX + key
        try:
            async with self._redis.pipeline() as pipe:
                pipe.hset(name, mapping={"type": content_type, "body": body})
                pipe.pexpire(name, self.ttl_ms)
                await pipe.execute()
        except self._errors:
            self._failed("writing")

    async def near(self, params: str, probe: bytes) -> tuple[str, float] | None:
        if not self._usable():
            return None
        try:
            vectors = await self._redis.hgetall(f"{self.SEMANTIC}{params}:vectors")
        except self._errors:
            self._failed("reading")
            return None
        kept = [(k.decode(), v) for k, v in vectors.items() if isinstance(k, bytes)
                and isinstance(v, bytes)]  # fmt: skip
        return await asyncio.to_thread(nearest, probe, kept)

    async def remember(self, params: str, key: str, vector: bytes, limit: int) -> None:
        if not self._usable():
            return
        order, vectors = f"{self.SEMANTIC}{params}:order", f"{self.SEMANTIC}{params}:vectors"
        try:
            async with self._redis.pipeline() as pipe:
                pipe.zadd(order, {key: time.time()})
                pipe.hset(vectors, key, vector)
                pipe.zrange(order, 0, -limit - 1)  # the oldest beyond the limit
                for name in (order, vectors):
                    pipe.pexpire(name, self.ttl_ms)
                done = await pipe.execute()
            old = [k.decode() for k in done[2]]
            if old:
                async with self._redis.pipeline() as pipe:
                    pipe.zrem(order, *old)
                    pipe.hdel(vectors, *old)
                    await pipe.execute()
        except self._errors:
            self._failed("writing")

    async def close(self) -> None:
        await self._redis.aclose()


class AnswerCache:
    """SQLite, on one worker thread: the event loop never waits on the file."""

    def __init__(self, path: Path | str, ttl_s: float, max_entries: int) -> None:
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="answer-cache")
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=2000")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, expires REAL NOT NULL,"
            " content_type TEXT NOT NULL, body BLOB NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS answers_expires ON answers (expires)")
        # The semantic layer's vectors (semantic.py), by model and parameters.
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS semantic (params TEXT NOT NULL, at REAL NOT NULL,"
            " answer TEXT NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (params, answer))"
        )
        self.hits = self.misses = 0

    async def get(self, key: str) -> Cached | None:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._get, key)

    async def put(self, key: str, content_type: str, body: bytes) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._put, key, content_type, body)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._db.close)
        self._thread.shutdown()

    async def near(self, params: str, probe: bytes) -> tuple[str, float] | None:
        """The kept answer whose prompt is nearest ``probe`` among ``params``'s, and how near."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._near, params, probe)

    async def remember(self, params: str, key: str, vector: bytes, limit: int) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._remember, params, key, vector, limit)

    def _near(self, params: str, probe: bytes) -> tuple[str, float] | None:
        try:
            rows = self._db.execute(
                "SELECT answer, vector FROM semantic WHERE params = ?", (params,)
            ).fetchall()
        except sqlite3.Error as exc:
            log.warning("the semantic cache could not be read: %s", exc)
            return None
        return nearest(probe, [(str(a), bytes(v)) for a, v in rows])

    def _remember(self, params: str, key: str, vector: bytes, limit: int) -> None:
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO semantic VALUES (?, ?, ?, ?)",
                (params, time.time(), key, vector),
            )
            self._db.execute(
                "DELETE FROM semantic WHERE params = ? AND answer IN (SELECT answer FROM"
                " semantic WHERE params = ? ORDER BY at DESC LIMIT -1 OFFSET ?)",
                (params, params, limit),
            )
            self._db.execute("DELETE FROM semantic WHERE at <= ?", (time.time() - self.ttl_s,))
        except sqlite3.Error as exc:
            log.warning("the semantic cache could not be written: %s", exc)

    def _get(self, key: str) -> Cached | None:
        try:
            row = self._db.execute(
                "SELECT content_type, body FROM answers WHERE key = ? AND expires > ?",
                (key, time.time()),
            ).fetchone()
        except sqlite3.Error as exc:  # a locked or damaged file is a miss
            log.warning("the answer cache could not be read: %s", exc)
            row = None
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return Cached(str(row[0]), bytes(row[1]))

    def _put(self, key: str, content_type: str, body: bytes) -> None:
        now = time.time()
        try:
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
        except sqlite3.Error as exc:
            log.warning("the answer cache could not be written: %s", exc)
