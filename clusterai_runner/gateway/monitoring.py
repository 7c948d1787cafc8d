"""The gateway's metrics for Prometheus, on a listener of their own: TLS and a login.

``metrics: {listen: HOST:PORT, web_config: FILE}`` in the gateway's configuration
serves ``/metrics`` there, and only there (the client port then answers 404 for it). FILE
is a Prometheus-style web configuration, the format Prometheus and its exporters read
with ``--web.config.file`` (the ``pki`` role writes one for every monitored service):

    tls_server_config: {cert_file: ..., key_file: ...}
    basic_auth_users: {clusterai: $2b$10$...}      # bcrypt hashes

A request without a user and password of that file is a 401. Checking a bcrypt hash takes
tens of milliseconds: it runs off the event loop, and a login that passed is remembered
(by a digest of it) so that each scrape does not pay again.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from clusterai_runner.gateway.admin import metrics
from clusterai_runner.gateway.base import CACHE, METRICS, POOL, THROUGHPUT
from clusterai_runner.web_config import (
    Logins,
    WebConfig,
    read_web_config,
    server_context,
)

REALM = 'Basic realm="clusterai-gateway metrics", charset="UTF-8"'
__all__ = ["WebConfig", "metrics_app", "read_web_config", "server_context"]


LOGINS: web.AppKey[Logins] = web.AppKey("logins", Logins)


@web.middleware
async def require_login(request: web.Request, handler: Any) -> web.StreamResponse:
    # A bcrypt check takes tens of milliseconds: off the event loop.
    logins = request.app[LOGINS]
    if not await asyncio.to_thread(logins.check, request.headers.get("Authorization", "")):
        return web.Response(status=401, text="401 Unauthorized\n",
                            headers={"WWW-Authenticate": REALM})  # fmt: skip
    response: web.StreamResponse = await handler(request)
    return response


def metrics_app(web_config: WebConfig, gateway: web.Application) -> web.Application:
    """An application serving the ``gateway`` application's /metrics behind the login."""
    app = web.Application(middlewares=[require_login])
    app[LOGINS] = Logins(web_config.users)
    app[POOL], app[CACHE], app[METRICS] = gateway[POOL], gateway[CACHE], gateway[METRICS]
    app[THROUGHPUT] = gateway[THROUGHPUT]
    app.router.add_get("/metrics", metrics)
    return app
