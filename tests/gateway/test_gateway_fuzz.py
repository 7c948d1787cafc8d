"""Random and malformed bodies at every route of a running gateway: never a 5xx, never a
crash, and every error in the caller's API format."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gateway.conftest import Gateway
from tests.gateway.test_gateway import post_full

POST_ROUTES = [
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings",
    "/api/chat", "/api/generate", "/api/embed",
]  # fmt: skip
GET_ROUTES = ["/v1/models", "/api/tags", "/api/ps", "/api/version", "/healthz"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False),
    st.text(max_size=20),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
message = st.fixed_dictionaries(
    {"role": st.one_of(st.sampled_from(["user", "system", "assistant"]), values)},
    optional={"content": st.one_of(st.text(max_size=30), values)},
)


# Near-valid requests: the right field names with wrong or odd values. Generation stays
# short: a request that is valid but asks for unbounded generation (no max_tokens or
# num_predict, or Ollama's -1 and -2) is slow, not malformed, and under load ran past the
# client's timeout: every near-valid body asks for 3 tokens at most, in both APIs' fields.
def bounded(body: dict[str, Any]) -> dict[str, Any]:
    body.setdefault("max_tokens", 3)
    options = body.setdefault("options", {})
    if isinstance(options, dict):
        options.setdefault("num_predict", 3)
    return body


near_valid = st.fixed_dictionaries(
    {"model": st.one_of(st.just("smollm2"), st.just("nope"), values)},
    optional={
        "messages": st.one_of(st.lists(message, max_size=3), values),
        "prompt": st.one_of(st.text(max_size=30), values),
        "input": st.one_of(st.text(max_size=30), values),
        "stream": st.one_of(st.booleans(), values),
        "max_tokens": st.integers(-3, 3),
        "temperature": st.one_of(st.floats(-1, 3), values),
        "options": st.one_of(
            st.fixed_dictionaries({}, optional={"num_predict": st.integers(1, 3),
                                                "temperature": values, "seed": values}),
            values,
        ),
    },
)  # fmt: skip
bodies = st.one_of(
    st.binary(max_size=64),
    values.map(lambda v: json.dumps(v).encode()),
    near_valid.map(lambda v: json.dumps(bounded(v)).encode()),
)


def check_error_shape(path: str, status: int, answer: bytes) -> None:
    if status < 400:
        return
    error: Any = json.loads(answer)["error"]
    if path.startswith("/api/"):
        assert isinstance(error, str) and error
    else:
        assert isinstance(error["message"], str) and error["message"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(POST_ROUTES), body=bodies)
def test_no_body_makes_a_5xx(gateway: Gateway, path: str, body: bytes) -> None:
    status, _, answer = post_full(gateway.url + path, body)
    assert status < 500, (path, body, status, answer[:500])
    check_error_shape(path, status, answer)


@settings(max_examples=40, deadline=None)
@given(
    path=st.sampled_from(GET_ROUTES + POST_ROUTES),
    method=st.sampled_from(["GET", "PUT", "DELETE", "PATCH"]),
)
def test_other_methods_are_4xx(gateway: Gateway, path: str, method: str) -> None:
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(gateway.url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=30)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        status, answer = response.status, response.read()
    finally:
        connection.close()
    if method == "GET" and path in GET_ROUTES:
        assert status == 200
    else:
        assert 400 <= status < 500, (method, path, status)
        check_error_shape(path, status, answer)


@settings(max_examples=40, deadline=None)
@given(model=st.text(min_size=1, max_size=40))
def test_any_model_id_is_found_or_a_404(gateway: Gateway, model: str) -> None:
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(gateway.url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=30)
    path = "/v1/models/" + urllib.parse.quote(model, safe="")
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        status, answer = response.status, response.read()
    finally:
        connection.close()
    assert status in (200, 404), (model, status, answer[:200])
    if status == 404:
        check_error_shape(path, status, answer)
