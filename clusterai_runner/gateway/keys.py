"""API keys, per-key limits and usage records, for the gateway.

Keys look like ``cai_<prefix>_<secret>``; the store keeps the prefix (to find the key and
to name it in listings) and the SHA-256 of the whole key, never the key. The gateway holds
the live keys in memory, reloaded from the store every ``refresh_s``, so a request never
waits on the database; usage records go to the store in batches from a background task.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from clusterai_runner.store import ApiKey, Store

log = logging.getLogger("clusterai.gateway")


def new_key() -> tuple[str, str, str]:
    """A fresh key: (the key, its prefix, its SHA-256)."""
    prefix = secrets.token_hex(4)
    key = f"cai_{prefix}_{secrets.token_urlsafe(32)}"
    return key, prefix, digest(key)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(
    store: Store, name: str, admin: bool = False, rpm: int | None = None, tpm: int | None = None
) -> str:
    key, prefix, hashed = new_key()
    store.add_key(name, prefix, hashed, admin, rpm, tpm)
    return key


KEY_FORMAT = re.compile(r"cai_([0-9a-f]{8})_[A-Za-z0-9_-]{32,}")
NAME_FORMAT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def sync_keys(store: Store, entries: list[dict[str, Any]]) -> list[str]:
    """Make the store hold these keys (``state: present``, the default) and revoke those
    marked ``state: absent``. Returns what changed, by name; the keys never appear in it
    or in an error. Checks every entry before changing anything."""
    wanted: list[tuple[str, dict[str, Any]]] = []
    for number, entry in enumerate(entries, start=1):
        where = f"key {entry.get('name')!r}" if isinstance(entry, dict) else f"entry {number}"
        if not isinstance(entry, dict) or not NAME_FORMAT.fullmatch(str(entry.get("name", ""))):
            raise ValueError(f"{where}: needs a name of letters, digits, . _ -")
        unknown = set(entry) - {"name", "key", "state", "admin", "rpm", "tpm"}
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        state = entry.get("state", "present")
        if state not in ("present", "absent"):
            raise ValueError(f"{where}: state is {state!r}; use present or absent")
        if state == "present" and not KEY_FORMAT.fullmatch(str(entry.get("key", ""))):
            raise ValueError(
                f"{where}: the key is missing or not in the form cai_<8 hex>_<32+ characters>"
                " (make one with `clusterai gateway keys generate`)"
            )
        for limit in ("rpm", "tpm"):
            value = entry.get(limit)
            if value is not None and (type(value) is not int or value < 1):
                raise ValueError(f"{where}: {limit} must be a whole number of at least 1")
        if not isinstance(entry.get("admin", False), bool):
            raise ValueError(f"{where}: admin must be true or false")
        wanted.append((state, entry))
    names = [e["name"] for _, e in wanted]
    if len(set(names)) != len(names):
        raise ValueError("a key name appears twice")
    present = {e["name"]: e["key"].split("_")[1] for s, e in wanted if s == "present"}
    if len(set(present.values())) != len(present):
        raise ValueError("two keys share a prefix (the 8 hex digits after cai_)")
    owners = {k.prefix: k.name for k in store.list_keys()}
    for name, prefix in present.items():
        if owners.get(prefix, name) != name:
            raise ValueError(f"key {name!r}: its prefix is already used by key {owners[prefix]!r}")
    changed = []
    for state, entry in wanted:
        name = entry["name"]
        if state == "absent":
            if store.revoke_key(name):
                changed.append(f"revoked {name}")
            continue
        limits = bool(entry.get("admin", False)), entry.get("rpm"), entry.get("tpm")
        if store.put_key(name, present[name], digest(entry["key"]), *limits):
            changed.append(f"set {name}")
    return changed


class KeyRing:
    """The live keys, by prefix."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.by_prefix: dict[str, ApiKey] = {}

    async def reload(self) -> None:
        keys = await asyncio.to_thread(self.store.list_keys, False)
        self.by_prefix = {k.prefix: k for k in keys}

    def find(self, given: str) -> ApiKey | None:
        parts = given.split("_")
        if len(parts) < 3 or parts[0] != "cai":
            return None
        key = self.by_prefix.get(parts[1])
        if key is None or not hmac.compare_digest(key.hash, digest(given)):
            return None
        return key

    async def watch(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.reload()
            except Exception:  # keep serving with the keys loaded last
                log.exception("reloading the API keys failed")


@dataclass
class Window:
    """What one key did in the last minute."""

    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)

    def trim(self, now: float) -> None:
        while self.requests and self.requests[0] <= now - 60:
            self.requests.popleft()
        while self.tokens and self.tokens[0][0] <= now - 60:
            self.tokens.popleft()


class Limiter:
    """Requests and tokens per minute, per key, over a sliding minute."""

    def __init__(self) -> None:
        self.windows: dict[int, Window] = {}

    def admit(self, key: ApiKey) -> str | None:
        """None when the key may send a request now, else which limit it reached."""
        now = time.monotonic()
        window = self.windows.setdefault(key.id, Window())
        window.trim(now)
        if key.rpm is not None and len(window.requests) >= key.rpm:
            return f"{key.rpm} requests per minute"
        if key.tpm is not None and sum(n for _, n in window.tokens) >= key.tpm:
            return f"{key.tpm} tokens per minute"
        window.requests.append(now)
        return None

    def spent(self, key: ApiKey, tokens: int) -> None:
        if tokens:
            self.windows.setdefault(key.id, Window()).tokens.append((time.monotonic(), tokens))


class UsageWriter:
    """Usage records, written to the store in batches off the request path."""

    def __init__(self, store: Store, every: float = 1.0, batch: int = 500) -> None:
        self.store, self.every, self.batch = store, every, batch
        self.pending: list[dict[str, Any]] = []
        self.written = 0

    def add(self, record: dict[str, Any]) -> None:
        record.setdefault("at", datetime.now(UTC).isoformat(timespec="milliseconds"))
        self.pending.append(record)

    async def flush(self) -> None:
        while self.pending:
            taken, self.pending = self.pending[: self.batch], self.pending[self.batch :]
            try:
                await asyncio.to_thread(self.store.add_usage, taken)
                self.written += len(taken)
            except Exception:
                log.exception("writing %d usage records failed; they are dropped", len(taken))

    async def run(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(self.every)
                await self.flush()
        await self.flush()


def tokens_of(answer: dict[str, Any]) -> tuple[int, int]:
    """(prompt, completion) tokens from an OpenAI or Ollama answer or last stream chunk."""
    usage = answer.get("usage")
    if isinstance(usage, dict):
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return int(answer.get("prompt_eval_count") or 0), int(answer.get("eval_count") or 0)


Clock = Callable[[], float]
