"""Ollama's API: passed through to Ollama backends, translated both ways (streams
included) for backends that speak only the OpenAI API."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
from aiohttp import web

from clusterai_runner import __version__
from clusterai_runner.gateway import translate
from clusterai_runner.gateway.base import (
    CUT,
    POOL,
    ApiError,
    StreamCut,
    log,
    model_not_found,
    note,
    note_tokens,
)
from clusterai_runner.gateway.checks import check_parameters, model_of, read_body
from clusterai_runner.gateway.pool import Lease
from clusterai_runner.gateway.proxy import (
    Recorder,
    answer_headers,
    backend_call,
    backend_failed,
    cache_lookup,
    conversation_key,
    cut_stream,
    pass_through,
)

OLLAMA_ROUTES = {
    "/api/chat": ("/v1/chat/completions", translate.chat_request, translate.chat_answer),
    "/api/generate": ("/v1/completions", translate.generate_request, translate.generate_answer),
}


# Request and answer converters of the embedding routes, for OpenAI-API backends.
EMBEDDINGS = {
    "/api/embed": (translate.embed_request, translate.embed_answer),
    "/api/embeddings": (translate.legacy_embedding_request, translate.legacy_embedding_answer),
}


async def ollama_route(request: web.Request) -> web.StreamResponse:
    """POST /api/chat, /api/generate, /api/embed, /api/embeddings: as they are to Ollama
    backends, and translated for backends that speak the OpenAI API."""
    body = await read_body(request)
    model = model_of(body)
    try:
        # Check the request once, before any backend is chosen.
        if request.path in EMBEDDINGS:
            EMBEDDINGS[request.path][0](body, model)
            stream = False
        else:
            check_parameters(OLLAMA_ROUTES[request.path][1](body, model))
            stream = translate.streaming(body)
    except translate.BadRequest as exc:
        raise ApiError(400, str(exc)) from None
    if request.path == "/api/generate" and not body.get("prompt") and not body.get("system"):
        # Ollama's way to load a model: an empty prompt answers at once, empty.
        if not request.app[POOL].serves(model):
            raise model_not_found(model)
        answer = {"model": model, "created_at": translate.now(), "response": "", "done": True,
                  "done_reason": "load"}  # fmt: skip
        return web.json_response(answer)
    cached, recorder = await cache_lookup(request, body, model, stream)
    if cached is not None:
        return cached

    def path_for(lease: Lease) -> tuple[str, dict[str, Any]]:
        if lease.backend.config.api == "ollama":
            return request.path, {**body, "model": lease.model}
        if request.path in EMBEDDINGS:
            return "/v1/embeddings", EMBEDDINGS[request.path][0](body, lease.model)
        path, convert, _ = OLLAMA_ROUTES[request.path]
        return path, convert(body, lease.model)

    started = time.monotonic()
    conversation = conversation_key(model, body)
    try:
        async with backend_call(request, model, path_for, (), conversation) as (lease, response):
            if lease.backend.config.api == "ollama":
                return await pass_through(request, response, stream, lease, recorder)
            if response.status >= 500:
                raise backend_failed(lease, response.status)
            if response.status != 200:
                detail = await response.text()
                raise ApiError(response.status, f"the backend refused the request: {detail[:500]}")
            if request.path in EMBEDDINGS:
                answer = EMBEDDINGS[request.path][1](await response.json(), model)
            elif not stream:
                answer = OLLAMA_ROUTES[request.path][2](await response.json(), model, started)
            else:
                kind = "chat" if request.path == "/api/chat" else "generate"
                return await _translate_stream(request, response, lease, kind, model, recorder)
            encoded = json.dumps(answer).encode()
            note_tokens(request, encoded)
            recorder.add(encoded)
            await recorder.keep(request)
            return web.Response(body=encoded, headers=answer_headers(recorder, "application/json"))
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
    out = web.StreamResponse(headers=answer_headers(recorder, "application/x-ndjson"))
    await out.prepare(request)

    started = time.monotonic()

    async def send(line: dict[str, Any]) -> None:
        if translator.pieces == 1 and not line.get("done"):
            note(request, ttft_ms=(time.monotonic() - started) * 1000)
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
        await cut_stream(request, out, lease, exc)
    last = translator.last()
    note(request, prompt_tokens=last["prompt_eval_count"], completion_tokens=last["eval_count"])
    await send(last)
    await out.write_eof()
    await recorder.keep(request)
    return out


async def ollama_tags(request: web.Request) -> web.Response:
    models = [{"name": m, "model": m} for m in request.app[POOL].public_models()]
    return web.json_response({"models": models})


# Fields of an Ollama backend's /api/ps entry that describe the model, not the one server.
PS_FIELDS = ("digest", "details", "expires_at", "context_length")


async def ollama_ps(request: web.Request) -> web.Response:
    """GET /api/ps: each model some healthy backend holds in memory. Where Ollama backends
    hold it, their entry's fields, with ``size`` and ``size_vram`` added up over them: the
    cluster's memory spent on the model, and the part of it on GPUs. A model only
    OpenAI-API backends hold (llama.cpp's server, which reports no sizes) has no sizes:
    nothing the gateway does not know."""
    pool = request.app[POOL]
    found: dict[str, dict[str, Any]] = {}
    for backend in pool.backends:
        if not backend.healthy:
            continue
        for name in sorted(backend.loaded):
            entry = found.setdefault(name, {"name": name, "model": name})
            running = backend.running.get(name)
            if running is None:
                continue
            for key in PS_FIELDS:
                if key in running and key not in entry:
                    entry[key] = running[key]
            for key in ("size", "size_vram"):
                if isinstance(running.get(key), int):
                    entry[key] = entry.get(key, 0) + running[key]
    return web.json_response({"models": [found[m] for m in sorted(found)]})


# What Ollama answers for details it does not know.
UNKNOWN_DETAILS = {"parent_model": "", "format": "", "family": "", "families": None,
                   "parameter_size": "", "quantization_level": ""}  # fmt: skip
SHOW_TIMEOUT = aiohttp.ClientTimeout(total=10)


async def ollama_show(request: web.Request) -> web.Response:
    """POST /api/show: a model's details, as an Ollama backend that lists it tells them.
    A model that only OpenAI-API backends serve (llama.cpp's server, hosted providers,
    which say nothing of it) gets Ollama's empty fields and the capabilities the gateway
    sends there (``completion``, ``embedding``): nothing it does not know."""
    body = await read_body(request)
    name = model_of({"model": body.get("model") or body.get("name")})  # older clients: name
    pool = request.app[POOL]
    if not pool.serves(name):
        raise model_not_found(name)
    for lease in pool.listing(name):
        backend = lease.backend
        if backend.config.api != "ollama":
            continue
        try:
            async with backend.client().post(
                backend.config.url + "/api/show",
                json={**body, "model": lease.model},
                headers=backend.headers(),
                timeout=SHOW_TIMEOUT,
            ) as response:
                if response.status == 200:
                    return web.json_response(await response.json())
                log.warning("backend %s answered /api/show with %s", backend.name, response.status)
        except (*CUT, ValueError) as exc:  # unreachable, cut, or not JSON
            log.warning("backend %s could not show %s: %s", backend.name, lease.model, exc)
    sent = pool.capabilities(name)
    capabilities = [c for c, needs in (("completion", {"chat", "completions"}),
                                       ("embedding", {"embeddings"})) if sent & needs]  # fmt: skip
    answer = {"modelfile": "", "parameters": "", "template": "", "details": UNKNOWN_DETAILS,
              "model_info": {}, "capabilities": capabilities}  # fmt: skip
    return web.json_response(answer)


# Ollama's model management, which the gateway does not pass on to a worker: what each
# worker holds is its inventory's (ollama_models), put there by `clusterai models`.
MANAGEMENT = ("/api/pull", "/api/push", "/api/create", "/api/copy", "/api/delete")


async def ollama_manage(request: web.Request) -> web.Response:
    """POST /api/pull, /api/push, /api/create, /api/copy, DELETE /api/delete and the
    blob routes: a 400 that says where models are managed, never a silent 404."""
    raise ApiError(
        400,
        f"{request.method} {request.path}: the cluster's gateway does not manage models; what"
        " each worker holds is its inventory's: list the model in a group's ollama_models and"
        " run `clusterai models pull MODEL` (with the model store, the control host fetches it"
        " once)",
    )


async def ollama_version(_request: web.Request) -> web.Response:
    return web.json_response({"version": __version__})
