"""The backends behind the gateway and the choice of one for each request.

A backend can take a request when it is healthy, not draining, has the model and is below
its concurrency limit. Among those the gateway prefers one that already holds the model in
memory (Ollama's ``/api/ps``; a llama.cpp server holds its one model), then the one with
the fewest requests outstanding for its size. When none can take it, the request waits in
a bounded queue; a full queue, or a wait past the timeout, is a 429. Fallback backends
(hosted providers) are used only when no other backend has the model or capacity, the
first one listed first.

Affinity: the turns of one conversation (the same system prompt and first user message)
go to the backend that served its earlier turns when it is as free as any other, so the
server reuses the prompt it already processed (llama.cpp's server keeps the last prompt's
tokens and evaluates only what follows the common prefix; Ollama likewise). Only as a
tie-break: a llama.cpp server answers one request at a time, and waiting behind another
costs more than processing the prompt again.

Waking: a standby backend (a worker the autoscaler parked) is never sent a request nor
probed, but the models it lists are known. A request for a model that only standby
backends serve waits in the queue like any other, up to its timeout, and is counted as
``wanted``: the autoscaler reads that (``/admin/backends``) and starts a worker; once it
is back (a reload makes it a backend like the others, a probe finds it healthy) the
request goes there. A wait past the timeout is a 503 with ``Retry-After``.

Health means "a request sent here would succeed": a backend is ejected after
``eject_after`` failures in a row, whether its model list failed to come or requests got
5xx answers fast, and it returns after its next good probe. A probe that times out while
the backend has requests in flight, or has just answered one well, counts for nothing:
it is busy, not sick.

What a request asks for (chat, completions or embeddings: its capability; a stream's
token counts, ``stream_usage``, when the client asks for them) is not held
against the backend's health when the backend may not have it: a backend whose
configuration lists its capabilities is sent nothing else (a request no backend can serve
is a 400 naming the model and the capability), and one that lists none, answering a
capability it has never served with 5xx ``eject_after`` times in a row, is not sent that
capability for ``CAPABILITY_RETRY_S`` while its other requests go on. So a client that
asks for embeddings over and over cannot eject a backend that serves chat.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from clusterai_runner.gateway.config import CAPABILITIES, BackendConfig, GatewayConfig


class NoSuchModel(Exception):
    """No backend serves this model (404)."""


class Busy(Exception):
    """Every backend with the model is at its limit and the queue is full or timed out (429)."""


class NoBackend(Exception):
    """Backends serve the model but none of them is healthy (503)."""


class Incapable(Exception):
    """Backends serve the model, but none of them what the request asks for (400)."""


class Waking(Exception):
    """Only parked workers serve the model and none was started within the queue's
    timeout (503 with Retry-After)."""


# Request routes and the capability each asks of a backend.
CAPABILITY = {
    "/v1/chat/completions": "chat", "/api/chat": "chat",
    "/v1/completions": "completions", "/api/generate": "completions",
    "/v1/embeddings": "embeddings", "/api/embed": "embeddings", "/api/embeddings": "embeddings",
}  # fmt: skip
# How long a backend that failed a capability it never served is not sent that capability.
CAPABILITY_RETRY_S = 300.0


@dataclass
class Backend:
    config: BackendConfig
    models: set[str] = field(default_factory=set)
    loaded: set[str] = field(default_factory=set)
    # An Ollama backend's /api/ps entries by model (size, size_vram, digest, details, ...).
    running: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Content digests by model, from Ollama's /api/tags (else the configuration's).
    digests: dict[str, str] = field(default_factory=dict)
    outstanding: int = 0
    healthy: bool = False
    failures: int = 0  # in a row
    draining: bool = False
    requests: int = 0
    last_error: str = ""
    probed_at: float = 0.0
    succeeded_at: float = 0.0  # when a request last got a good answer here
    served: set[str] = field(default_factory=set)  # capabilities it answered with 2xx
    refused: dict[str, int] = field(default_factory=dict)  # capability: 5xx answers in a row
    off_until: dict[str, float] = field(default_factory=dict)  # capability: tried again then
    # Its own connection pool: closing it after a drain, or when the backend is removed,
    # leaves the server with no idle connection from the gateway.
    session: aiohttp.ClientSession | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.config.standby:  # what it would serve; it is never probed
            self.models = set(self.config.models)

    @property
    def name(self) -> str:
        return self.config.name

    def digest(self, model: str) -> str | None:
        """The content digest of the model it serves under this name, when known."""
        return self.digests.get(model) or dict(self.config.digests).get(model)

    def can(self, capability: str) -> bool:
        """Whether requests of this capability may be sent here now."""
        declared = self.config.capabilities
        if declared is not None:
            return capability in declared
        return self.off_until.get(capability, 0.0) <= time.monotonic()

    def can_all(self, needs: Sequence[str]) -> bool:
        return all(self.can(c) for c in needs)

    def client(self) -> aiohttp.ClientSession:
        """The backend's connection pool, opened on first use (inside the event loop)."""
        if self.session is None or self.session.closed:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=600)
            self.session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return self.session

    async def close(self) -> None:
        """Close the pool and its idle connections; the next use opens a new one."""
        session, self.session = self.session, None
        if session is not None:
            await session.close()

    def headers(self) -> dict[str, str]:
        key = self.config.api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.config.url,
            "api": self.config.api,
            "healthy": self.healthy,
            "draining": self.draining,
            "outstanding": self.outstanding,
            "max_concurrency": self.config.max_concurrency,
            "models": sorted(self.models),
            "loaded": sorted(self.loaded),
            "requests": self.requests,
            "failures": self.failures,
            "last_error": self.last_error,
            "fallback": self.config.fallback,
            "standby": self.config.standby,
            "capabilities": [c for c in CAPABILITIES if self.can(c)],
        }


class Affinity:
    """Which backend served each conversation last (by its key), for ``ttl_s`` seconds
    after its last turn, at most ``MAX`` conversations (the oldest forgotten first). A
    ``ttl_s`` of 0 keeps none: every turn goes where the load says."""

    MAX = 100_000

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self.backends: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def get(self, key: str | None) -> str | None:
        found = self.backends.get(key) if key is not None else None
        if found is None or found[1] < time.monotonic() - self.ttl_s:
            return None
        return found[0]

    def put(self, key: str | None, backend: str) -> None:
        if key is None or self.ttl_s <= 0:
            return
        self.backends[key] = (backend, time.monotonic())
        self.backends.move_to_end(key)
        while len(self.backends) > self.MAX:
            self.backends.popitem(last=False)


@dataclass(frozen=True)
class Lease:
    """A backend taken for one request, and the backend's own name for the model."""

    backend: Backend
    model: str


# How many waits at most are kept for the queue wait's p95 (over config.wait_window_s).
WAIT_SAMPLES = 10_000


class Pool:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.backends = [Backend(b) for b in config.backends]
        self.waiting = 0
        # (when, seconds waited) of each request given a backend or turned away, newest last.
        self.waits: deque[tuple[float, float]] = deque(maxlen=WAIT_SAMPLES)
        # Models only standby backends serve: requests waiting for one now, and when one
        # last came.
        self.waking: dict[str, int] = {}
        self.wanted_at: dict[str, float] = {}
        self._changed = asyncio.Condition()
        self._retiring: set[asyncio.Task[None]] = set()
        self.affinity = Affinity(config.affinity_ttl_s if config.affinity else 0.0)

    # --- Models ------------------------------------------------------------------------

    def backend_models(self, model: str) -> list[str]:
        """The backend model names a public name stands for."""
        return list(self.config.aliases.get(model, (model,)))

    def versions(self, model: str) -> list[str]:
        """What ``model`` is now: each backend model it stands for, with each content digest
        the backends that list it know (``name@digest``; the bare name where none is
        known). Part of the answer cache's keys: a new digest is a new model."""
        found: set[str] = set()
        for name in self.backend_models(model):
            listed = [b for b in self.backends if not b.config.standby and name in b.models]
            digests = {d for d in (b.digest(name) for b in listed) if d}
            found |= {f"{name}@{d}" for d in digests} or {name}
        return sorted(found)

    def public_models(self) -> list[str]:
        names = {m for b in self.backends for m in b.models} | set(self.config.aliases)
        return sorted(names)

    def backend(self, name: str) -> Backend | None:
        return next((b for b in self.backends if b.name == name), None)

    # --- Choosing ------------------------------------------------------------------------

    def _candidates(
        self, model: str, exclude: Iterable[str], needs: Sequence[str] = ()
    ) -> list[Lease]:
        wanted = self.backend_models(model)
        skipped = set(exclude)
        found = []
        for backend in self.backends:
            if backend.name in skipped or backend.config.standby or not backend.can_all(needs):
                continue
            for name in wanted:
                if name in backend.models:
                    found.append(Lease(backend, name))
                    break
        return found

    def listing(self, model: str) -> list[Lease]:
        """Each backend that lists ``model`` (standby ones left out), with the name it
        knows it by."""
        return self._candidates(model, ())

    def capabilities(self, model: str) -> set[str]:
        """What the backends that list ``model``, standby ones included, may be sent for
        it: their declared capabilities, or for one that declares none chat and
        completions unless it refused them lately, and embeddings once it answered one."""
        found: set[str] = set()
        wanted = set(self.backend_models(model))
        for backend in self.backends:
            listed = backend.config.models if backend.config.standby else backend.models
            if not wanted & set(listed):
                continue
            if backend.config.capabilities is not None:
                found |= set(backend.config.capabilities)
            else:
                found |= {c for c in ("chat", "completions") if backend.can(c)}
                found |= backend.served & {"embeddings"}
        return found

    def capable(self, model: str, needs: Sequence[str]) -> bool:
        """Whether a backend that lists ``model``, standby ones included, may be sent each
        of ``needs``."""
        return bool(self._candidates(model, (), needs) or self._standby(model, needs))

    def serves(self, model: str) -> bool:
        """Whether any backend, healthy, standby or not, lists ``model`` (or what it
        stands for)."""
        return self.capable(model, ())

    def _standby(self, model: str, needs: Sequence[str]) -> list[Backend]:
        wanted = set(self.backend_models(model))
        return [
            b
            for b in self.backends
            if b.config.standby and b.can_all(needs) and wanted & set(b.config.models)
        ]

    def wanted(self) -> dict[str, int]:
        """Models asked for in the queue's wait window (``wait_window_s``) that only standby
        backends serve now, with the requests waiting for each: what the autoscaler wakes."""
        since = time.monotonic() - self.config.wait_window_s
        found = {}
        for model, at in self.wanted_at.items():
            if at < since and not self.waking.get(model):
                continue
            serving = [c for c in self._candidates(model, ()) if c.backend.healthy]
            if not serving and self._standby(model, ()):
                found[model] = self.waking.get(model, 0)
        return found

    def _pick(self, candidates: list[Lease], prefer: str | None = None) -> Lease | None:
        free = [
            c
            for c in candidates
            if c.backend.healthy
            and not c.backend.draining
            and c.backend.outstanding < c.backend.config.max_concurrency
        ]
        if not free:
            return None

        def preference(lease: Lease) -> tuple[bool, int, bool, float, bool, int]:
            b = lease.backend
            return (
                b.config.fallback,
                self.backends.index(b) if b.config.fallback else 0,  # fallbacks in order
                lease.model not in b.loaded,
                b.outstanding / b.config.max_concurrency,
                b.name != prefer,  # the conversation's backend, when it is as free as any
                b.outstanding,
            )

        return min(free, key=preference)

    async def acquire(
        self,
        model: str,
        exclude: Iterable[str] = (),
        needs: Sequence[str] = (),
        conversation: str | None = None,
    ) -> Lease:
        """A backend for ``model`` that may be sent each of ``needs`` (capabilities),
        waiting in the queue when all are busy. A ``conversation`` (its key) goes back to
        the backend that served its earlier turns when that one is as free as any."""
        excluded = list(exclude)
        if not self.serves(model):
            raise NoSuchModel(model)
        if not self.capable(model, needs):
            raise Incapable(model)
        started = time.monotonic()
        deadline = started + self.config.queue_timeout_s
        waking = False
        async with self._changed:
            while True:
                candidates = self._candidates(model, excluded, needs)
                lease = self._pick(candidates, self.affinity.get(conversation))
                if lease is not None:
                    lease.backend.outstanding += 1
                    lease.backend.requests += 1
                    self._waited(started)
                    self.affinity.put(conversation, lease.backend.name)
                    return lease
                usable = [c for c in candidates if c.backend.healthy and not c.backend.draining]
                # Parked workers only, or (for a request that waited for them) a worker
                # a reload just put back, not probed yet: wait for it rather than fail.
                back = waking and any(
                    b.probed_at == 0 and not b.config.standby for b in self.backends
                )
                waking = not usable and (back or bool(self._standby(model, needs)))
                if not usable and not waking:
                    raise NoBackend(model)
                full = Waking(model) if waking else Busy(model)
                remaining = deadline - time.monotonic()
                if self.waiting >= self.config.queue_size or remaining <= 0:
                    self._waited(started)
                    raise full
                self.waiting += 1
                if waking:
                    self.waking[model] = self.waking.get(model, 0) + 1
                    self.wanted_at[model] = time.monotonic()
                try:
                    await asyncio.wait_for(self._changed.wait(), remaining)
                except TimeoutError:
                    self._waited(started)
                    raise full from None
                finally:
                    self.waiting -= 1
                    if waking:
                        self.waking[model] -= 1

    def _waited(self, started: float) -> None:
        now = time.monotonic()
        self.waits.append((now, now - started))

    def queue_wait(self, quantile: float = 0.95) -> tuple[float, int]:
        """The ``quantile`` of the time requests of the last ``wait_window_s`` seconds
        waited for a backend (0 when none came), and how many came."""
        since = time.monotonic() - self.config.wait_window_s
        while self.waits and self.waits[0][0] < since:
            self.waits.popleft()
        if not self.waits:
            return 0.0, 0
        ordered = sorted(w for _, w in self.waits)
        rank = max(math.ceil(quantile * len(ordered)) - 1, 0)
        return ordered[rank], len(ordered)

    async def release(
        self, lease: Lease, status: int | None, error: str = "", capability: str | None = None
    ) -> None:
        """Give the backend back with how its request ended: the HTTP status of its answer,
        or None when it failed without one (a refused connection, a stream cut)."""
        backend = lease.backend
        async with self._changed:
            backend.outstanding -= 1
            self._record(backend, status, error, capability)
            self._changed.notify_all()

    def _record(
        self, backend: Backend, status: int | None, error: str, capability: str | None = None
    ) -> None:
        now = time.monotonic()
        if status is not None and status < 500:
            backend.failures = 0
            backend.succeeded_at = now
            if capability is not None and status < 300:
                backend.served.add(capability)
                backend.refused.pop(capability, None)
            return
        learns = backend.config.capabilities is None and capability not in backend.served
        if status is not None and capability is not None and learns:
            # It answered, so it is up; what was asked may be what it cannot do.
            refused = backend.refused[capability] = backend.refused.get(capability, 0) + 1
            backend.last_error = f"{capability}: {error}"
            if refused >= self.config.eject_after:
                backend.refused.pop(capability)
                backend.off_until[capability] = now + CAPABILITY_RETRY_S
            return
        backend.failures += 1
        backend.last_error = error
        if backend.failures >= self.config.eject_after:
            backend.healthy = False

    async def set_draining(self, name: str, draining: bool) -> Backend | None:
        backend = self.backend(name)
        if backend is None:
            return None
        async with self._changed:
            backend.draining = draining
            self._changed.notify_all()
        return backend

    async def idle(self, backend: Backend, timeout: float) -> bool:
        """Wait until ``backend`` has no request outstanding; False on timeout."""
        deadline = time.monotonic() + timeout
        async with self._changed:
            while backend.outstanding:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                try:
                    await asyncio.wait_for(self._changed.wait(), remaining)
                except TimeoutError:
                    return False
            return True

    # --- Reloading -------------------------------------------------------------------------

    async def update(self, config: GatewayConfig) -> tuple[list[Backend], list[str]]:
        """Take ``config``'s backends, aliases, queue and health settings, live. A backend
        whose settings did not change keeps its state (health, models, drain); a new or
        changed one starts unprobed. Requests in flight on a removed backend finish there.
        Returns the new backends (to probe now) and the names of the removed ones."""
        kept = {b.name: b for b in self.backends}
        backends, added = [], []
        for settings in config.backends:
            old = kept.get(settings.name)
            if old is not None and old.config == settings:
                backends.append(old)
            else:
                backends.append(Backend(settings))
                added.append(backends[-1])
        names = {b.name for b in backends}
        removed = [name for name in kept if name not in names]
        async with self._changed:
            self.backends = backends
            self.config = config
            self._changed.notify_all()
        for old in kept.values():
            if old not in backends:  # removed, or replaced by new settings
                task = asyncio.create_task(self._retire(old))
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
        return added, removed

    async def _retire(self, backend: Backend) -> None:
        """Close a backend's connections once its requests in flight are done."""
        await self.idle(backend, 24 * 3600)
        await backend.close()

    async def close(self) -> None:
        for task in self._retiring:
            task.cancel()
        await asyncio.gather(*(b.close() for b in self.backends))

    # --- Discovery and health ----------------------------------------------------------

    async def probe(self, backend: Backend) -> None:
        """Refresh a backend's models (and loaded models); its health follows. A draining
        backend is asked over a connection that closes after the answer, so the gateway
        keeps none open there. A standby backend is not asked: its server is stopped."""
        if backend.config.standby:
            return
        timeout = aiohttp.ClientTimeout(total=max(2.0, self.config.health_interval_s))
        session = backend.client()
        try:
            if backend.config.api == "ollama":
                tags = await _get_json(session, backend, "/api/tags", timeout)
                running = await _get_json(session, backend, "/api/ps", timeout)
                held = [m for m in tags.get("models") or [] if isinstance(m, dict)]
                models = {str(m.get("name") or m.get("model")) for m in held}
                digests = {
                    str(m.get("name") or m.get("model")): str(m["digest"])
                    for m in held
                    if isinstance(m.get("digest"), str) and m["digest"]
                }
                entries = {
                    str(m.get("name") or m.get("model")): m
                    for m in running.get("models") or []
                    if isinstance(m, dict)
                }
                loaded = set(entries)
            else:
                entries, digests = {}, {}
                listed = await _get_json(session, backend, "/v1/models", timeout)
                models = {str(m.get("id")) for m in listed.get("data") or []}
                # A llama.cpp server holds its one model in memory all the time.
                loaded = set(models) if len(models) == 1 and not backend.config.fallback else set()
        except (aiohttp.ClientError, TimeoutError, ValueError, RuntimeError) as exc:
            # RuntimeError: the pool was closed under the probe (a drain just ended).
            recent = time.monotonic() - backend.succeeded_at < 3 * self.config.health_interval_s
            if isinstance(exc, TimeoutError) and (backend.outstanding or recent):
                # Slow to list its models while it works on requests (llama.cpp's server
                # answers /v1/models only between completions): busy, not sick. A request
                # that fails there still counts.
                return
            async with self._changed:
                backend.probed_at = time.monotonic()
                self._record(backend, None, f"probe: {type(exc).__name__}: {exc}")
                self._changed.notify_all()
            return
        async with self._changed:
            if models != backend.models:  # another model: what it can do is learned again
                backend.served.clear()
                backend.refused.clear()
                backend.off_until.clear()
            backend.models, backend.loaded, backend.running = models, loaded, entries
            backend.digests = digests
            backend.probed_at = time.monotonic()
            backend.failures = 0
            backend.healthy = True
            self._changed.notify_all()

    async def probe_all(self) -> None:
        await asyncio.gather(*(self.probe(b) for b in self.backends))

    async def watch(self) -> None:
        """Probe every backend every ``health_interval_s``, forever."""
        while True:
            await self.probe_all()
            await asyncio.sleep(self.config.health_interval_s)


async def _get_json(
    session: aiohttp.ClientSession, backend: Backend, path: str, timeout: aiohttp.ClientTimeout
) -> dict[str, Any]:
    headers = {**backend.headers(), **({"Connection": "close"} if backend.draining else {})}
    async with session.get(backend.config.url + path, headers=headers, timeout=timeout) as response:
        if response.status != 200:
            raise ValueError(f"{path} answered {response.status}")
        data = await response.json(content_type=None)
        if not isinstance(data, dict):
            raise ValueError(f"{path} did not answer a JSON object")
        return data
