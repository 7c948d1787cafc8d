"""The gateway in front of two real llama.cpp servers, driven by the official clients."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import ollama
import openai
import pytest

from tests.gateway.conftest import (
    Gateway,
    Server,
    start_gateway,
    start_server,
    stop,
)
from tests.helpers import wait_for

CHAT = [{"role": "user", "content": "Say hello."}]


def post_full(
    url: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a POST."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=60)
    try:
        sent = {"Content-Type": "application/json", **(headers or {})}
        connection.request("POST", parts.path, body, sent)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def post(url: str, body: bytes) -> tuple[int, bytes]:
    status, _, answer = post_full(url, body)
    return status, answer


def openai_client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)


def test_openai_client_chat_stream_and_models(gateway: Gateway) -> None:
    with openai_client(gateway) as client:
        check_openai_client(client)


def check_openai_client(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["smollm2"]
    answer = client.chat.completions.create(
        model="smollm2",
        messages=CHAT,
        max_tokens=8,
        temperature=0,  # type: ignore[arg-type]
    )
    assert answer.choices[0].message.content
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    pieces = [
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(
            model="smollm2",
            messages=CHAT,
            max_tokens=8,
            temperature=0,
            stream=True,  # type: ignore[arg-type]
        )
        if chunk.choices
    ]
    assert len(pieces) > 1 and "".join(pieces)
    text = client.completions.create(model="smollm2", prompt="Once upon", max_tokens=4)
    assert text.choices[0].text
    # llama.cpp's server answers one choice whatever n says; the gateway asks twice.
    two = client.chat.completions.create(model="smollm2", messages=CHAT, max_tokens=4, n=2)
    assert [c.index for c in two.choices] == [0, 1] and all(c.message.content for c in two.choices)
    assert two.usage is not None and two.usage.completion_tokens >= 2  # one or more each
    with pytest.raises(openai.BadRequestError, match="choices are not streamed"):
        client.chat.completions.create(model="smollm2", messages=CHAT, n=2, stream=True)
    # llama.cpp's server sends no token counts in a stream: a 400 that says so, not a
    # stream without the usage chunk the client asked for.
    with pytest.raises(openai.BadRequestError, match="include_usage: no backend"):
        client.chat.completions.create(
            model="smollm2", messages=CHAT, stream=True, stream_options={"include_usage": True}
        )
    vectors = client.embeddings.create(model="smollm2", input=["cat", "a longer sentence"])
    assert len(vectors.data) == 2
    assert len(vectors.data[0].embedding) == len(vectors.data[1].embedding) > 100
    assert all(isinstance(x, float) for x in vectors.data[0].embedding)


def test_ollama_client_chat_generate_stream_and_tags(gateway: Gateway) -> None:
    with ollama.Client(host=gateway.url) as client:
        check_ollama_client(client)


def check_ollama_client(client: ollama.Client) -> None:
    assert [m.model for m in client.list().models] == ["smollm2"]
    answer = client.chat(model="smollm2", messages=CHAT, options={"num_predict": 8})
    assert answer.message.content and answer.done
    assert answer.eval_count and answer.eval_count > 0
    streamed = list(
        client.chat(model="smollm2", messages=CHAT, stream=True, options={"num_predict": 8})
    )
    assert streamed[-1].done and len(streamed) > 2
    assert "".join(part.message.content or "" for part in streamed)
    generated = client.generate(model="smollm2", prompt="Once upon", options={"num_predict": 4})
    assert generated.response and generated.done
    parts = list(client.generate(model="smollm2", prompt="Once", stream=True,
                                 options={"num_predict": 4}))  # fmt: skip
    assert parts[-1].done and "".join(p.response for p in parts)
    assert client.ps().models[0].model == "smollm2"
    embedded = client.embed(model="smollm2", input=["cat", "dog"])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) > 100
    # The legacy route, which LangChain and editor plugins still call: one vector.
    legacy = client.embeddings(model="smollm2", prompt="cat")
    assert len(legacy.embedding) == len(embedded.embeddings[0])
    assert all(isinstance(x, float) for x in legacy.embedding)
    # llama.cpp's server tells nothing of its model: Ollama's empty fields, and what the
    # gateway sends it (it has answered embeddings by now).
    shown = client.show("smollm2")
    assert shown.capabilities == ["completion", "embedding"] and shown.modelfile == ""


@pytest.mark.parametrize(
    ("path", "body", "status", "expected"),
    [
        ("/v1/chat/completions", b"{not json", 400, "not valid JSON"),
        ("/v1/chat/completions", b"[1, 2]", 400, "must be a JSON object"),
        ("/v1/chat/completions", b'{"messages": []}', 400, "model is required"),
        ("/v1/chat/completions", b'{"model": "smollm2"}', 400, "messages is required"),
        ("/v1/chat/completions", b'{"model": "nope", "messages": [{"role": "user", "content":'
         b' "hi"}]}', 404, "model 'nope' not found"),
        ("/v1/chat/completions", b'{"model": "smollm2", "messages": [{"role": "user", '
         b'"content": "hi"}], "stream": "yes"}', 400, "stream must be true or false"),
        ("/v1/chat/completions", b'{"model": "smollm2", "messages": [{"role": "robot", '
         b'"content": "hi"}]}', 400, "messages[0].role must be one of"),
        ("/v1/embeddings", b'{"model": "smollm2", "input": ""}', 400, "input is required"),
        ("/api/embeddings", b'{"model": "smollm2", "prompt": ""}', 400, "prompt is required"),
        ("/api/chat", b'{"model": "smollm2", "messages": "hi"}', 400, "messages must be"),
        ("/api/generate", b'{"model": 7}', 400, "model is required"),
        ("/api/chat", b"{", 400, "not valid JSON"),
    ],
)  # fmt: skip
def test_client_mistakes_are_4xx_in_the_callers_format(
    gateway: Gateway, path: str, body: bytes, status: int, expected: str
) -> None:
    code, answer = post(gateway.url + path, body)
    assert code == status
    error = json.loads(answer)["error"]
    message = error if path.startswith("/api/") else error["message"]
    assert expected in message


def test_a_body_over_the_limit_is_413(gateway: Gateway) -> None:
    body = b'{"model": "smollm2", "pad": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    code, answer = post(gateway.url + "/v1/chat/completions", body)
    assert code == 413
    assert "is over" in json.loads(answer)["error"]["message"]


def test_drain_under_load_fails_nothing_and_sends_the_backend_nothing_new(
    gateway: Gateway, servers: list[Server]
) -> None:
    with openai_client(gateway) as client:
        drain_under_load(gateway, servers, client)


def drain_under_load(gateway: Gateway, servers: list[Server], client: openai.OpenAI) -> None:
    failures: list[str] = []
    done = threading.Event()
    counts = {"ok": 0}
    lock = threading.Lock()

    def load() -> None:
        while not done.is_set():
            try:
                client.chat.completions.create(
                    model="smollm2",
                    messages=CHAT,
                    max_tokens=2,  # type: ignore[arg-type]
                )
                with lock:
                    counts["ok"] += 1
            except Exception as exc:  # every failure is a finding
                failures.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(20)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: counts["ok"] >= 40, 120, "the load to be under way")
        drained = servers[0]
        answer = gateway.admin("POST", f"/admin/backends/{drained.name}/drain", {"wait_s": 60})
        assert answer["idle"] is True and answer["backend"]["draining"] is True
        seen_by_gateway = gateway.backend(drained.name)["requests"]
        seen_by_server = drained.requests_seen()
        after_drain = counts["ok"]
        wait_for(lambda: counts["ok"] >= after_drain + 60, 120, "60 answers while drained")
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=120)
    try:
        assert failures == []
        assert counts["ok"] > 20  # the load ran
        assert gateway.backend(drained.name)["requests"] == seen_by_gateway
        assert drained.requests_seen() == seen_by_server
        assert servers[1].requests_seen() > 0
    finally:
        gateway.admin("POST", f"/admin/backends/{drained.name}/undrain")


def test_a_killed_backend_ends_its_stream_with_an_error_and_new_requests_go_elsewhere(
    llama_assets: tuple[Path, Path], tmp_path: Path
) -> None:
    pair = [start_server(*llama_assets, name, tmp_path) for name in ("doomed", "survivor")]
    gateway = start_gateway(pair, tmp_path)
    try:
        with openai_client(gateway) as client:
            kill_mid_stream(gateway, pair, client)
    finally:
        stop(gateway.process)
        for server in pair:
            stop(server.process)


def kill_mid_stream(gateway: Gateway, pair: list[Server], client: openai.OpenAI) -> None:
    # Long enough that the server cannot have written all of it into the kernel's socket
    # buffers (where it would outlive the kill) by the time it is killed: 1,500 tokens,
    # SmolLM2's end tokens (0 and 2) banned.
    stream = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Write a long story about a cat."}],
        max_tokens=1500,
        logit_bias={"0": -100, "2": -100},
        stream=True,
    )
    first = next(iter(stream))
    assert first.choices
    serving = [b for b in gateway.admin("GET", "/admin/backends")["backends"]
               if b["outstanding"] == 1]  # fmt: skip
    assert len(serving) == 1
    victim = next(s for s in pair if s.name == serving[0]["name"])
    other = next(s for s in pair if s is not victim)
    started = time.monotonic()
    victim.kill()
    with pytest.raises(openai.APIError, match="the backend serving this stream failed"):
        for _chunk in stream:
            pass
    assert time.monotonic() - started < 30  # an error, not a hang
    before = other.requests_seen()
    for _ in range(5):
        answer = client.chat.completions.create(
            model="smollm2",
            messages=CHAT,
            max_tokens=2,  # type: ignore[arg-type]
        )
        assert answer.choices[0].message.content is not None
    assert other.requests_seen() == before + 5
    health: dict[str, Any] = gateway.backend(victim.name)
    assert health["healthy"] is False


def test_a_deterministic_request_is_answered_again_from_the_cache_without_a_backend(
    llama_assets: tuple[Path, Path], tmp_path: Path
) -> None:
    server = start_server(*llama_assets, "cached", tmp_path)
    gateway = start_gateway([server], tmp_path)
    try:
        chat = b'{"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}],' \
               b' "max_tokens": 6, "temperature": 0}'  # fmt: skip
        # Same request, other key order and spacing: the same cache entry.
        again = b'{"temperature":0,"max_tokens":6,"messages":[{"content":"Hi","role":"user"}],' \
                b'"model":"smollm2"}'  # fmt: skip
        stream = b'{"model": "smollm2", "prompt": "Once", "options": {"seed": 3,' \
                 b' "num_predict": 6}}'  # fmt: skip
        first = post_full(gateway.url + "/v1/chat/completions", chat)
        first_stream = post_full(gateway.url + "/api/generate", stream)
        assert first[1]["X-Cache"] == "miss" and first_stream[1]["X-Cache"] == "miss"
        assert first_stream[2].count(b"\n") > 2  # a stream of lines
        stop(server.process)  # no backend from here on
        for path, body, expected in (
            ("/v1/chat/completions", chat, first),
            ("/v1/chat/completions", again, first),
            ("/api/generate", stream, first_stream),
        ):
            status, headers, answer = post_full(gateway.url + path, body)
            assert (status, headers["X-Cache"]) == (200, "hit"), answer
            assert answer == expected[2]  # byte for byte
        # Not deterministic, or opted out: not from the cache, so no backend answers.
        status, _, _ = post_full(gateway.url + "/v1/chat/completions", chat.replace(
            b'"temperature": 0', b'"temperature": 0.7'))  # fmt: skip
        assert status == 503
        status, _, _ = post_full(gateway.url + "/v1/chat/completions", chat,
                                 {"Cache-Control": "no-cache"})  # fmt: skip
        assert status == 503
    finally:
        stop(gateway.process)
        stop(server.process)


def test_metrics_show_requests_backends_and_the_cache(gateway: Gateway) -> None:
    post(gateway.url + "/v1/chat/completions", b'{"model": "smollm2", "messages": [{"role":'
         b' "user", "content": "Hi"}], "max_tokens": 2}')  # fmt: skip
    with urllib.request.urlopen(gateway.url + "/metrics", timeout=30) as response:
        text = response.read().decode()
    assert 'clusterai_gateway_requests_total{route="/v1/chat/completions",status="200"}' in text
    assert 'clusterai_gateway_backend_up{backend="llama1"} 1' in text
    assert 'clusterai_gateway_cache_lookups_total{result="miss"}' in text
    assert "clusterai_gateway_request_duration_seconds_bucket" in text


def test_gateway_replicas_share_answers_through_redis(
    servers: list[Server], tmp_path: Path, redis_url: str
) -> None:
    cache = {"redis_url": redis_url}
    first = start_gateway(servers, tmp_path, cache=cache)
    second = start_gateway(servers, tmp_path, cache=cache)
    try:
        body = (b'{"model": "smollm2", "messages": [{"role": "user", "content": "Hello"}],'
                b' "max_tokens": 5, "seed": 11}')  # fmt: skip
        miss = post_full(first.url + "/v1/chat/completions", body)
        hit = post_full(second.url + "/v1/chat/completions", body)
        assert (miss[0], miss[1]["X-Cache"]) == (200, "miss")
        assert (hit[0], hit[1]["X-Cache"]) == (200, "hit")
        assert hit[2] == miss[2]
    finally:
        stop(first.process)
        stop(second.process)


def test_sighup_reloads_the_backends_without_dropping_a_stream(
    servers: list[Server], tmp_path: Path
) -> None:
    first, second = servers
    listed = tmp_path / "backends.yml"

    def backends_file(*names: Server, aliases: dict[str, list[str]] | None = None) -> None:
        entries = [{"name": s.name, "url": s.url, "api": "openai"} for s in names]
        listed.write_text(json.dumps({"backends": entries, "aliases": aliases or {}}))

    backends_file(second)
    gateway = start_gateway([first], tmp_path, backends_file=str(listed))
    try:

        def names() -> list[str]:
            return sorted(b["name"] for b in gateway.admin("GET", "/admin/backends")["backends"])

        with openai_client(gateway) as client:
            assert names() == sorted([first.name, second.name])
            assert open_connections(first, gateway.process) >= 1  # the probes' kept-alive one
            # A stream on the second server while a reload takes that server away.
            gateway.admin("POST", f"/admin/backends/{first.name}/drain", {"wait_s": 0})
            # Drained and idle: the gateway keeps no connection open to it (what a
            # scale-in then waits for on the worker is only other clients').
            wait_until(lambda: open_connections(first, gateway.process) == 0, 10)
            stream = client.chat.completions.create(
                model="smollm2", messages=CHAT, max_tokens=40, stream=True
            )
            assert next(iter(stream)).choices
            gateway.admin("POST", f"/admin/backends/{first.name}/undrain")
            backends_file()
            gateway.process.send_signal(signal.SIGHUP)
            wait_until(lambda: names() == [first.name], 10)
            # The stream ends normally on the server no longer listed: its last chunk says
            # why the model stopped (a sampled answer may be empty, so not its text).
            rest = [c.choices[0] for c in stream if c.choices]
            assert rest and rest[-1].finish_reason in ("stop", "length")
            assert client.chat.completions.create(
                model="smollm2",
                messages=CHAT,
                max_tokens=2,  # type: ignore[arg-type]
            ).choices
            # Back again, with an alias; the gateway probes it at once.
            backends_file(second, aliases={"chat": ["smollm2"]})
            gateway.process.send_signal(signal.SIGHUP)
            wait_until(lambda: second.name in names(), 10)
            wait_until(lambda: gateway.backend(second.name)["healthy"], 10)
            assert client.chat.completions.create(
                model="chat",
                messages=CHAT,
                max_tokens=2,  # type: ignore[arg-type]
            ).choices
            # A broken file changes nothing; the same process served all along.
            listed.write_text("backends: [")
            gateway.process.send_signal(signal.SIGHUP)
            wait_until(lambda: "keeping the current backends" in gateway.log.read_text(), 10)
            assert names() == sorted([first.name, second.name])
            assert gateway.process.poll() is None
    finally:
        stop(gateway.process)


def open_connections(server: Server, client: subprocess.Popen[bytes]) -> int:
    """Established TCP connections from the ``client`` process to ``server``."""
    port = urllib.parse.urlsplit(server.url).port
    shown = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( dport = :{port} )"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return sum(f"pid={client.pid}," in line for line in shown.stdout.splitlines())


def wait_until(check: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
