"""The gateway's HTTP server: the OpenAI and Ollama APIs over every backend.

This module builds the application from its parts and serves it, with SIGHUP reloads:
``middleware`` (errors, the gatekeeper), ``checks`` (request bodies), ``proxy`` (the
OpenAI routes, failover, streams, the cache), ``ollama`` (Ollama's API, translated where
needed) and ``admin`` (metrics, health, drain), over ``base`` (what they share).

The request path is plain asyncio and aiohttp: no Ansible, no state-store access. Each
request gets a backend from the pool (see pool.py); a backend whose connection fails before
the first byte of its answer is marked and the request goes to the next one. Streams are
passed through as they come (server-sent events for the OpenAI API, NDJSON for Ollama's),
translated when an Ollama request goes to a backend that speaks only the OpenAI API. A
stream cut by its backend ends with an error event in the caller's format, never a hang.

Client mistakes are 4xx with an error body in the caller's API format; a failing backend
is a 502 or 503 whose body does not name it (the log does).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from clusterai_runner.errors import UsageError
from clusterai_runner.gateway.admin import admin_backends, admin_drain, healthz, metrics
from clusterai_runner.gateway.base import (
    CACHE,
    KEYS,
    LIMITER,
    METRICS,
    POOL,
    THROUGHPUT,
    USAGE,
    log,
)
from clusterai_runner.gateway.cache import AnswerCache, RedisCache
from clusterai_runner.gateway.config import GatewayConfig
from clusterai_runner.gateway.fallback import MAX_SAMPLES, Throughput
from clusterai_runner.gateway.keys import KeyRing, UsageWriter
from clusterai_runner.gateway.limits import Limiter, SharedLimiter
from clusterai_runner.gateway.metrics import Metrics
from clusterai_runner.gateway.middleware import errors, gatekeeper
from clusterai_runner.gateway.monitoring import WebConfig, metrics_app
from clusterai_runner.gateway.ollama import (
    MANAGEMENT,
    ollama_manage,
    ollama_ps,
    ollama_route,
    ollama_show,
    ollama_tags,
    ollama_version,
)
from clusterai_runner.gateway.pool import Pool
from clusterai_runner.gateway.proxy import openai_model, openai_models, openai_route
from clusterai_runner.store import Store


def make_app(
    config: GatewayConfig, store: Store | None = None, usage_spool: Path | None = None
) -> web.Application:
    """The gateway's application. ``store`` (the state store) holds the API keys and takes
    the usage records, which wait in the directory ``usage_spool`` until it has them;
    without a store there are neither, and auth must be off."""
    if config.auth_enabled and store is None:
        raise ValueError("auth needs the state store")
    if store is not None and usage_spool is None:
        raise ValueError("usage records need a spool directory")
    app = web.Application(middlewares=[errors, gatekeeper], client_max_size=config.max_body_bytes)
    pool = Pool(config)
    app[POOL] = pool
    if config.auth_enabled and store is not None:
        app[KEYS] = KeyRing(store, config.auth_max_stale_s)
    else:
        app[KEYS] = None
    # Replicas that share a Redis share each key's limits too.
    url = config.cache_redis_url
    app[LIMITER] = SharedLimiter(url) if url else Limiter()
    app[USAGE] = None
    if store is not None and usage_spool is not None:
        app[USAGE] = UsageWriter(store, usage_spool)
    app[METRICS] = Metrics()
    app[THROUGHPUT] = Throughput(
        config.throughput_drop_below,
        config.throughput_recent_s,
        config.throughput_baseline_s,
        config.throughput_min_samples,
    )
    cache: AnswerCache | RedisCache | None = None
    if config.cache_enabled and config.cache_redis_url:
        cache = RedisCache(config.cache_redis_url, config.cache_ttl_s)
    elif config.cache_enabled:
        path = config.cache_path or ":memory:"
        cache = AnswerCache(path, config.cache_ttl_s, config.cache_max_entries)
    app[CACHE] = cache
    app.router.add_post("/v1/chat/completions", openai_route)
    app.router.add_post("/v1/completions", openai_route)
    app.router.add_post("/v1/embeddings", openai_route)
    app.router.add_get("/v1/models", openai_models)
    app.router.add_get("/v1/models/{model:.+}", openai_model)
    app.router.add_post("/api/chat", ollama_route)
    app.router.add_post("/api/generate", ollama_route)
    app.router.add_post("/api/embed", ollama_route)
    app.router.add_post("/api/embeddings", ollama_route)  # the legacy one, still called
    app.router.add_get("/api/tags", ollama_tags)
    app.router.add_get("/api/ps", ollama_ps)
    app.router.add_post("/api/show", ollama_show)
    app.router.add_get("/api/version", ollama_version)
    for path in MANAGEMENT:
        app.router.add_route("DELETE" if path == "/api/delete" else "POST", path, ollama_manage)
    app.router.add_route("*", "/api/blobs/{digest}", ollama_manage)
    app.router.add_get("/healthz", healthz)
    if config.metrics_host is None:  # else only on the metrics listener (monitoring.py)
        app.router.add_get("/metrics", metrics)
    app.router.add_get("/admin/backends", admin_backends)
    app.router.add_post("/admin/backends/{name}/drain", admin_drain)
    app.router.add_post("/admin/backends/{name}/undrain", admin_drain)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        try:
            await pool.probe_all()
            tasks = [asyncio.create_task(pool.watch())]
            keys, writer = app[KEYS], app[USAGE]
            if store is not None:  # the throughput baseline, from the usage records
                records = await asyncio.to_thread(store.usage, MAX_SAMPLES)
                seeded = app[THROUGHPUT].seed(records)
                log.info("throughput baseline: %d usage records", seeded)
            if keys is not None:
                await keys.reload()
                tasks.append(asyncio.create_task(keys.watch(config.auth_refresh_s)))
            if writer is not None:
                tasks.append(asyncio.create_task(writer.run()))
            yield
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            cache = app[CACHE]
            if cache is not None:
                await cache.close()
            await app[LIMITER].close()
        finally:
            await pool.close()

    app.cleanup_ctx.append(lifecycle)
    return app


# What SIGHUP cannot change: the listeners, the request size limit, the cache and auth.
RESTART_ONLY = (
    "host", "port", "max_body_bytes", "cache_enabled", "cache_path", "cache_ttl_s",
    "cache_max_entries", "cache_redis_url", "auth_enabled", "auth_refresh_s", "auth_max_stale_s",
    "metrics_host", "metrics_port", "metrics_web_config", "throughput_drop_below",
    "throughput_recent_s", "throughput_baseline_s", "throughput_min_samples", "affinity",
    "affinity_ttl_s", "semantic_routes", "semantic_model", "semantic_threshold",
    "semantic_max_entries",
)  # fmt: skip


async def reload(app: web.Application, read: Callable[[], GatewayConfig]) -> None:
    """Re-read the configuration and apply its backends, aliases, queue and health
    settings without dropping a request; a bad file changes nothing."""
    pool = app[POOL]
    try:
        fresh = await asyncio.to_thread(read)
    except UsageError as exc:
        log.error("reload: %s; keeping the current backends", exc)
        return
    ignored = [f for f in RESTART_ONLY if getattr(fresh, f) != getattr(pool.config, f)]
    if ignored:
        log.warning("reload: %s changed: takes effect on restart", ", ".join(ignored))
    live = dataclasses.replace(fresh, **{f: getattr(pool.config, f) for f in RESTART_ONLY})
    added, removed = await pool.update(live)
    await asyncio.gather(*(pool.probe(b) for b in added))
    log.info(
        "reload: %d backends; new or changed: %s; removed: %s",
        len(pool.backends),
        ", ".join(b.name for b in added) or "none",
        ", ".join(removed) or "none",
    )


UNPARSABLE = "400 Bad Request: a malformed request line or header, or one over 8190 bytes\n"


class _QuietRequestHandler(web.RequestHandler):
    """aiohttp answers a request it cannot parse with the parser's message, which quotes
    the start of the offending line (an oversized header's value: a token, a cookie), and
    logs it with a traceback; this connection handler says what was wrong and quotes
    nothing."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400:
            return super().handle_error(request, status, exc, message)
        kind = type(exc).__name__
        log.warning("refused an unparsable request from %s (%s)", request.remote, kind)
        response = web.Response(status=400, text=UNPARSABLE)
        response.force_close()
        return response


class _QuietServer(web.Server):
    def __call__(self) -> web.RequestHandler:
        return _QuietRequestHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """The application's runner, with connections handled by ``_QuietRequestHandler``
    (aiohttp has no option for the handler's class; tests serve through this too)."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _QuietServer
        return server


def serve(
    config: GatewayConfig,
    store: Store | None,
    usage_spool: Path | None = None,
    ready: Callable[[str], None] | None = None,
    read: Callable[[], GatewayConfig] | None = None,
    monitoring: tuple[WebConfig, ssl.SSLContext] | None = None,
) -> None:
    """Run the gateway until SIGINT or SIGTERM; with ``read`` (which loads the
    configuration again), SIGHUP reloads the backends. With ``monitoring`` (the metrics
    listener's web configuration and TLS context), /metrics is served there."""

    async def main() -> None:
        app = make_app(config, store, usage_spool)
        runner = GatewayRunner(app, access_log=None, handle_signals=True)
        await runner.setup()
        site = web.TCPSite(runner, config.host, config.port, reuse_address=True)
        await site.start()
        runners: list[web.AppRunner] = [runner]
        if monitoring is not None and config.metrics_host is not None:
            web_config, context = monitoring
            metrics_runner = web.AppRunner(metrics_app(web_config, app), access_log=None)
            await metrics_runner.setup()
            runners.append(metrics_runner)
            await web.TCPSite(metrics_runner, config.metrics_host, config.metrics_port,
                              ssl_context=context, reuse_address=True).start()  # fmt: skip
        pending: set[asyncio.Task[None]] = set()
        if read is not None:

            def on_hangup() -> None:
                task = asyncio.create_task(reload(app, read))
                pending.add(task)
                task.add_done_callback(pending.discard)

            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_hangup)
        if ready is not None:
            ready(f"http://{config.host}:{config.port}")
        try:
            await asyncio.Event().wait()
        finally:
            for each in reversed(runners):
                await each.cleanup()

    with contextlib.suppress(KeyboardInterrupt, web.GracefulExit):
        asyncio.run(main())
