"""The gateway's HTTP server: the OpenAI and Ollama APIs over every backend.

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
import hmac
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from clusterai_runner import __version__
from clusterai_runner.errors import UsageError
from clusterai_runner.gateway import translate
from clusterai_runner.gateway.cache import AnswerCache, RedisCache, cache_key, deterministic
from clusterai_runner.gateway.config import GatewayConfig
from clusterai_runner.gateway.keys import KeyRing, Limiter, UsageWriter, tokens_of
from clusterai_runner.gateway.metrics import Metrics
from clusterai_runner.gateway.pool import Busy, Lease, NoBackend, NoSuchModel, Pool
from clusterai_runner.store import ApiKey, Store

log = logging.getLogger("clusterai.gateway")

ADMIN_KEY_ENV = "CLUSTERAI_GATEWAY_ADMIN_KEY"
POOL: web.AppKey[Pool] = web.AppKey("pool", Pool)
CACHE: web.AppKey[AnswerCache | RedisCache | None] = web.AppKey("cache")
KEYS: web.AppKey[KeyRing | None] = web.AppKey("keys")
LIMITER: web.AppKey[Limiter] = web.AppKey("limiter", Limiter)
USAGE: web.AppKey[UsageWriter | None] = web.AppKey("usage")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
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


def _is_ollama(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def error_response(request: web.Request, error: ApiError) -> web.Response:
    if _is_ollama(request):
        body: dict[str, Any] = {"error": error.message}
    else:
        body = {"error": {"message": error.message, "type": error.kind, "param": None,
                          "code": None}}  # fmt: skip
    return web.json_response(body, status=error.status, headers=error.headers)


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


def _bearer(request: web.Request) -> str:
    return request.headers.get("Authorization", "").removeprefix("Bearer ").strip()


def _authenticate(request: web.Request) -> ApiKey | None:
    keys = request.app[KEYS]
    if keys is None:
        return None
    key = keys.find(_bearer(request))
    if key is None:
        raise ApiError(401, "a valid API key is required (Authorization: Bearer KEY)",
                       "authentication_error")  # fmt: skip
    return key


@web.middleware
async def gatekeeper(request: web.Request, handler: Handler) -> web.StreamResponse:
    """API keys and limits on the API routes, the admin key on the admin routes, and a
    usage record for every model request."""
    if request.path.startswith("/admin/"):
        _require_admin(request)
        return await handler(request)
    if not request.path.startswith(("/v1/", "/api/")):
        return await handler(request)
    key = _authenticate(request)
    if request.method != "POST":
        return await handler(request)
    if key is not None:
        limit = request.app[LIMITER].admit(key)
        if limit is not None:
            error = ApiError(429, f"this key's limit of {limit} is reached", "rate_limit_error")
            error.headers["Retry-After"] = "60"
            raise error
    info: dict[str, Any] = {
        "model": "", "backend": "", "prompt_tokens": 0, "completion_tokens": 0,
        "ttft_ms": None, "cache_hit": False,
    }  # fmt: skip
    request["usage"] = info
    started = time.monotonic()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except ApiError as error:
        status = error.status
        raise
    finally:
        elapsed = time.monotonic() - started
        request.app[METRICS].observe(
            request.path, status, elapsed, info["prompt_tokens"], info["completion_tokens"]
        )
        if key is not None:
            request.app[LIMITER].spent(key, info["prompt_tokens"] + info["completion_tokens"])
        writer = request.app[USAGE]
        if writer is not None and info["model"]:
            writer.add({**info, "key_id": key.id if key else None, "route": request.path,
                        "status": status,
                        "latency_ms": elapsed * 1000})  # fmt: skip


def _note(request: web.Request, **values: Any) -> None:
    """Add to the request's usage record."""
    info = request.get("usage")
    if info is not None:
        info.update(values)


def _note_tokens(request: web.Request, body: bytes) -> None:
    """The token counts in an answer's JSON, or in the last stream line that has them."""
    for line in reversed(body.strip().splitlines()[-3:]):
        text = line.removeprefix(b"data:").strip()
        if not text.startswith(b"{"):
            continue
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            prompt, completion = tokens_of(json.loads(text))
            if prompt or completion:
                _note(request, prompt_tokens=prompt, completion_tokens=completion)
                return


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()  # over client_max_size: 413, from the middleware
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ApiError(400, "model is required and must be a string")
    return model


ROLES = ("system", "developer", "user", "assistant", "tool", "function")


def _texts(value: Any, empty_ok: bool) -> bool:
    """A string, or a non-empty list of strings (none empty unless ``empty_ok``)."""
    items = [value] if isinstance(value, str) else value
    return (
        isinstance(items, list)
        and bool(items)
        and all(isinstance(t, str) and (empty_ok or t) for t in items)
    )


def _check_message(where: str, message: Any) -> None:
    if not isinstance(message, dict):
        raise ApiError(400, f"{where} must be an object")
    if message.get("role") not in ROLES:
        raise ApiError(400, f"{where}.role must be one of {', '.join(ROLES)}")
    content = message.get("content")
    if message["role"] == "assistant":
        if content is not None and not isinstance(content, str | list):
            raise ApiError(400, f"{where}.content must be a string, a list of parts or null")
    elif not isinstance(content, str | list):
        raise ApiError(400, f"{where}.content is required: a string or a list of parts")


# The OpenAI API's sampling parameters and their ranges (None: unbounded). A backend may
# answer a value out of range with a 500 (llama-cpp-python does): the gateway says 400.
NUMBERS: dict[str, tuple[type | tuple[type, ...], float | None, float | None]] = {
    "max_tokens": (int, 1, None),
    "max_completion_tokens": (int, 1, None),
    "n": (int, 1, 128),
    "seed": (int, None, None),
    "top_logprobs": (int, 0, 20),
    "temperature": ((int, float), 0, 2),
    "top_p": ((int, float), 0, 1),
    "presence_penalty": ((int, float), -2, 2),
    "frequency_penalty": ((int, float), -2, 2),
}


def _check_parameters(body: dict[str, Any]) -> None:
    for name, (kinds, low, high) in NUMBERS.items():
        value = body.get(name)
        if value is None:
            continue
        typed = isinstance(value, kinds) and not isinstance(value, bool)
        in_range = typed and (low is None or value >= low) and (high is None or value <= high)
        if not in_range:
            kind = "an integer" if kinds is int else "a number"
            bounds = f" from {low}" if low is not None else ""
            bounds += f" to {high}" if high is not None else (" up" if low is not None else "")
            raise ApiError(400, f"{name} must be {kind}{bounds}")
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, str)
        or (isinstance(stop, list) and len(stop) <= 4 and all(isinstance(x, str) for x in stop))
    ):
        raise ApiError(400, "stop must be a string or a list of up to 4 strings")


def _check_openai(path: str, body: dict[str, Any]) -> bool:
    """Check the fields the gateway relies on; returns whether the answer streams."""
    _check_parameters(body)
    if path.endswith("/chat/completions"):
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "messages is required and must be a non-empty list")
        for index, message in enumerate(messages):
            _check_message(f"messages[{index}]", message)
    elif path.endswith("/completions"):
        if not _texts(body.get("prompt"), empty_ok=False):
            raise ApiError(400, "prompt is required: a non-empty string or list of them")
    elif path.endswith("/embeddings") and not _texts(body.get("input"), empty_ok=False):
        raise ApiError(400, "input is required: a non-empty string or list of non-empty strings")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "stream must be true or false")
    return stream


async def _lease(pool: Pool, model: str, tried: list[str]) -> Lease:
    try:
        return await pool.acquire(model, tried)
    except NoSuchModel:
        raise ApiError(404, f"model {model!r} not found", "not_found_error") from None
    except Busy:
        error = ApiError(429, f"every backend serving {model!r} is busy; retry later",
                         "rate_limit_error")  # fmt: skip
        error.headers["Retry-After"] = "1"
        raise error from None
    except NoBackend:
        raise ApiError(503, f"no healthy backend serves {model!r} now", "server_error") from None


@contextlib.asynccontextmanager
async def _backend_call(
    request: web.Request, model: str, path_for: Callable[[Lease], tuple[str, dict[str, Any]]]
) -> AsyncIterator[tuple[Lease, aiohttp.ClientResponse]]:
    """A backend's answer (headers received) to the request; the next backend when one
    fails before its first byte. The lease is released when the caller is done."""
    pool = request.app[POOL]
    tried: list[str] = []
    while True:
        lease = await _lease(pool, model, tried)
        path, payload = path_for(lease)
        backend = lease.backend
        _note(request, backend=backend.name)
        try:
            response = await backend.client().post(
                backend.config.url + path, json=payload, headers=backend.headers()
            )
        except RETRYABLE as exc:
            log.warning("backend %s failed before answering: %s", backend.name, exc)
            await pool.release(lease, False, f"{type(exc).__name__}: {exc}")
            tried.append(backend.name)
            continue
        ok = False
        try:
            yield lease, response
            ok = response.status < 500
        except StreamCut:
            raise
        except BaseException:
            ok = response.status < 500
            raise
        finally:
            response.release()
            await pool.release(lease, ok, "" if ok else f"HTTP {response.status} or cut stream")
        return


def _backend_failed(lease: Lease, status: int) -> ApiError:
    log.warning("backend %s answered %s", lease.backend.name, status)
    return ApiError(502, f"the backend serving this model failed (HTTP {status})", "server_error")


class Recorder:
    """What was sent to the caller, for the cache: kept only when the answer completes."""

    def __init__(self, key: str | None) -> None:
        self.key = key
        self.pieces: list[bytes] = []
        self.content_type = ""

    def add(self, piece: bytes) -> None:
        if self.key is not None:
            self.pieces.append(piece)

    def keep(self, request: web.Request) -> None:
        cache = request.app[CACHE]
        if cache is not None and self.key is not None:
            cache.put(self.key, self.content_type, b"".join(self.pieces))


def _headers(recorder: Recorder, content_type: str) -> dict[str, str]:
    recorder.content_type = content_type
    headers = {"Content-Type": content_type}
    if recorder.key is not None:
        headers["X-Cache"] = "miss"
    return headers


async def _pass_through(
    request: web.Request,
    response: aiohttp.ClientResponse,
    stream: bool,
    lease: Lease,
    recorder: Recorder,
) -> web.StreamResponse:
    if response.status >= 500:
        raise _backend_failed(lease, response.status)
    content_type = response.headers.get("Content-Type", "application/json")
    if not stream or response.status != 200:
        body = await response.read()
        if request.path == "/v1/embeddings" and response.status == 200:
            try:
                body = json.dumps(translate.pooled(json.loads(body))).encode()
            except ValueError:
                raise _backend_failed(lease, 200) from None
        answer = web.Response(
            body=body, status=response.status, headers=_headers(recorder, content_type)
        )
        if response.status == 200:
            _note_tokens(request, body)
            recorder.add(body)
            recorder.keep(request)
        return answer
    out = web.StreamResponse(headers={**_headers(recorder, content_type),
                                      "Cache-Control": "no-cache"})  # fmt: skip
    await out.prepare(request)
    started, tail = time.monotonic(), b""
    try:
        async for piece in response.content.iter_any():
            if not tail:
                _note(request, ttft_ms=(time.monotonic() - started) * 1000)
            await out.write(piece)
            recorder.add(piece)
            tail = (tail + piece)[-4096:]
    except CUT as exc:
        await _cut(request, out, lease, exc)
    await out.write_eof()
    _note_tokens(request, tail.replace(b"data: [DONE]", b""))
    recorder.keep(request)
    return out


async def _cut(
    request: web.Request, out: web.StreamResponse, lease: Lease, exc: BaseException
) -> None:
    log.warning("backend %s cut a stream: %s", lease.backend.name, exc)
    with contextlib.suppress(ConnectionError, RuntimeError):
        await out.write(_stream_error(request, "the backend serving this stream failed"))
        await out.write_eof()
    raise StreamCut(out) from exc


def _stream_error(request: web.Request, message: str) -> bytes:
    if _is_ollama(request):
        return (json.dumps({"error": message}) + "\n").encode()
    payload = {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
    return f"data: {json.dumps(payload)}\n\n".encode()


def _cache_lookup(
    request: web.Request, body: dict[str, Any], model: str, stream: bool
) -> tuple[web.StreamResponse | None, Recorder]:
    """A cached answer (as a Response to prepare), or a recorder for the answer to come."""
    _note(request, model=model)
    cache = request.app[CACHE]
    control = request.headers.get("Cache-Control", "")
    if cache is None or not deterministic(body) or "no-cache" in control or "no-store" in control:
        return None, Recorder(None)
    key = cache_key(request.path, request.app[POOL].backend_models(model), body)
    hit = cache.get(key)
    if hit is None:
        return None, Recorder(key)
    _note(request, cache_hit=True)
    _note_tokens(request, hit.body)
    headers = {"Content-Type": hit.content_type, "X-Cache": "hit"}
    if stream:
        headers["Cache-Control"] = "no-cache"
    return web.Response(body=hit.body, headers=headers), Recorder(None)


async def openai_route(request: web.Request) -> web.StreamResponse:
    """POST /v1/chat/completions, /v1/completions, /v1/embeddings."""
    body = await _body(request)
    model = _model(body)
    stream = _check_openai(request.path, body)
    cached, recorder = _cache_lookup(request, body, model, stream)
    if cached is not None:
        return cached

    def path_for(lease: Lease) -> tuple[str, dict[str, Any]]:
        return request.path, {**body, "model": lease.model}

    try:
        async with _backend_call(request, model, path_for) as (lease, response):
            return await _pass_through(request, response, stream, lease, recorder)
    except StreamCut as cut:
        return cut.response


OLLAMA_ROUTES = {
    "/api/chat": ("/v1/chat/completions", translate.chat_request, translate.chat_answer),
    "/api/generate": ("/v1/completions", translate.generate_request, translate.generate_answer),
}


async def ollama_route(request: web.Request) -> web.StreamResponse:
    """POST /api/chat, /api/generate, /api/embed: as they are to Ollama backends, and
    translated for backends that speak the OpenAI API."""
    body = await _body(request)
    model = _model(body)
    try:
        # Check the request once, before any backend is chosen.
        if request.path == "/api/embed":
            translate.embed_request(body, model)
            stream = False
        else:
            _check_parameters(OLLAMA_ROUTES[request.path][1](body, model))
            stream = translate.streaming(body)
    except translate.BadRequest as exc:
        raise ApiError(400, str(exc)) from None
    if request.path == "/api/generate" and not body.get("prompt") and not body.get("system"):
        # Ollama's way to load a model: an empty prompt answers at once, empty.
        if not request.app[POOL].serves(model):
            raise ApiError(404, f"model {model!r} not found", "not_found_error")
        answer = {"model": model, "created_at": translate.now(), "response": "", "done": True,
                  "done_reason": "load"}  # fmt: skip
        return web.json_response(answer)
    cached, recorder = _cache_lookup(request, body, model, stream)
    if cached is not None:
        return cached

    def path_for(lease: Lease) -> tuple[str, dict[str, Any]]:
        if lease.backend.config.api == "ollama":
            return request.path, {**body, "model": lease.model}
        if request.path == "/api/embed":
            return "/v1/embeddings", translate.embed_request(body, lease.model)
        path, convert, _ = OLLAMA_ROUTES[request.path]
        return path, convert(body, lease.model)

    started = time.monotonic()
    try:
        async with _backend_call(request, model, path_for) as (lease, response):
            if lease.backend.config.api == "ollama":
                return await _pass_through(request, response, stream, lease, recorder)
            if response.status >= 500:
                raise _backend_failed(lease, response.status)
            if response.status != 200:
                detail = await response.text()
                raise ApiError(response.status, f"the backend refused the request: {detail[:500]}")
            if request.path == "/api/embed":
                answer = translate.embed_answer(await response.json(), model)
            elif not stream:
                answer = OLLAMA_ROUTES[request.path][2](await response.json(), model, started)
            else:
                kind = "chat" if request.path == "/api/chat" else "generate"
                return await _translate_stream(request, response, lease, kind, model, recorder)
            encoded = json.dumps(answer).encode()
            _note_tokens(request, encoded)
            recorder.add(encoded)
            recorder.keep(request)
            return web.Response(body=encoded, headers=_headers(recorder, "application/json"))
    except StreamCut as cut:
        return cut.response


async def _translate_stream(
    request: web.Request,
    response: aiohttp.ClientResponse,
    lease: Lease,
    kind: str,
    model: str,
    recorder: Recorder,
) -> web.StreamResponse:
    out = web.StreamResponse(headers=_headers(recorder, "application/x-ndjson"))
    await out.prepare(request)

    started = time.monotonic()

    async def send(line: dict[str, Any]) -> None:
        if translator.pieces == 1 and not line.get("done"):
            _note(request, ttft_ms=(time.monotonic() - started) * 1000)
        piece = (json.dumps(line) + "\n").encode()
        await out.write(piece)
        recorder.add(piece)

    translator = translate.StreamTranslator(kind, model)
    try:
        async for raw in response.content:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            converted = translator.chunk(json.loads(data))
            if converted is not None:
                await send(converted)
    except (*CUT, ValueError) as exc:
        await _cut(request, out, lease, exc)
    last = translator.last()
    _note(request, prompt_tokens=last["prompt_eval_count"], completion_tokens=last["eval_count"])
    await send(last)
    await out.write_eof()
    recorder.keep(request)
    return out


async def openai_models(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "clusterai"}
            for m in pool.public_models()]  # fmt: skip
    return web.json_response({"object": "list", "data": data})


async def ollama_tags(request: web.Request) -> web.Response:
    models = [{"name": m, "model": m} for m in request.app[POOL].public_models()]
    return web.json_response({"models": models})


async def ollama_ps(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    loaded = sorted({m for b in pool.backends if b.healthy for m in b.loaded})
    return web.json_response({"models": [{"name": m, "model": m} for m in loaded]})


async def ollama_version(_request: web.Request) -> web.Response:
    return web.json_response({"version": __version__})


async def metrics(request: web.Request) -> web.Response:
    cache = request.app[CACHE]
    counts = (cache.hits, cache.misses) if cache is not None else None
    text = request.app[METRICS].render(request.app[POOL], counts)
    return web.Response(text=text, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})  # fmt: skip


async def healthz(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    healthy = [b.name for b in pool.backends if b.healthy and not b.draining]
    status = 200 if healthy else 503
    return web.json_response(
        {"status": "ok" if healthy else "no healthy backend", "healthy": healthy}, status=status
    )


def _require_admin(request: web.Request) -> None:
    """An admin key: CLUSTERAI_GATEWAY_ADMIN_KEY, or an API key created with --admin."""
    given = _bearer(request)
    env_key = os.environ.get(ADMIN_KEY_ENV, "")
    if env_key and hmac.compare_digest(given.encode(), env_key.encode()):
        return
    keys = request.app[KEYS]
    key = keys.find(given) if keys is not None else None
    if key is not None and key.admin:
        return
    if not env_key and keys is None:
        raise ApiError(403, f"admin routes are off: set {ADMIN_KEY_ENV} or turn on auth",
                       "permission_error")  # fmt: skip
    raise ApiError(401, "admin routes need an admin key as a Bearer token",
                   "authentication_error")  # fmt: skip


async def admin_backends(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    cache, writer = request.app[CACHE], request.app[USAGE]
    hits = {"hits": cache.hits, "misses": cache.misses} if cache is not None else None
    written = writer.written if writer is not None else None
    return web.json_response({"backends": [b.to_json() for b in pool.backends],
                              "waiting": pool.waiting, "cache": hits,
                              "usage_records_written": written})  # fmt: skip


async def admin_drain(request: web.Request) -> web.Response:
    """POST /admin/backends/{name}/drain {"wait_s": 30}: no new requests go there; answers
    when its requests in flight have finished, or when wait_s has passed."""
    pool = request.app[POOL]
    name = request.match_info["name"]
    body = await _body(request) if request.can_read_body else {}
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


def make_app(config: GatewayConfig, store: Store | None = None) -> web.Application:
    """The gateway's application. ``store`` (the state store) holds the API keys and takes
    the usage records; without it there are neither, and auth must be off."""
    if config.auth_enabled and store is None:
        raise ValueError("auth needs the state store")
    app = web.Application(middlewares=[errors, gatekeeper], client_max_size=config.max_body_bytes)
    pool = Pool(config)
    app[POOL] = pool
    app[KEYS] = KeyRing(store) if config.auth_enabled and store is not None else None
    app[LIMITER] = Limiter()
    app[USAGE] = UsageWriter(store) if store is not None else None
    app[METRICS] = Metrics()
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
    app.router.add_post("/api/chat", ollama_route)
    app.router.add_post("/api/generate", ollama_route)
    app.router.add_post("/api/embed", ollama_route)
    app.router.add_get("/api/tags", ollama_tags)
    app.router.add_get("/api/ps", ollama_ps)
    app.router.add_get("/api/version", ollama_version)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/admin/backends", admin_backends)
    app.router.add_post("/admin/backends/{name}/drain", admin_drain)
    app.router.add_post("/admin/backends/{name}/undrain", admin_drain)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        try:
            await pool.probe_all()
            tasks = [asyncio.create_task(pool.watch())]
            keys, writer = app[KEYS], app[USAGE]
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
                cache.close()
        finally:
            await pool.close()

    app.cleanup_ctx.append(lifecycle)
    return app


# What SIGHUP cannot change: the listener, the request size limit, the cache and auth.
RESTART_ONLY = (
    "host", "port", "max_body_bytes", "cache_enabled", "cache_path", "cache_ttl_s",
    "cache_max_entries", "cache_redis_url", "auth_enabled", "auth_refresh_s",
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


def serve(
    config: GatewayConfig,
    store: Store | None,
    ready: Callable[[str], None] | None = None,
    read: Callable[[], GatewayConfig] | None = None,
) -> None:
    """Run the gateway until SIGINT or SIGTERM; with ``read`` (which loads the
    configuration again), SIGHUP reloads the backends."""

    async def main() -> None:
        app = make_app(config, store)
        runner = web.AppRunner(app, access_log=None, handle_signals=True)
        await runner.setup()
        site = web.TCPSite(runner, config.host, config.port, reuse_address=True)
        await site.start()
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
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt, web.GracefulExit):
        asyncio.run(main())
