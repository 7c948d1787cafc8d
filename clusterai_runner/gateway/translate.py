"""Ollama's API in terms of the OpenAI API, for backends that speak only the latter
(llama.cpp's server, hosted providers). Pure functions of JSON values.

Requests: ``/api/chat`` becomes ``/v1/chat/completions``, ``/api/generate`` becomes
``/v1/completions`` (``system`` is put before the prompt), ``/api/embed`` and the legacy
``/api/embeddings`` become ``/v1/embeddings``; Ollama's ``options`` map to the OpenAI
fields of the same meaning.
Answers, whole or streamed, come back in Ollama's shapes.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

# Ollama option -> OpenAI field.
OPTIONS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "stop": "stop",
    "num_predict": "max_tokens",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}


ROLES = ("system", "user", "assistant", "tool")


class BadRequest(ValueError):
    """The request cannot be served as given (400); the message names the field."""


def _options(body: dict[str, Any]) -> dict[str, Any]:
    options = body.get("options")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise BadRequest("options must be an object")
    mapped = {OPTIONS[k]: v for k, v in options.items() if k in OPTIONS}
    if mapped.get("max_tokens") == -1:
        del mapped["max_tokens"]
    if body.get("format") == "json":
        mapped["response_format"] = {"type": "json_object"}
    return mapped


def streaming(body: dict[str, Any]) -> bool:
    """Ollama streams unless told not to."""
    value = body.get("stream", True)
    if not isinstance(value, bool):
        raise BadRequest("stream must be true or false")
    return value


def chat_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list")
    converted = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise BadRequest(f"messages[{index}] must be an object with a role: {', '.join(ROLES)}")
        content = message.get("content", "")
        if not isinstance(content, str):
            raise BadRequest(f"messages[{index}].content must be a string")
        converted.append({"role": message["role"], "content": content})
    request = {"model": model, "messages": converted, "stream": streaming(body), **_options(body)}
    if request["stream"]:
        request["stream_options"] = {"include_usage": True}
    return request


def generate_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    prompt = body.get("prompt", "")
    system = body.get("system") or ""
    if not isinstance(prompt, str) or not isinstance(system, str):
        raise BadRequest("prompt and system must be strings")
    text = f"{system}\n\n{prompt}" if system else prompt
    request = {"model": model, "prompt": text, "stream": streaming(body), **_options(body)}
    if request["stream"]:
        request["stream_options"] = {"include_usage": True}
    return request


def embed_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    text = body.get("input", body.get("prompt"))
    if isinstance(text, str):
        text = [text]
    if not isinstance(text, list) or not text or not all(isinstance(t, str) and t for t in text):
        raise BadRequest("input must be a non-empty string or list of non-empty strings")
    return {"model": model, "input": text}


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _usage(answer: dict[str, Any]) -> dict[str, int]:
    usage = answer.get("usage") or {}
    return {
        "prompt_eval_count": int(usage.get("prompt_tokens") or 0),
        "eval_count": int(usage.get("completion_tokens") or 0),
    }


def _done(public: str, reason: str | None, started: float) -> dict[str, Any]:
    return {
        "model": public,
        "created_at": now(),
        "done": True,
        "done_reason": reason or "stop",
        "total_duration": int((time.monotonic() - started) * 1e9),
    }


def chat_answer(answer: dict[str, Any], public: str, started: float) -> dict[str, Any]:
    choice = (answer.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    return {
        **_done(public, choice.get("finish_reason"), started),
        "message": {
            "role": message.get("role") or "assistant",
            "content": message.get("content") or "",
        },
        **_usage(answer),
    }


def generate_answer(answer: dict[str, Any], public: str, started: float) -> dict[str, Any]:
    choice = (answer.get("choices") or [{}])[0]
    return {
        **_done(public, choice.get("finish_reason"), started),
        "response": choice.get("text") or "",
        **_usage(answer),
    }


def embed_answer(answer: dict[str, Any], public: str) -> dict[str, Any]:
    rows = sorted(pooled(answer).get("data") or [], key=lambda r: r.get("index", 0))
    return {
        "model": public,
        "embeddings": [r.get("embedding") for r in rows],
        "prompt_eval_count": int((answer.get("usage") or {}).get("prompt_tokens") or 0),
    }


def legacy_embedding_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    """Ollama's legacy ``/api/embeddings``: one ``prompt``, one vector back."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise BadRequest("prompt is required: a non-empty string")
    return {"model": model, "input": [prompt]}


def legacy_embedding_answer(answer: dict[str, Any], _public: str) -> dict[str, Any]:
    """The legacy answer names no model (``_public``: as ``embed_answer`` is called)."""
    rows = pooled(answer).get("data") or [{}]
    return {"embedding": rows[0].get("embedding")}


class StreamTranslator:
    """OpenAI stream chunks in, Ollama stream lines out: one per piece of text, then a
    last one with ``done: true``, the finish reason and the token counts."""

    def __init__(self, kind: str, public: str) -> None:
        self.kind = kind  # chat or generate
        self.public = public
        self.started = time.monotonic()
        self.reason: str | None = None
        self.usage: dict[str, int] = {"prompt_eval_count": 0, "eval_count": 0}
        self.pieces = 0

    def chunk(self, chunk: dict[str, Any]) -> dict[str, Any] | None:
        if chunk.get("usage"):
            self.usage = _usage(chunk)
        choices = chunk.get("choices") or []
        if not choices:
            return None
        choice = choices[0]
        if choice.get("finish_reason"):
            self.reason = choice["finish_reason"]
        if self.kind == "chat":
            text = (choice.get("delta") or {}).get("content")
        else:
            text = choice.get("text")
        if not text:
            return None
        self.pieces += 1
        line: dict[str, Any] = {"model": self.public, "created_at": now(), "done": False}
        if self.kind == "chat":
            line["message"] = {"role": "assistant", "content": text}
        else:
            line["response"] = text
        return line

    def last(self) -> dict[str, Any]:
        line = {**_done(self.public, self.reason, self.started), **self.usage}
        if self.kind == "chat":
            line["message"] = {"role": "assistant", "content": ""}
        else:
            line["response"] = ""
        if self.usage["eval_count"] == 0:
            line["eval_count"] = self.pieces
        return line


def pooled(answer: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI embeddings answer with one vector per input: a backend that returns one
    vector per token (llama-cpp-python's server for a model without pooling) gets its
    vectors averaged, as Ollama and hosted APIs do."""
    for row in answer.get("data") or []:
        vectors = row.get("embedding") if isinstance(row, dict) else None
        if isinstance(vectors, list) and vectors and isinstance(vectors[0], list):
            width = len(vectors[0])
            row["embedding"] = [sum(v[i] for v in vectors) / len(vectors) for i in range(width)]
    return answer
