"""The middlewares every request passes: errors in the caller's format, then the
gatekeeper (API key, limits, the usage record and metrics)."""

from __future__ import annotations

import hmac
import os
import time
from typing import Any

from aiohttp import web

from clusterai_runner.gateway.base import (
    ADMIN_KEY_ENV,
    API_KEY,
    KEYS,
    LIMITER,
    METRICS,
    POOL,
    THROUGHPUT,
    USAGE,
    USAGE_RECORD,
    ApiError,
    Handler,
    error_response,
    log,
)
from clusterai_runner.store import ApiKey


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(request, error)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[POOL].config.max_body_bytes
        return error_response(request, ApiError(413, f"the body is over {limit} bytes"))
    except web.HTTPException as exc:
        if exc.status >= 400:
            message = exc.reason if exc.status != 405 else f"{request.method} is not allowed here"
            return error_response(request, ApiError(exc.status, message))
        raise
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        return error_response(
            request, ApiError(500, "internal error in the gateway", "server_error")
        )


def bearer(request: web.Request) -> str:
    """The token of ``Authorization: Bearer TOKEN``, or "" for anything else: another
    scheme or none (a bare key is not accepted), or a token that is not printable ASCII
    (no key is; bytes that are not UTF-8 arrive as surrogates and must not reach the key
    lookup). The scheme is case-insensitive, as HTTP's are (RFC 9110, 11.1)."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not (token.isascii() and token.isprintable()):
        return ""
    return token


def stale_keys() -> ApiError:
    """Keys not reloaded for auth.max_stale_s: a revoked key might still be among them."""
    error = ApiError(503, "the gateway cannot read its API keys now; retry later", "server_error")
    error.headers["Retry-After"] = "5"
    return error


def _authenticate(request: web.Request) -> ApiKey | None:
    keys = request.app[KEYS]
    if keys is None:
        return None
    if keys.stale():
        raise stale_keys()
    key = keys.find(bearer(request))
    if key is None:
        raise ApiError(401, "a valid API key is required (Authorization: Bearer KEY)",
                       "authentication_error")  # fmt: skip
    return key


@web.middleware
async def gatekeeper(request: web.Request, handler: Handler) -> web.StreamResponse:
    """API keys and limits on the API routes, the admin key on the admin routes, and a
    usage record for every model request."""
    if request.path.startswith("/admin/"):
        require_admin(request)
        return await handler(request)
    if not request.path.startswith(("/v1/", "/api/")):
        return await handler(request)
    key = _authenticate(request)
    request[API_KEY] = key
    if request.method != "POST":
        return await handler(request)
    if key is not None:
        limit = await request.app[LIMITER].admit(key)
        if limit is not None:
            error = ApiError(429, f"this key's limit of {limit} is reached", "rate_limit_error")
            error.headers["Retry-After"] = "60"
            raise error
    info: dict[str, Any] = {
        "model": "", "backend": "", "prompt_tokens": 0, "completion_tokens": 0,
        "ttft_ms": None, "cache_hit": False,
    }  # fmt: skip
    request[USAGE_RECORD] = info
    started = time.monotonic()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except (ApiError, web.HTTPException) as error:  # the status the client gets
        status = error.status
        raise
    finally:
        elapsed = time.monotonic() - started
        route = route_label(request)
        request.app[METRICS].observe(
            route, status, elapsed, info["prompt_tokens"], info["completion_tokens"]
        )
        if status == 200 and not info["cache_hit"]:
            generating = elapsed - (info["ttft_ms"] or 0) / 1000
            request.app[THROUGHPUT].observe(
                info["backend"], info["model"], info["completion_tokens"], generating
            )
        if key is not None:
            await request.app[LIMITER].spent(key, info["prompt_tokens"] + info["completion_tokens"])
        writer = request.app[USAGE]
        if writer is not None and info["model"]:
            writer.add({**info, "key_id": key.id if key else None, "route": route,
                        "status": status,
                        "latency_ms": elapsed * 1000})  # fmt: skip


def route_label(request: web.Request) -> str:
    """The route's template (``/v1/chat/completions``), never the path a client sent: a
    label per path would let any key holder add series without end."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def require_admin(request: web.Request) -> None:
    """An admin key: CLUSTERAI_GATEWAY_ADMIN_KEY, or an API key created with --admin."""
    given = bearer(request)
    env_key = os.environ.get(ADMIN_KEY_ENV, "")
    if env_key and hmac.compare_digest(given.encode(), env_key.encode()):
        return
    keys = request.app[KEYS]
    if keys is not None and keys.stale():
        raise stale_keys()
    key = keys.find(given) if keys is not None else None
    if key is not None and key.admin:
        return
    if not env_key and keys is None:
        raise ApiError(403, f"admin routes are off: set {ADMIN_KEY_ENV} or turn on auth",
                       "permission_error")  # fmt: skip
    raise ApiError(401, "admin routes need an admin key as a Bearer token",
                   "authentication_error")  # fmt: skip
