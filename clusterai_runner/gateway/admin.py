"""Operations routes: /metrics, /healthz and the admin routes (backends, drain)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from clusterai_runner.gateway.base import CACHE, METRICS, POOL, THROUGHPUT, USAGE, ApiError, log
from clusterai_runner.gateway.checks import read_body
from clusterai_runner.gateway.fallback import flags


async def metrics(request: web.Request) -> web.Response:
    cache = request.app[CACHE]
    counts = (cache.hits, cache.misses) if cache is not None else None
    text = request.app[METRICS].render(request.app[POOL], counts, request.app[THROUGHPUT])
    return web.Response(text=text, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})  # fmt: skip


async def healthz(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    healthy = [b.name for b in pool.backends if b.healthy and not b.draining]
    status = 200 if healthy else 503
    return web.json_response(
        {"status": "ok" if healthy else "no healthy backend", "healthy": healthy}, status=status
    )


async def admin_backends(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    cache, writer = request.app[CACHE], request.app[USAGE]
    hits = {"hits": cache.hits, "misses": cache.misses} if cache is not None else None
    written = writer.written if writer is not None else None
    spooled = await asyncio.to_thread(writer.pending) if writer is not None else None
    p95, count = pool.queue_wait()
    queue = {
        "waiting": pool.waiting,
        "wait_p95_s": round(p95, 4),
        "requests": count,
        "window_s": pool.config.wait_window_s,
        # Models whose workers are all parked, asked for lately: what the autoscaler wakes.
        "wanted": pool.wanted(),
    }
    found = flags(pool, request.app[THROUGHPUT])
    listed = [{**b.to_json(), "flags": [f.to_json() for f in found.get(b.name, [])]}
              for b in pool.backends]  # fmt: skip
    return web.json_response({"backends": listed,
                              "waiting": pool.waiting, "queue": queue, "cache": hits,
                              "usage_records_written": written,
                              "usage_records_spooled": spooled})  # fmt: skip


async def admin_drain(request: web.Request) -> web.Response:
    """POST /admin/backends/{name}/drain {"wait_s": 30}: no new requests go there; answers
    when its requests in flight have finished, or when wait_s has passed."""
    pool = request.app[POOL]
    name = request.match_info["name"]
    body = await read_body(request) if request.can_read_body else {}
    wait = body.get("wait_s", 30)
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= 86400:
        raise ApiError(400, "wait_s must be a number of seconds from 0 to 86400")
    draining = not request.path.endswith("/undrain")
    backend = await pool.set_draining(name, draining)
    if backend is None:
        raise ApiError(404, f"no backend named {name!r}", "not_found_error")
    log.info("backend %s %s", name, "draining" if draining else "back in service")
    idle = await pool.idle(backend, float(wait)) if draining else True
    if draining:
        left = "no request in flight" if idle else f"{backend.outstanding} requests still in flight"
        log.info("backend %s drained: %s", name, left)
        if idle and backend.draining:  # its kept-alive connections go too
            await backend.close()
    return web.json_response({"backend": backend.to_json(), "idle": idle})
