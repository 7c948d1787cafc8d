"""What every part of the gateway's HTTP server shares: the application's keys, the
error type and its body in the caller's API format, and the request's usage record."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from clusterai_runner.gateway.cache import AnswerCache, RedisCache
from clusterai_runner.gateway.fallback import Throughput
from clusterai_runner.gateway.keys import KeyRing, UsageWriter, tokens_of
from clusterai_runner.gateway.limits import Limiter, SharedLimiter
from clusterai_runner.gateway.metrics import Metrics
from clusterai_runner.gateway.pool import Pool
from clusterai_runner.store import ApiKey

log = logging.getLogger("clusterai.gateway")

ADMIN_KEY_ENV = "CLUSTERAI_GATEWAY_ADMIN_KEY"
POOL: web.AppKey[Pool] = web.AppKey("pool", Pool)
CACHE: web.AppKey[AnswerCache | RedisCache | None] = web.AppKey("cache")
KEYS: web.AppKey[KeyRing | None] = web.AppKey("keys")
LIMITER: web.AppKey[Limiter | SharedLimiter] = web.AppKey("limiter")
THROUGHPUT: web.AppKey[Throughput] = web.AppKey("throughput", Throughput)
USAGE: web.AppKey[UsageWriter | None] = web.AppKey("usage")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
# The request's usage record, filled as it goes and written by the gatekeeper at the end.
USAGE_RECORD: web.RequestKey[dict[str, Any]] = web.RequestKey("usage", dict)
API_KEY: web.RequestKey[ApiKey | None] = web.RequestKey("api_key")  # who sent the request
# Failures before a backend's first byte: the request goes to another backend.
RETRYABLE = (aiohttp.ClientConnectionError, asyncio.TimeoutError)
# Failures in the middle of a backend's answer: the caller gets an error event.
CUT = (aiohttp.ClientError, asyncio.TimeoutError)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StreamCut(Exception):
    """The backend failed mid-stream; the caller got an error event and ``response`` ends."""

    def __init__(self, response: web.StreamResponse) -> None:
        super().__init__("stream cut")
        self.response = response


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind
        self.headers: dict[str, str] = {}


def model_not_found(model: str) -> ApiError:
    """The 404 for a model no backend lists, as OpenAI words it."""
    return ApiError(404, f"model {model!r} not found", "not_found_error")


def is_ollama(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def error_response(request: web.Request, error: ApiError) -> web.Response:
    if is_ollama(request):
        body: dict[str, Any] = {"error": error.message}
    else:
        body = {"error": {"message": error.message, "type": error.kind, "param": None,
                          "code": None}}  # fmt: skip
    return web.json_response(body, status=error.status, headers=error.headers)


def note(request: web.Request, **values: Any) -> None:
    """Add to the request's usage record."""
    info = request.get(USAGE_RECORD)
    if info is not None:
        info.update(values)


def note_tokens(request: web.Request, body: bytes) -> None:
    """The token counts in an answer's JSON, or in the last stream line that has them."""
    for line in reversed(body.strip().splitlines()[-3:]):
        text = line.removeprefix(b"data:").strip()
        if not text.startswith(b"{"):
            continue
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            prompt, completion = tokens_of(json.loads(text))
            if prompt or completion:
                note(request, prompt_tokens=prompt, completion_tokens=completion)
                return
