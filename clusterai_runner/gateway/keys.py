"""API keys and usage records, for the gateway (per-key limits: limits.py).

Keys look like ``cai_<prefix>_<secret>``; the store keeps the prefix (to find the key and
to name it in listings) and the SHA-256 of the whole key, never the key. The gateway holds
the live keys in memory, reloaded from the store every ``refresh_s``, so a request never
waits on the database; usage records are spooled to local disk as each request ends and
go to the store in batches from a background task.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
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
    store: Store,
    name: str,
    admin: bool = False,
    rpm: int | None = None,
    tpm: int | None = None,
    tenant: bool = False,
) -> str:
    key, prefix, hashed = new_key()
    store.add_key(name, prefix, hashed, admin, rpm, tpm, tenant)
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
        unknown = set(entry) - {"name", "key", "state", "admin", "rpm", "tpm", "tenant"}
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
        for flag in ("admin", "tenant"):
            if not isinstance(entry.get(flag, False), bool):
                raise ValueError(f"{where}: {flag} must be true or false")
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
        tenant = bool(entry.get("tenant", False))
        if store.put_key(name, present[name], digest(entry["key"]), *limits, tenant):
            changed.append(f"set {name}")
    return changed


class KeyRing:
    """The live keys, by prefix, reloaded from the store every ``refresh_s`` (a revoked key
    stops working within that time). Keys that could not be reloaded for ``max_stale_s``
    are not trusted any more: ``stale`` says so, and the gateway refuses with 503 (failing
    closed) until a reload succeeds."""

    def __init__(self, store: Store, max_stale_s: float = float("inf")) -> None:
        self.store = store
        self.max_stale_s = max_stale_s
        self.by_prefix: dict[str, ApiKey] = {}
        self.loaded_at: float | None = None

    async def reload(self) -> None:
        keys = await asyncio.to_thread(self.store.list_keys, False)
        self.by_prefix = {k.prefix: k for k in keys}
        self.loaded_at = time.monotonic()

    def stale(self) -> bool:
        return self.loaded_at is None or time.monotonic() - self.loaded_at > self.max_stale_s

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
            except Exception as exc:  # serve with the keys loaded last, until max_stale_s
                log.warning(
                    "reloading the API keys failed (%s); %s",
                    " ".join(str(exc).split())[:300],
                    "refusing requests until a reload succeeds"
                    if self.stale()
                    else "using the keys loaded last",
                )


class UsageWriter:
    """Usage records, each on local disk as its request ends and in the store soon after.

    ``add`` appends the record as one JSON line to the spool's open file (a ``write(2)``
    to the page cache, which a ``kill -9`` of the gateway does not undo). Every ``every``
    seconds a background task seals that file and moves the sealed files' records to the
    store in batches; a file is removed only once the store holds its records, so a failed
    write (a locked or unreachable store) is retried on the next round, never dropped. At
    start, what an earlier process left is sent first; each record carries an id, and the
    store skips ids it already holds, so a crash between storing and removing stores
    nothing twice. Records in flight (requests not yet answered) are all a crash loses.
    One thread at a time moves files: a stop that cancels the task mid-write leaves that
    write's thread running, and the last flush waits for it rather than sending the same
    file beside it (the store's unique record ids would refuse the second copy).
    """

    CURRENT = "current.jsonl"

    def __init__(self, store: Store, spool: Path, every: float = 1.0, batch: int = 500) -> None:
        self.store, self.spool, self.every, self.batch = store, spool, every, batch
        self.written = 0
        self.failing = False
        self._moving = threading.Lock()
        spool.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._seal()  # a file a killed gateway was writing
        self._file = self._open()

    def _open(self) -> int:
        return os.open(
            self.spool / self.CURRENT, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
        )

    def _seal(self) -> None:
        current = self.spool / self.CURRENT
        with contextlib.suppress(FileNotFoundError):
            if current.stat().st_size:
                current.rename(self.spool / f"sealed-{time.time_ns():020d}.jsonl")

    def add(self, record: dict[str, Any]) -> None:
        record.setdefault("at", datetime.now(UTC).isoformat(timespec="milliseconds"))
        record["record_id"] = uuid.uuid4().hex
        os.write(self._file, json.dumps(record, separators=(",", ":")).encode() + b"\n")

    def pending(self) -> int:
        """Records in the spool that the store does not hold yet (reads the files)."""
        return sum(len(self._read(f)) for f in self._files(with_current=True))

    def _files(self, with_current: bool = False) -> list[Path]:
        sealed = sorted(self.spool.glob("sealed-*.jsonl"))
        return [*sealed, self.spool / self.CURRENT] if with_current else sealed

    def _read(self, path: Path) -> list[dict[str, Any]]:
        records = []
        try:
            lines = path.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        for number, line in enumerate(lines, start=1):
            try:
                records.append(json.loads(line))
            except ValueError:  # a line cut by a full disk or a power loss
                log.warning("usage spool %s:%d is not a record; it is skipped", path, number)
        return records

    def _move_sealed(self) -> None:
        """Store every sealed file's records, oldest first, and count them; or say once
        that the store refuses them (they stay, for the next round). A thread's work."""
        with self._moving:
            try:
                for path in self._files():
                    records = self._read(path)
                    for first in range(0, len(records), self.batch):
                        self.store.add_usage(records[first : first + self.batch])
                    path.unlink(missing_ok=True)
                    self.written += len(records)
            except Exception as exc:
                if not self.failing:
                    log.warning(
                        "writing usage records to the store failed (%s); they stay in %s and"
                        " are retried every %s s",
                        " ".join(str(exc).split())[:300], self.spool, self.every,
                    )  # fmt: skip
                self.failing = True
                return
            if self.failing:
                log.info("usage records reach the store again")
            self.failing = False

    def _seal_current(self) -> None:
        if os.fstat(self._file).st_size:
            os.close(self._file)
            self._seal()
            self._file = self._open()

    async def flush(self) -> None:
        self._seal_current()
        await asyncio.to_thread(self._move_sealed)

    def close(self) -> None:
        """The last flush, on the calling thread (so no second cancel cuts it short):
        it waits for a write already under way, then stores what is left. Records the
        store refuses stay in the spool for the next start."""
        self._seal_current()
        os.close(self._file)
        self._move_sealed()

    async def run(self) -> None:
        try:
            while True:
                await self.flush()
                await asyncio.sleep(self.every)
        finally:
            self.close()


def tokens_of(answer: dict[str, Any]) -> tuple[int, int]:
    """(prompt, completion) tokens from an OpenAI or Ollama answer or last stream chunk."""
    usage = answer.get("usage")
    if isinstance(usage, dict):
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return int(answer.get("prompt_eval_count") or 0), int(answer.get("eval_count") or 0)


Clock = Callable[[], float]
