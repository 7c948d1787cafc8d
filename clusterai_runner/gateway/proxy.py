"""The OpenAI routes and the proxying every model route shares: a backend from the pool,
failover before the first byte, streams passed through, the answer cache."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import web

from clusterai_runner.gateway import semantic, translate
from clusterai_runner.gateway.base import (
    API_KEY,
    CACHE,
    CUT,
    POOL,
    RETRYABLE,
    ApiError,
    StreamCut,
    is_ollama,
    log,
    model_not_found,
    note,
    note_tokens,
)
from clusterai_runner.gateway.cache import Cached, cache_key, deterministic
from clusterai_runner.gateway.checks import check_openai, model_of, read_body, stream_usage
from clusterai_runner.gateway.pool import (
    CAPABILITY,
    Busy,
    Incapable,
    Lease,
    NoBackend,
    NoSuchModel,
    Pool,
    Waking,
)

# What a backend lacks, said to the client, for the capabilities that are not a route's.
LIMITS = {
    "stream_usage": "stream_options.include_usage: no backend that holds model {model!r} sends"
    " token counts in a stream (llama.cpp's server does not); ask without include_usage, or"
    " without stream (the answer's usage has them)",
}


def conversation_key(model: str, body: dict[str, Any]) -> str | None:
    """What the turns of one chat share: its model, system prompt and first user message
    (pool.Affinity sends them to one backend). None for a request with no user message."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    opening = []
    for message in messages:
        if not isinstance(message, dict):
            return None
        opening.append([message.get("role"), message.get("content")])
        if message.get("role") == "user":
            text = json.dumps([model, opening], sort_keys=True, ensure_ascii=False)
            return hashlib.sha256(text.encode()).hexdigest()[:32]
    return None


async def _lease(
    pool: Pool, model: str, tried: list[str], needs: tuple[str, ...], conversation: str | None
) -> Lease:
    try:
        return await pool.acquire(model, tried, needs, conversation)
    except NoSuchModel:
        raise model_not_found(model) from None
    except Incapable:
        lacking = [n for n in needs if n in LIMITS and not pool.capable(model, (n,))]
        if lacking and pool.capable(model, [n for n in needs if n not in LIMITS]):
            raise ApiError(400, LIMITS[lacking[0]].format(model=model)) from None
        raise ApiError(400, f"model {model!r} is not served for {needs[0]} on this cluster"
                       " (no backend that holds it has that capability)") from None  # fmt: skip
    except Busy:
        error = ApiError(429, f"every backend serving {model!r} is busy; retry later",
                         "rate_limit_error")  # fmt: skip
        error.headers["Retry-After"] = "1"
        raise error from None
    except NoBackend:
        raise ApiError(503, f"no healthy backend serves {model!r} now", "server_error") from None
    except Waking:
        error = ApiError(503, f"no worker serves {model!r} now and none was started in time;"
                         " one is starting, retry later", "server_error")  # fmt: skip
        error.headers["Retry-After"] = str(int(pool.config.wake_retry_after_s))
        raise error from None


@contextlib.asynccontextmanager
async def backend_call(
    request: web.Request,
    model: str,
    path_for: Callable[[Lease], tuple[str, dict[str, Any]]],
    also: tuple[str, ...] = (),
    conversation: str | None = None,
) -> AsyncIterator[tuple[Lease, aiohttp.ClientResponse]]:
    """A backend's answer (headers received) to the request; the next backend when one
    fails before its first byte. The lease is released when the caller is done. The
    backend may be sent the route's capability and each of ``also``; a ``conversation``
    goes back to the backend of its earlier turns when that one is as free as any."""
    pool = request.app[POOL]
    capability = CAPABILITY.get(request.path)
    needs = (*((capability,) if capability else ()), *also)
    tried: list[str] = []
    while True:
        lease = await _lease(pool, model, tried, needs, conversation)
        path, payload = path_for(lease)
        backend = lease.backend
        note(request, backend=backend.name)
        try:
            response = await backend.client().post(
                backend.config.url + path, json=payload, headers=backend.headers()
            )
        except RETRYABLE as exc:
            log.warning("backend %s failed before answering: %s", backend.name, exc)
            await pool.release(lease, None, f"{type(exc).__name__}: {exc}", capability)
            tried.append(backend.name)
            continue
        status: int | None = None  # a stream cut midway: no answer to judge by
        try:
            yield lease, response
            status = response.status
        except StreamCut:
            raise
        except BaseException:
            status = response.status
            raise
        finally:
            response.release()
            error = f"HTTP {status}" if status is not None else "the stream was cut"
            await pool.release(lease, status, error, capability)
        return


def backend_failed(lease: Lease, status: int) -> ApiError:
    log.warning("backend %s answered %s", lease.backend.name, status)
    return ApiError(502, f"the backend serving this model failed (HTTP {status})", "server_error")


class Recorder:
    """What was sent to the caller, for the cache: kept only when the answer completes;
    with ``semantic`` (the prompt's model-and-parameters key and vector), its vector too."""

    def __init__(self, key: str | None, semantic: tuple[str, bytes] | None = None) -> None:
        self.key = key
        self.semantic = semantic
        self.pieces: list[bytes] = []
        self.content_type = ""

    def add(self, piece: bytes) -> None:
        if self.key is not None:
            self.pieces.append(piece)

    async def keep(self, request: web.Request) -> None:
        cache = request.app[CACHE]
        if cache is None or self.key is None:
            return
        await cache.put(self.key, self.content_type, b"".join(self.pieces))
        if self.semantic is not None:
            params, vector = self.semantic
            limit = request.app[POOL].config.semantic_max_entries
            await cache.remember(params, self.key, vector, limit)


def answer_headers(recorder: Recorder, content_type: str) -> dict[str, str]:
    recorder.content_type = content_type
    headers = {"Content-Type": content_type}
    if recorder.key is not None:
        headers["X-Cache"] = "miss"
    return headers


async def pass_through(
    request: web.Request,
    response: aiohttp.ClientResponse,
    stream: bool,
    lease: Lease,
    recorder: Recorder,
) -> web.StreamResponse:
    if response.status >= 500:
        raise backend_failed(lease, response.status)
    content_type = response.headers.get("Content-Type", "application/json")
    if not stream or response.status != 200:
        body = await response.read()
        if request.path == "/v1/embeddings" and response.status == 200:
            try:
                body = json.dumps(translate.pooled(json.loads(body))).encode()
            except ValueError:
                raise backend_failed(lease, 200) from None
        answer = web.Response(
            body=body, status=response.status, headers=answer_headers(recorder, content_type)
        )
        if response.status == 200:
            note_tokens(request, body)
            recorder.add(body)
            await recorder.keep(request)
        return answer
    out = web.StreamResponse(headers={**answer_headers(recorder, content_type),
                                      "Cache-Control": "no-cache"})  # fmt: skip
    await out.prepare(request)
    started, tail = time.monotonic(), b""
    try:
        async for piece in response.content.iter_any():
            if not tail:
                note(request, ttft_ms=(time.monotonic() - started) * 1000)
            await out.write(piece)
            recorder.add(piece)
            tail = (tail + piece)[-4096:]
    except CUT as exc:
        await cut_stream(request, out, lease, exc)
    await out.write_eof()
    note_tokens(request, tail.replace(b"data: [DONE]", b""))
    await recorder.keep(request)
    return out


async def cut_stream(
    request: web.Request, out: web.StreamResponse, lease: Lease, exc: BaseException
) -> None:
    log.warning("backend %s cut a stream: %s", lease.backend.name, exc)
    with contextlib.suppress(ConnectionError, RuntimeError):
        await out.write(stream_error(request, "the backend serving this stream failed"))
        await out.write_eof()
    raise StreamCut(out) from exc


def stream_error(request: web.Request, message: str) -> bytes:
    if is_ollama(request):
        return (json.dumps({"error": message}) + "\n").encode()
    payload = {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
    return f"data: {json.dumps(payload)}\n\n".encode()


def cache_scope(request: web.Request) -> str:
    """Whose cached answers this request may get (cache.scope): an ``X-Cache: hit`` must
    not tell one tenant what another asked."""
    key, scope = request.get(API_KEY), request.app[POOL].config.cache_scope
    if key is None or scope == "shared" or (scope == "tenant" and not key.tenant):
        return ""
    return f"key:{key.id}"


async def cache_lookup(
    request: web.Request, body: dict[str, Any], model: str, stream: bool
) -> tuple[web.StreamResponse | None, Recorder]:
    """A cached answer (as a Response to prepare), or a recorder for the answer to come."""
    note(request, model=model)
    cache = request.app[CACHE]
    control = request.headers.get("Cache-Control", "")
    if cache is None or "no-cache" in control or "no-store" in control:
        return None, Recorder(None)
    pool = request.app[POOL]
    versions, scope = pool.versions(model), cache_scope(request)
    key = cache_key(request.path, versions, body, scope)
    exact = deterministic(body)
    if exact:
        hit = await cache.get(key)
        if hit is not None:
            return _replay(request, hit, stream, {"X-Cache": "hit"}), Recorder(None)
    semantic = await _semantic_probe(request, body, versions, scope)
    if semantic is not None:
        near = await cache.near(*semantic)
        if near is not None and near[1] >= pool.config.semantic_threshold:
            hit = await cache.get(near[0])
            if hit is not None:
                found = {"X-Cache": "semantic-hit", "X-Cache-Similarity": f"{near[1]:.4f}"}
                return _replay(request, hit, stream, found), Recorder(None)
    if not exact and semantic is None:
        return None, Recorder(None)
    return None, Recorder(key, semantic)


def _replay(
    request: web.Request, hit: Cached, stream: bool, headers: dict[str, str]
) -> web.Response:
    note(request, cache_hit=True)
    note_tokens(request, hit.body)
    sent = {"Content-Type": hit.content_type, **headers}
    if stream:
        sent["Cache-Control"] = "no-cache"
    return web.Response(body=hit.body, headers=sent)


async def _semantic_probe(
    request: web.Request, body: dict[str, Any], versions: list[str], scope: str
) -> tuple[str, bytes] | None:
    """The prompt's model-and-parameters key and vector, on a route where the semantic
    layer answers (semantic.py); None elsewhere, or when the vector cannot be had."""
    config = request.app[POOL].config
    if request.path not in config.semantic_routes:
        return None
    text = semantic.prompt_text(request.path, body)
    if text is None:
        return None
    vector = await semantic.embed(request.app[POOL], config.semantic_model, text)
    if vector is None:
        return None
    return semantic.params_key(request.path, versions, body, scope), vector


class _Refused(Exception):
    """A backend's own answer below 500 to one of several requests: the caller's."""

    def __init__(self, status: int, content_type: str, body: bytes) -> None:
        super().__init__(status)
        self.answer = web.Response(body=body, status=status, headers={"Content-Type": content_type})


async def several_choices(
    request: web.Request, body: dict[str, Any], model: str, count: int, recorder: Recorder
) -> web.Response:
    """``n`` above 1, which the cluster's servers do not serve (llama.cpp's server and
    Ollama answer one choice whatever ``n`` says): ``n`` requests of one choice, at once,
    each to the backend the pool picks, merged into one answer. The choices are numbered
    in order; the prompt's tokens count once and the completions' add up, as OpenAI
    counts them."""

    def path_for(lease: Lease) -> tuple[str, dict[str, Any]]:
        return request.path, {**body, "model": lease.model, "n": 1}

    async def one() -> dict[str, Any]:
        async with backend_call(request, model, path_for) as (lease, response):
            if response.status >= 500:
                raise backend_failed(lease, response.status)
            raw = await response.read()
            if response.status != 200:
                raise _Refused(response.status, response.headers.get("Content-Type", ""), raw)
            try:
                answer = json.loads(raw)
                choice = answer["choices"][0]
            except (ValueError, LookupError, TypeError):
                raise backend_failed(lease, 200) from None
            return {**answer, "choices": [choice]}

    try:
        answers = await asyncio.gather(*(one() for _ in range(count)))
    except _Refused as refused:
        return refused.answer
    merged = dict(answers[0])
    merged["choices"] = [{**a["choices"][0], "index": i} for i, a in enumerate(answers)]
    usages = [a["usage"] for a in answers if isinstance(a.get("usage"), dict)]
    if len(usages) == count:
        prompt = int(usages[0].get("prompt_tokens", 0))
        completion = sum(int(u.get("completion_tokens", 0)) for u in usages)
        merged["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion,
                           "total_tokens": prompt + completion}  # fmt: skip
    text = json.dumps(merged).encode()
    note_tokens(request, text)
    answer = web.Response(body=text, headers=answer_headers(recorder, "application/json"))
    recorder.add(text)
    await recorder.keep(request)
    return answer


async def openai_route(request: web.Request) -> web.StreamResponse:
    """POST /v1/chat/completions, /v1/completions, /v1/embeddings."""
    body = await read_body(request)
    model = model_of(body)
    stream = check_openai(request.path, body)
    count = body.get("n") or 1  # checked: an integer from 1 to 128
    several = count > 1 and not request.path.endswith("/embeddings")
    if several and stream:
        raise ApiError(400, f"n: {count} choices are not streamed by this gateway: ask for one "
                            f"choice per stream, or n without stream")  # fmt: skip
    cached, recorder = await cache_lookup(request, body, model, stream)
    if cached is not None:
        return cached
    if several:
        return await several_choices(request, body, model, count, recorder)

    def path_for(lease: Lease) -> tuple[str, dict[str, Any]]:
        return request.path, {**body, "model": lease.model}

    also = ("stream_usage",) if stream and stream_usage(body) else ()
    conversation = conversation_key(model, body)
    try:
        async with backend_call(request, model, path_for, also, conversation) as (lease, response):
            return await pass_through(request, response, stream, lease, recorder)
    except StreamCut as cut:
        return cut.response


def _model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "clusterai"}


async def openai_models(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    data = [_model_object(m) for m in pool.public_models()]
    return web.json_response({"object": "list", "data": data})


async def openai_model(request: web.Request) -> web.Response:
    """``GET /v1/models/{model}`` (the openai client's ``models.retrieve``): one model of
    the list, or a 404 as OpenAI answers for a model it does not have."""
    wanted = request.match_info["model"]
    if wanted not in request.app[POOL].public_models():
        raise model_not_found(wanted)
    return web.json_response(_model_object(wanted))
