"""Request checks before any backend sees a body: JSON, the model, messages and the
sampling parameters (a client's mistake must never eject a backend)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from clusterai_runner.gateway.base import ApiError


async def read_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()  # over client_max_size: 413, from the middleware
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def model_of(body: dict[str, Any]) -> str:
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


def check_parameters(body: dict[str, Any]) -> None:
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


def check_openai(path: str, body: dict[str, Any]) -> bool:
    """Check the fields the gateway relies on; returns whether the answer streams."""
    check_parameters(body)
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
    options = body.get("stream_options")
    if options is not None:
        if not stream:
            raise ApiError(400, "stream_options is only allowed when stream is true")
        usage = options.get("include_usage", False) if isinstance(options, dict) else None
        if not isinstance(usage, bool):
            raise ApiError(400, "stream_options must be an object; include_usage true or false")
    return stream is True


def stream_usage(body: dict[str, Any]) -> bool:
    """Whether a (checked) streamed request asks for the token counts in a last chunk."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True
