"""The answer cache's semantic layer, opt-in per route (``cache.semantic.routes``): a
request on such a route whose prompt means the same as one answered before, for the same
model (and content digest), parameters and scope, gets that answer, with ``X-Cache:
semantic-hit`` and the cosine similarity in ``X-Cache-Similarity``.

The prompt's text (a chat's messages, role by role; a completion's prompt) is embedded by
``cache.semantic.model``, an embedding model of the cluster, through the gateway's own
pool; the vector, normalised, is compared with those of the answers kept for the same
model and parameters (at most ``max_entries`` of them, the oldest forgotten first), and
the nearest at or above ``threshold`` (default 0.95) is served from the exact cache, where
the answer is kept under its own key. On a route that allows it, every complete answer is
kept, deterministic or not: the operator said near enough is good enough there.

The vectors live where the exact cache does: SQLite (a table beside the answers, on the
cache's worker thread) or Redis (a sorted set by time and a hash of vectors per model
and parameters). An embedding that cannot be had (the model busy, down, or without
embeddings) is a miss, never an error.
"""

from __future__ import annotations

import array
import hashlib
import json
import math
from typing import TYPE_CHECKING, Any

import aiohttp

from clusterai_runner.gateway.config import PROMPT_FIELDS

if TYPE_CHECKING:
    from clusterai_runner.gateway.pool import Pool

EMBED_TIMEOUT = aiohttp.ClientTimeout(total=30)


def prompt_text(route: str, body: dict[str, Any]) -> str | None:
    """What the request asks, as one text to embed; None where there is nothing to compare."""
    if route not in PROMPT_FIELDS:
        return None
    messages = body.get("messages")
    if isinstance(messages, list):
        lines = [f"{m.get('role')}: {m.get('content')}" for m in messages if isinstance(m, dict)]
        return "\n".join(lines) or None
    parts = [body.get(f) for f in PROMPT_FIELDS[route] if isinstance(body.get(f), str)]
    return "\n\n".join(str(p) for p in parts if p) or None


def params_key(route: str, versions: list[str], body: dict[str, Any], scope: str) -> str:
    """Everything but the prompt: answers are compared only with those of the same route,
    model versions, parameters and scope."""
    rest = {k: v for k, v in body.items() if k not in ("model", *PROMPT_FIELDS.get(route, ()))}
    text = json.dumps({"route": route, "models": versions, "body": rest, "scope": scope},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()


def normalised(vector: list[float]) -> bytes | None:
    norm = math.sqrt(sum(x * x for x in vector))
    if not vector or norm == 0:
        return None
    return array.array("f", (x / norm for x in vector)).tobytes()


def similarity(a: bytes, b: bytes) -> float:
    """The cosine similarity of two normalised vectors as ``normalised`` packs them."""
    left, right = array.array("f", a), array.array("f", b)
    if len(left) != len(right):
        return -1.0
    return sum(x * y for x, y in zip(left, right, strict=True))


def nearest(probe: bytes, kept: list[tuple[str, bytes]]) -> tuple[str, float] | None:
    best: tuple[str, float] | None = None
    for key, vector in kept:
        score = similarity(probe, vector)
        if best is None or score > best[1]:
            best = (key, score)
    return best


async def embed(pool: Pool, model: str, text: str) -> bytes | None:
    """The prompt's vector from the cluster's embedding model, normalised; None when it
    cannot be had now."""
    from clusterai_runner.gateway.pool import Busy, Incapable, NoBackend, NoSuchModel, Waking
    from clusterai_runner.gateway.translate import pooled

    try:
        lease = await pool.acquire(model, (), ("embeddings",))
    except (NoSuchModel, Incapable, Busy, NoBackend, Waking):
        return None
    backend, status = lease.backend, None
    try:
        async with backend.client().post(
            backend.config.url + "/v1/embeddings",
            json={"model": lease.model, "input": [text]},
            headers=backend.headers(),
            timeout=EMBED_TIMEOUT,
        ) as response:
            status = response.status
            if status != 200:
                return None
            rows = pooled(await response.json()).get("data") or [{}]
            vector = rows[0].get("embedding")
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    finally:
        await pool.release(lease, status, "semantic cache embedding", "embeddings")
    if not isinstance(vector, list) or not all(isinstance(x, int | float) for x in vector):
        return None
    return normalised([float(x) for x in vector])
