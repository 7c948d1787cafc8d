"""The gateway's request paths in one process: the gateway's aiohttp application and a
stand-in OpenAI backend (tests/fixtures/openai_stand_in.py) in the same event loop, on
ports of their own. Fast enough to cover every path on every run; the real llama.cpp
servers (test_gateway.py) stay for the official clients, streams, drain and a kill."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from clusterai_runner.gateway.app import UNPARSABLE, GatewayRunner, make_app
from clusterai_runner.gateway.base import CACHE, POOL
from clusterai_runner.gateway.cache import RedisCache
from clusterai_runner.gateway.config import BackendConfig, GatewayConfig
from clusterai_runner.gateway.keys import create_key
from clusterai_runner.store import Store, StoreError
from tests.fixtures import fake_ollama
from tests.fixtures.openai_stand_in import DELAY, SEEN, stand_in_app
from tests.gateway.conftest import Redis

ADMIN = "in-process-admin-key"


class GatewayTestServer(TestServer):
    """The application served the way ``serve`` serves it."""

    async def _make_runner(self, **kwargs: Any) -> GatewayRunner:
        return GatewayRunner(self.app, **kwargs)


@asynccontextmanager
async def gateway(
    store: Store | None = None,
    spool: Path | None = None,
    more: tuple[BackendConfig, ...] = (),
    embeds: bool = False,
    **settings: Any,
) -> AsyncIterator[tuple[aiohttp.ClientSession, str, TestServer, TestServer]]:
    """A session, the gateway's base URL, the stand-in backend's server, the gateway's.
    With a ``store``, auth is on and usage records wait in ``spool``; ``more`` backends
    after the stand-in; ``embeds``: the stand-in serves embeddings."""
    backend = TestServer(stand_in_app(embeds=embeds), host="127.0.0.1")
    await backend.start_server()
    config = GatewayConfig(
        backends=(BackendConfig("sb1", str(backend.make_url("")).rstrip("/"), "openai"), *more),
        auth_enabled=store is not None,
        cache_path=":memory:",
        health_interval_s=0.2,
        eject_after=1,
        **settings,
    )
    server = GatewayTestServer(make_app(config, store, spool), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            yield session, str(server.make_url("")).rstrip("/"), backend, server
    finally:
        await server.close()
        await backend.close()


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


CHAT = {"model": "stand-in", "messages": [{"role": "user", "content": "hi"}], "seed": 7}


def test_a_chat_goes_to_the_backend_and_a_deterministic_one_is_cached() -> None:
    async def test() -> None:
        async with gateway() as (session, url, backend, _server):
            async with session.post(url + "/v1/chat/completions", json=CHAT) as first:
                assert first.status == 200 and first.headers["X-Cache"] == "miss"
                body = await first.read()
            async with session.post(url + "/v1/chat/completions", json=CHAT) as second:
                assert second.status == 200 and second.headers["X-Cache"] == "hit"
                assert await second.read() == body
            assert backend.app[SEEN] == [1]  # the hit never reached it
            assert json.loads(body)["choices"][0]["message"]["content"] == "answer 1 for seed 7"

    run(test)


def test_a_new_model_digest_misses_the_cache(tmp_path: Path) -> None:
    """The cache's keys carry each model's content digest: from the configuration (what
    the gateway role writes for a llama.cpp worker), or from an Ollama backend's
    ``/api/tags``. The same request after the digest changed is a miss, and the new
    answer is cached under the new digest; a stream asking for its token counts is
    another answer than one that does not."""
    old, new = "a" * 64, "b" * 64  # as the configuration's sha256:HEX is read

    async def test(ollama_url: str) -> None:
        async with gateway() as (session, url, backend, server):
            pool = server.app[POOL]
            await discovered(server, {"stand-in"})

            async def chat(body: dict[str, Any] = CHAT) -> str:
                async with session.post(url + "/v1/chat/completions", json=body) as answer:
                    assert answer.status == 200
                    return answer.headers["X-Cache"]

            async def digest(value: str) -> None:
                config = dataclasses.replace(pool.backends[0].config,
                                             digests=(("stand-in", value),))  # fmt: skip
                await pool.update(dataclasses.replace(pool.config, backends=(config,)))
                await pool.probe_all()

            await digest(old)
            assert pool.versions("stand-in") == [f"stand-in@{'a' * 64}"]
            assert [await chat(), await chat()] == ["miss", "hit"]
            await digest(new)
            assert [await chat(), await chat()] == ["miss", "hit"]
            assert backend.app[SEEN] == [2]
            streamed = {**CHAT, "stream": True}
            usage = {**streamed, "stream_options": {"include_usage": True}}
            assert [await chat(streamed), await chat(usage), await chat(usage)] == [
                "miss", "miss", "hit"]  # fmt: skip

            # An Ollama backend's digests come from its /api/tags, as a pull changes them.
            ollama = BackendConfig("ol1", ollama_url, "ollama")
            await pool.update(dataclasses.replace(pool.config, backends=(ollama,)))
            await pool.probe_all()
            assert pool.versions("qwen:latest") == ["qwen:latest@ab"]
            store = tmp_path / "ollama" / "manifests.json"
            store.write_text(store.read_text().replace('"ab"', '"cd"'))
            await pool.probe_all()
            assert pool.versions("qwen:latest") == ["qwen:latest@cd"]

    with fake_ollama_server(tmp_path / "ollama") as ollama_url:
        asyncio.run(test(ollama_url))


def test_a_stream_is_passed_through_and_replayed_from_the_cache() -> None:
    async def test() -> None:
        async with gateway() as (session, url, backend, _server):
            streamed = {**CHAT, "stream": True, "seed": 8}
            bodies = []
            for _ in range(2):
                async with session.post(url + "/v1/chat/completions", json=streamed) as answer:
                    assert answer.status == 200
                    assert answer.headers["Content-Type"].startswith("text/event-stream")
                    bodies.append(await answer.read())
            assert bodies[0] == bodies[1] and bodies[0].rstrip().endswith(b"data: [DONE]")
            assert backend.app[SEEN] == [1]

    run(test)


def test_an_ollama_chat_is_translated_for_an_openai_backend() -> None:
    async def test() -> None:
        async with gateway() as (session, url, _backend, _server):
            chat = {"model": "stand-in", "messages": [{"role": "user", "content": "hi"}]}
            async with session.post(url + "/api/chat", json=chat) as answer:
                assert answer.status == 200
                lines = [json.loads(line) for line in (await answer.read()).splitlines()]
            assert lines[-1]["done"] is True
            text = "".join(line["message"]["content"] for line in lines)
            assert text.startswith("answer 1")

    run(test)


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/v1/chat/completions", b"{not json", 400, "not valid JSON"),
        ("/v1/chat/completions", b'{"model": "m", "messages": [{"role": "user"}]}', 400, "content"),
        ("/v1/chat/completions", b'{"model": "no", "messages": [{"role": "user", "content": "x"}]}',
         404, "'no'"),
        ("/v1/chat/completions", b'{"model": "stand-in", "messages": []}', 400, "messages"),
        ("/api/chat", b"[]", 400, "JSON object"),
    ],
)  # fmt: skip
def test_client_mistakes_are_4xx_in_the_callers_format(
    path: str, body: bytes, status: int, says: str
) -> None:
    async def test() -> None:
        async with gateway() as (session, url, backend, _server):
            headers = {"Content-Type": "application/json"}
            async with session.post(url + path, data=body, headers=headers) as answer:
                assert answer.status == status
                error = (await answer.json())["error"]
            message = error["message"] if isinstance(error, dict) else error
            assert says in message
            assert backend.app[SEEN] == [0]

    run(test)


def test_a_backend_that_is_gone_is_a_5xx_that_does_not_name_it() -> None:
    async def test() -> None:
        async with gateway(queue_timeout_s=1) as (session, url, backend, _server):
            await backend.close()
            async with session.post(url + "/v1/chat/completions", json=CHAT) as answer:
                assert answer.status in (502, 503)
                text = await answer.text()
            assert "sb1" not in text and str(backend.port) not in text

    run(test)


def test_an_unreachable_redis_is_a_miss_and_is_left_alone_for_a_while() -> None:
    async def test() -> None:
        # Port 1 on loopback: nothing listens there, the connection is refused at once.
        redis = "redis://127.0.0.1:1/0"
        async with gateway(cache_redis_url=redis) as (session, url, backend, server):
            for expected_seen in (1, 2):
                async with session.post(url + "/v1/chat/completions", json=CHAT) as answer:
                    assert answer.status == 200 and answer.headers["X-Cache"] == "miss"
                assert backend.app[SEEN] == [expected_seen]
            cache = server.app[CACHE]
            assert isinstance(cache, RedisCache)
            assert cache._down_until > time.monotonic()  # not tried again on every request

    run(test)


def test_drain_stops_new_requests_and_undrain_brings_them_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLUSTERAI_GATEWAY_ADMIN_KEY", ADMIN)

    async def test() -> None:
        async with gateway(queue_timeout_s=0.5) as (session, url, backend, _server):
            admin = {"Authorization": f"Bearer {ADMIN}"}
            drain = url + "/admin/backends/sb1/drain"
            async with session.post(drain, json={"wait_s": 1}, headers=admin) as answer:
                assert answer.status == 200 and (await answer.json())["idle"] is True
            chat = {**CHAT, "seed": None, "temperature": 0.5}
            async with session.post(url + "/v1/chat/completions", json=chat) as answer:
                assert answer.status in (429, 503)
            assert backend.app[SEEN] == [0]
            async with session.post(url + "/admin/backends/sb1/undrain", headers=admin) as a:
                assert a.status == 200
            async with session.post(url + "/v1/chat/completions", json=chat) as answer:
                assert answer.status == 200
            assert backend.app[SEEN] == [1]

    run(test)


def test_the_authorization_header_is_a_bearer_token_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLUSTERAI_GATEWAY_ADMIN_KEY", ADMIN)

    async def test() -> None:
        async with gateway() as (session, url, _backend, server):
            answers = {}
            for header in (f"Bearer {ADMIN}", f"bearer {ADMIN}", f"BEARER  {ADMIN} ",
                           ADMIN, f"Basic {ADMIN}", f"Bearer{ADMIN}", "Bearer", ""):  # fmt: skip
                async with session.get(
                    url + "/admin/backends", headers={"Authorization": header}
                ) as answer:
                    answers[header] = answer.status
            assert answers == {
                f"Bearer {ADMIN}": 200, f"bearer {ADMIN}": 200, f"BEARER  {ADMIN} ": 200,
                ADMIN: 401, f"Basic {ADMIN}": 401, f"Bearer{ADMIN}": 401, "Bearer": 401, "": 401,
            }  # fmt: skip
            # Bytes that are not UTF-8 after a key's prefix: refused, not an internal error.
            assert server.host is not None and server.port is not None
            reader, writer = await asyncio.open_connection(server.host, server.port)
            writer.write(
                b"GET /admin/backends HTTP/1.1\r\nHost: gateway\r\n"
                b"Authorization: Bearer cai_0a1b2c3d_\xff\xfe\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
            status_line = await reader.readline()
            writer.close()
            assert status_line.split()[1] == b"401", status_line

    run(test)


def test_metrics_name_the_route_and_the_status_the_client_got() -> None:
    async def test() -> None:
        async with gateway() as (session, url, _backend, _server):
            async with session.post(url + "/v1/chat/completions", json=CHAT) as answer:
                assert answer.status == 200
            for number in range(3):
                async with session.post(url + f"/v1/no-such-route-{number}", json={}) as a:
                    assert a.status == 404
            async with session.get(url + "/metrics") as answer:
                text = await answer.text()
            total = "clusterai_gateway_requests_total"
            assert total + '{route="/v1/chat/completions",status="200"} 1' in text
            assert total + '{route="unmatched",status="404"} 3' in text
            assert "no-such-route" not in text and 'status="500"' not in text

    run(test)


def test_a_request_that_cannot_be_parsed_is_a_400_that_quotes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aiohttp's own answer to an oversized header quoted its value (a token, a cookie)."""

    async def test() -> None:
        async with gateway() as (_session, _url, _backend, server):
            assert server.host is not None and server.port is not None
            for request in (
                b"GET /v1/models HTTP/1.1\r\nHost: g\r\nX-Secret: " + b"canary" * 1500 + b"\r\n",
                b"GET /v1/models HTTP/1.1\r\nHost: g\r\nX-Sec\x00ret-canary: 1\r\n",
                b"canary /v1/models HTTP/1.1\r\nHost: g\r\n",
            ):
                reader, writer = await asyncio.open_connection(server.host, server.port)
                writer.write(request + b"Connection: close\r\n\r\n")
                await writer.drain()
                answer = await reader.read()
                writer.close()
                assert answer.startswith(b"HTTP/1.0 400 Bad Request"), answer
                assert answer.endswith(UNPARSABLE.encode()), answer

    run(test)
    assert "canary" not in caplog.text
    assert "refused an unparsable request from 127.0.0.1" in caplog.text


def test_revoked_keys_stop_within_refresh_s_and_stale_keys_fail_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys that cannot be reloaded (the store is gone) serve for ``auth.max_stale_s``,
    then every request gets 503 until a reload succeeds: a revoked key must not work on
    for ever. The admin key of the environment stays usable, for the operator."""
    monkeypatch.setenv("CLUSTERAI_GATEWAY_ADMIN_KEY", ADMIN)
    store = Store.open(f"sqlite:///{tmp_path / 'state.db'}")
    key, other = create_key(store, "app"), create_key(store, "other")
    list_keys = store.list_keys

    def broken(include_revoked: bool = True) -> Any:
        raise StoreError("state store", "database is locked", "retry")

    async def test() -> None:
        async with gateway(store, tmp_path / "spool", auth_refresh_s=0.1,
                           auth_max_stale_s=1.0) as (session, url, _backend, _server):  # fmt: skip

            async def status(given: str, path: str = "/v1/models") -> int:
                headers = {"Authorization": f"Bearer {given}"}
                async with session.get(url + path, headers=headers) as answer:
                    return answer.status

            async def becomes(given: str, wanted: int, within: float) -> float:
                started = time.monotonic()
                while await status(given) != wanted:
                    assert time.monotonic() - started < within, f"never {wanted}"
                    await asyncio.sleep(0.02)
                return time.monotonic() - started

            assert (await status(key), await status(other)) == (200, 200)
            store.revoke_key("other")
            await becomes(other, 401, within=2.0)  # refresh_s is 0.1
            monkeypatch.setattr(store, "list_keys", broken)
            assert await status(key) == 200  # the keys loaded last, for now
            await becomes(key, 503, within=5.0)
            assert await status(other) == 503
            assert await status(ADMIN, "/admin/backends") == 200
            headers = {"Authorization": f"Bearer {key}"}
            async with session.post(url + "/v1/chat/completions", json=CHAT,
                                    headers=headers) as refused:  # fmt: skip
                assert refused.status == 503 and refused.headers["Retry-After"] == "5"
                assert "cannot read its API keys" in (await refused.json())["error"]["message"]
            monkeypatch.setattr(store, "list_keys", list_keys)
            await becomes(key, 200, within=2.0)
            assert await status(other) == 401

    run(test)


def test_two_replicas_sharing_redis_enforce_a_keys_limits_together(
    tmp_path: Path, redis_server: Redis
) -> None:
    """Two gateways with one store and one Redis (a redis-server of the test's own): a key
    of 4 requests a minute gets 4 answers in all, however its requests are spread over the
    replicas, and one of 10 tokens a minute (the stand-in answers 7) gets 2. With Redis
    gone, each replica counts alone and no request fails for it."""
    store = Store.open(f"sqlite:///{tmp_path / 'state.db'}")
    requests_key = create_key(store, "app", rpm=4)
    tokens_key = create_key(store, "batch", tpm=10)
    outage_key = create_key(store, "during-outage", rpm=1)
    shared = {"cache_redis_url": redis_server.url}

    async def test() -> None:
        async with (
            gateway(store, tmp_path / "spool-a", **shared) as (session, first, _b, _s),
            gateway(store, tmp_path / "spool-b", **shared) as (_session, second, _c, _t),
        ):
            seed = 0

            async def chat(url: str, key: str) -> tuple[int, str]:
                nonlocal seed
                seed += 1
                headers = {"Authorization": f"Bearer {key}"}
                body = {**CHAT, "seed": seed}
                async with session.post(url + "/v1/chat/completions", json=body,
                                        headers=headers) as answer:  # fmt: skip
                    text = await answer.text()
                    return answer.status, text

            spread = [await chat(url, requests_key) for url in (first, second) * 3]
            assert [status for status, _ in spread] == [200] * 4 + [429] * 2, spread
            assert "this key's limit of 4 requests per minute is reached" in spread[-1][1]
            spent = [await chat(url, tokens_key) for url in (first, second, first)]
            assert [status for status, _ in spent] == [200, 200, 429], spent
            assert "limit of 10 tokens per minute" in spent[-1][1]
            redis_server.stop()
            alone = [await chat(url, outage_key) for url in (first, first, second)]
            assert [status for status, _ in alone] == [200, 429, 200], alone

    run(test)


EMBED = {"model": "stand-in", "input": "hello"}


def test_embeddings_a_backend_cannot_serve_never_eject_it() -> None:
    """One backend, which answers embeddings with a 500 (llama.cpp without --embedding):
    20 embeddings requests between chat requests. The first is the backend's 500 (as a
    502); the capability is then off on that backend, so the rest are 400s naming the
    model and the capability; every chat succeeds and the backend stays in."""

    async def test() -> None:
        async with gateway() as (session, url, backend, server):
            embeddings, chats = [], []
            for number in range(20):
                async with session.post(url + "/v1/embeddings", json=EMBED) as answer:
                    embeddings.append((answer.status, (await answer.json())["error"]["message"]))
                chat = {**CHAT, "seed": number}
                async with session.post(url + "/v1/chat/completions", json=chat) as answer:
                    chats.append(answer.status)
            (state,) = [b.to_json() for b in server.app[POOL].backends]
            assert chats == [200] * 20
            assert embeddings[0][0] == 502
            refused = "model 'stand-in' is not served for embeddings on this cluster"
            assert all(s == 400 and refused in m for s, m in embeddings[1:]), embeddings
            assert state["healthy"] and state["failures"] == 0
            assert state["capabilities"] == ["chat", "completions", "stream_usage"]
            assert backend.app[SEEN] == [20]  # the chats; no embeddings reached it after one

    run(test)


def test_a_backend_is_sent_only_the_capabilities_it_declares() -> None:
    """The gateway role lists each llama.cpp worker's capabilities: embeddings go to none
    of them unless the worker serves embeddings (llamacpp_server_embedding)."""

    async def test() -> None:
        async with gateway() as (session, url, _backend, server):
            pool = server.app[POOL]
            declared = dataclasses.replace(
                pool.backends[0].config, capabilities=("chat", "completions")
            )
            await pool.update(dataclasses.replace(pool.config, backends=(declared,)))
            await pool.probe_all()
            async with session.post(url + "/api/embed", json=EMBED) as answer:
                assert answer.status == 400
                assert "is not served for embeddings" in (await answer.json())["error"]
            async with session.post(url + "/v1/chat/completions", json=CHAT) as answer:
                assert answer.status == 200
            (state,) = [b.to_json() for b in pool.backends]
            assert state["healthy"] and state["capabilities"] == ["chat", "completions"]

    run(test)


def test_a_stream_that_asks_for_usage_gets_it_or_a_400_that_names_the_limit() -> None:
    """``stream_options.include_usage`` with the official client: a backend that sends the
    counts (the stand-in, as OpenAI and Ollama do) is asked, and the gateway counts them;
    when the model's backends are declared without ``stream_usage`` (llama.cpp's server,
    which sends none), a 400 names the limit and nothing reaches a backend."""
    import openai

    async def test() -> None:
        async with gateway() as (session, url, backend, server):
            pool = server.app[POOL]
            await discovered(server, {"stand-in"})
            client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)

            def stream() -> list[Any]:
                return list(client.chat.completions.create(
                    model="stand-in", messages=CHAT["messages"], stream=True,
                    stream_options={"include_usage": True},
                ))  # fmt: skip

            for declared in (None, ("chat", "completions", "stream_usage")):
                config = dataclasses.replace(pool.backends[0].config, capabilities=declared)
                await pool.update(dataclasses.replace(pool.config, backends=(config,)))
                await pool.probe_all()
                chunks = await asyncio.to_thread(stream)
                assert chunks[-1].choices == [] and chunks[-1].usage is not None
                usage = chunks[-1].usage
                assert (usage.prompt_tokens, usage.completion_tokens) == (3, 4)
            assert backend.app[SEEN] == [2]
            async with session.get(url + "/metrics") as answer:  # what usage records count
                counted = await answer.text()
            tokens = 'clusterai_gateway_tokens_total{route="/v1/chat/completions",kind="%s"}'
            assert f"{tokens % 'prompt'} 6" in counted and f"{tokens % 'completion'} 8" in counted
            llamacpp = dataclasses.replace(config, capabilities=("chat", "completions"))
            await pool.update(dataclasses.replace(pool.config, backends=(llamacpp,)))
            await pool.probe_all()
            with pytest.raises(openai.BadRequestError) as refused:
                await asyncio.to_thread(stream)
            assert "stream_options.include_usage: no backend that holds model 'stand-in'" in str(
                refused.value
            )
            assert backend.app[SEEN] == [2]
            unstreamed_usage = {**CHAT, "stream_options": {"include_usage": True}}
            async with session.post(
                url + "/v1/chat/completions", json=unstreamed_usage
            ) as unstreamed:
                assert unstreamed.status == 400
                message = (await unstreamed.json())["error"]["message"]
            assert message == "stream_options is only allowed when stream is true"

    run(test)


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        # what keys alice (a tenant), bob and carol see, asking the same in that order
        ("tenant", ["miss", "miss", "hit"]),
        ("key", ["miss", "miss", "miss"]),
        ("shared", ["miss", "hit", "hit"]),
    ],
)
def test_the_answer_cache_is_scoped_to_tenants(
    tmp_path: Path, scope: str, expected: list[str]
) -> None:
    """An ``X-Cache: hit`` tells the caller that someone asked the same before: a key
    created as a separate tenant never shares answers (cache.scope tenant, the default)."""
    store = Store.open(f"sqlite:///{tmp_path / 'state.db'}")
    keys = [create_key(store, "alice", tenant=True), create_key(store, "bob"),
            create_key(store, "carol")]  # fmt: skip

    async def test() -> None:
        async with gateway(store, tmp_path / "spool", cache_scope=scope) as (session, url, *_):
            seen = []
            for key in keys:
                headers = {"Authorization": f"Bearer {key}"}
                async with session.post(url + "/v1/chat/completions", json=CHAT,
                                        headers=headers) as answer:  # fmt: skip
                    assert answer.status == 200
                    seen.append(answer.headers["X-Cache"])
            assert seen == expected

    run(test)


def test_metrics_on_their_own_listener_need_tls_and_the_login(tmp_path: Path) -> None:
    """With `metrics: {listen, web_config}` the client port has no /metrics; the metrics
    listener speaks TLS with the web configuration's certificate and answers only a user
    and password of its bcrypt list (a wrong one, none, or another scheme: 401)."""
    import base64
    import ssl
    import subprocess

    import bcrypt

    from clusterai_runner.gateway.monitoring import metrics_app, read_web_config, server_context

    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem"),
         "-days", "1", "-subj", "/CN=gateway", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    hashed = bcrypt.hashpw(b"monitoring-password", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "web.yml").write_text(
        f"tls_server_config: {{cert_file: {tmp_path}/cert.pem, key_file: {tmp_path}/key.pem}}\n"
        f"basic_auth_users: {{clusterai: '{hashed}'}}\n"
    )
    web_config = read_web_config(tmp_path / "web.yml")
    trusted = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))

    def login(user: str, password: str) -> dict[str, str]:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    async def test() -> None:
        async with gateway(metrics_host="127.0.0.1", metrics_port=1) as (session, url, _b, server):
            async with session.get(url + "/metrics") as moved:
                assert moved.status == 404  # only on the metrics listener
            metrics = TestServer(metrics_app(web_config, server.app), host="127.0.0.1")
            await metrics.start_server(ssl=server_context(web_config))
            try:
                base = f"https://127.0.0.1:{metrics.port}/metrics"
                for headers in ({}, login("clusterai", "wrong"), login("nobody", "x"),
                                {"Authorization": "Bearer monitoring-password"}):  # fmt: skip
                    async with session.get(base, headers=headers, ssl=trusted) as refused:
                        assert refused.status == 401, headers
                        assert refused.headers["WWW-Authenticate"].startswith("Basic realm=")
                for _ in range(2):  # the second is remembered, not hashed again
                    async with session.get(
                        base, headers=login("clusterai", "monitoring-password"), ssl=trusted
                    ) as answered:
                        assert answered.status == 200
                        assert "clusterai_gateway" in await answered.text()
                plain = base.replace("https", "http")
                with pytest.raises(aiohttp.ClientConnectionError):  # not plain HTTP
                    async with session.get(
                        plain, headers=login("clusterai", "monitoring-password")
                    ):
                        pass
            finally:
                await metrics.close()

    run(test)


def test_a_model_only_a_parked_worker_serves_waits_then_is_a_503_with_retry_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLUSTERAI_GATEWAY_ADMIN_KEY", ADMIN)
    # Its server is stopped: any request sent there would fail.
    parked = BackendConfig("p1", "http://127.0.0.1:9", "openai", standby=True, models=("night",))

    async def test() -> None:
        async with gateway(more=(parked,), queue_timeout_s=0.5, wake_retry_after_s=45) as (
            session,
            url,
            _backend,
            _server,
        ):
            admin = {"Authorization": f"Bearer {ADMIN}"}
            chat = {**CHAT, "model": "night"}
            started = time.monotonic()
            async with session.post(url + "/v1/chat/completions", json=chat) as answer:
                assert answer.status == 503
                assert answer.headers["Retry-After"] == "45"
                assert "one is starting" in (await answer.json())["error"]["message"]
            assert time.monotonic() - started < 5  # the queue's bound, not a hang
            async with session.get(url + "/admin/backends", headers=admin) as answer:
                listed = await answer.json()
            assert listed["queue"]["wanted"] == {"night": 0}
            assert [b["standby"] for b in listed["backends"]] == [False, True]
            # The stand-in's model is served at once, never woken.
            async with session.post(url + "/v1/chat/completions", json=CHAT) as answer:
                assert answer.status == 200
            async with session.get(url + "/metrics") as answer:
                assert 'clusterai_gateway_wanted_waiting{model="night"} 0' in await answer.text()

    run(test)


def test_the_openai_client_retrieves_a_model_and_gets_a_404_for_one_not_served() -> None:
    """``models.retrieve`` (``GET /v1/models/{id}``) with the official client, as Open
    WebUI and the editors' plugins call it; ids may hold ``:`` and ``/``."""
    import openai

    async def test() -> None:
        async with gateway(aliases={"team/chat:latest": ("stand-in",)}) as (_s, url, _b, server):
            pool = server.app[POOL]
            for _ in range(100):  # until the stand-in's models are discovered
                if "stand-in" in pool.public_models():
                    break
                await asyncio.sleep(0.05)
            client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
            found = await asyncio.to_thread(client.models.retrieve, "stand-in")
            assert (found.id, found.object) == ("stand-in", "model")
            alias = await asyncio.to_thread(client.models.retrieve, "team/chat:latest")
            assert alias.id == "team/chat:latest"
            with pytest.raises(openai.NotFoundError) as missing:
                await asyncio.to_thread(client.models.retrieve, "gpt-9")
            assert "model 'gpt-9' not found" in str(missing.value)

    run(test)


def test_n_choices_are_as_many_requests_merged_and_a_stream_of_several_is_a_400() -> None:
    """The stand-in answers one choice whatever ``n`` says, as llama.cpp's server and
    Ollama do: the gateway asks ``n`` times and merges, never silently one choice."""

    async def test() -> None:
        async with gateway() as (session, url, backend, _server):
            asked = {**CHAT, "n": 3, "seed": 9}
            async with session.post(url + "/v1/chat/completions", json=asked) as answer:
                assert answer.status == 200 and answer.headers["X-Cache"] == "miss"
                merged = await answer.json()
            assert [c["index"] for c in merged["choices"]] == [0, 1, 2]
            texts = sorted(c["message"]["content"] for c in merged["choices"])
            assert texts == [f"answer {i} for seed 9" for i in (1, 2, 3)]
            # The prompt counted once, the three completions added up.
            assert merged["usage"] == {"prompt_tokens": 3, "completion_tokens": 12,
                                       "total_tokens": 15}  # fmt: skip
            assert backend.app[SEEN] == [3]
            async with session.post(url + "/v1/chat/completions", json=asked) as again:
                assert again.headers["X-Cache"] == "hit" and await again.json() == merged
            streamed = {**asked, "stream": True}
            async with session.post(url + "/v1/chat/completions", json=streamed) as refused:
                assert refused.status == 400
                error = (await refused.json())["error"]
            assert error["message"].startswith("n: 3 choices are not streamed"), error
            assert backend.app[SEEN] == [3]
            async with session.post(url + "/v1/chat/completions", json={**CHAT, "n": 0}) as bad:
                assert bad.status == 400

    run(test)


DETAILS = fake_ollama.DETAILS
fake_ollama_server = fake_ollama.in_thread


async def discovered(server: TestServer, models: set[str]) -> None:
    pool = server.app[POOL]
    for _ in range(100):
        if models <= set(pool.public_models()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the gateway did not discover {models}")


def test_api_show_asks_an_ollama_backend_and_says_only_what_it_knows_of_others(
    tmp_path: Path,
) -> None:
    """``POST /api/show`` (Open WebUI, LangChain and editor plugins call it): an Ollama
    backend's own details (tests/fixtures/fake_ollama.py), and for the stand-in, an
    OpenAI-API backend that tells nothing of its model, Ollama's empty fields."""
    details = DETAILS

    async def test(ollama_url: str) -> None:
        more = (BackendConfig("ol1", ollama_url, "ollama"),)
        async with gateway(more=more) as (session, url, _backend, server):
            await discovered(server, {"qwen:latest", "stand-in"})

            async def show(body: dict[str, Any]) -> tuple[int, Any]:
                async with session.post(url + "/api/show", json=body) as answer:
                    return answer.status, await answer.json()

            status, shown = await show({"model": "qwen:latest"})
            assert status == 200 and shown["details"] == details, shown
            assert shown["modelfile"] == "FROM qwen:latest"
            status, shown = await show({"name": "stand-in"})  # older clients send name
            assert status == 200
            assert (shown["modelfile"], shown["details"]["family"]) == ("", ""), shown
            assert shown["capabilities"] == ["completion"]
            assert await show({"model": "nope"}) == (404, {"error": "model 'nope' not found"})
            status, refused = await show({})
            assert status == 400 and "model is required" in refused["error"]

    with fake_ollama_server(tmp_path / "ollama") as ollama_url:
        asyncio.run(test(ollama_url))
    assert "POST /api/show qwen:latest" in (tmp_path / "ollama" / "requests.log").read_text()


def test_api_ps_adds_up_the_ollama_backends_sizes_and_claims_none_it_does_not_know(
    tmp_path: Path,
) -> None:
    """``ps`` with the official ``ollama`` client: ``qwen:latest`` loaded on two Ollama
    backends, wholly on one's GPU and partly on the other's, has their sizes added up;
    the stand-in's model (an OpenAI-API backend, as llama.cpp's server, which reports
    none) is listed without sizes."""
    import ollama

    def ps(size_vram: int) -> dict[str, Any]:
        return {"models": [{"name": "qwen:latest", "model": "qwen:latest", "size": 1000,
                            "size_vram": size_vram, "digest": "ab", "details": DETAILS,
                            "expires_at": "2026-12-07T12:00:00Z"}]}  # fmt: skip

    async def test(first: str, second: str) -> None:
        more = (BackendConfig("ol1", first, "ollama"), BackendConfig("ol2", second, "ollama"))
        async with gateway(more=more) as (_session, url, _backend, server):
            await discovered(server, {"qwen:latest", "stand-in"})
            await server.app[POOL].probe_all()

            def listed() -> list[Any]:
                with ollama.Client(host=url) as client:
                    return list(client.ps().models)

            running = await asyncio.to_thread(listed)
            assert [(m.model, m.size, m.size_vram, m.digest) for m in running] == [
                ("qwen:latest", 2000, 1400, "ab"),
                ("stand-in", None, None, None),
            ]
            assert running[0].details is not None and running[0].details.family == "fake"

    with (
        fake_ollama_server(tmp_path / "ol1", ps(1000)) as first,
        fake_ollama_server(tmp_path / "ol2", ps(400)) as second,
    ):
        asyncio.run(test(first, second))


def test_a_model_out_of_gpu_memory_is_flagged_with_its_metric(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fake Ollama's ``/api/ps`` reports ``size_vram`` under ``size``: on a backend
    with GPUs, the model is flagged ``model_on_cpu`` in ``/admin/backends`` and the
    metrics (what the ModelOnCpu alert fires on); wholly in system memory on a backend
    without GPUs is how such a backend holds every model, and is not flagged."""

    monkeypatch.setenv("CLUSTERAI_GATEWAY_ADMIN_KEY", ADMIN)

    def ps(size_vram: int) -> dict[str, Any]:
        return {"models": [{"name": "qwen:latest", "model": "qwen:latest", "size": 4 * 10**9,
                            "size_vram": size_vram}]}  # fmt: skip

    async def test(partial: str, none: str, cpu_only: str) -> None:
        more = (
            BackendConfig("partial", partial, "ollama"),  # 0 < size_vram < size: a GPU there
            BackendConfig("none", none, "ollama", gpu=True),
            BackendConfig("cpu-only", cpu_only, "ollama"),
        )
        async with gateway(more=more) as (session, url, _backend, server):
            await discovered(server, {"qwen:latest"})
            await server.app[POOL].probe_all()
            headers = {"Authorization": f"Bearer {ADMIN}"}
            async with session.get(url + "/admin/backends", headers=headers) as answer:
                listed = {b["name"]: b["flags"] for b in (await answer.json())["backends"]}
            assert listed["partial"] == [{"kind": "model_on_cpu", "model": "qwen:latest",
                                          "detail": "75% of 4.0 GB in system memory,"
                                                    " not on the GPU"}]  # fmt: skip
            assert [f["kind"] for f in listed["none"]] == ["model_on_cpu"]
            assert listed["cpu-only"] == [] and listed["sb1"] == []
            async with session.get(url + "/metrics") as answer:
                text = await answer.text()
            for name, value in (("partial", 1), ("none", 1), ("cpu-only", 0)):
                labels = f'{{backend="{name}",model="qwen:latest"}}'
                assert f"clusterai_gateway_model_on_cpu{labels} {value}" in text
            assert (
                'clusterai_gateway_model_vram_share{backend="partial",model="qwen:latest"} 0.2500'
                in text
            )

    with (
        fake_ollama_server(tmp_path / "a", ps(10**9)) as partial,
        fake_ollama_server(tmp_path / "b", ps(0)) as none,
        fake_ollama_server(tmp_path / "c", ps(0)) as cpu_only,
    ):
        asyncio.run(test(partial, none, cpu_only))


def test_a_backend_that_slows_down_is_flagged_throughput_drop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Answers of 20 tokens that take 0.02 s, then 0.5 s (the stand-in's delay, as a
    throttled server's): the recent median under half the one before is a
    ``throughput_drop`` flag and metric; the speeds are in the metrics."""
    monkeypatch.setenv("CLUSTERAI_GATEWAY_ADMIN_KEY", ADMIN)

    async def test() -> None:
        settings = {"throughput_recent_s": 3.0, "throughput_min_samples": 3}
        async with gateway(**settings) as (session, url, backend, server):
            await discovered(server, {"stand-in"})

            async def chats(delay: float) -> None:
                backend.app[DELAY][0] = delay
                for _ in range(3):
                    body = {**CHAT, "seed": None, "max_tokens": 20}
                    headers = {"Cache-Control": "no-cache"}
                    async with session.post(url + "/v1/chat/completions", json=body,
                                            headers=headers) as answer:  # fmt: skip
                        assert answer.status == 200
                        assert (await answer.json())["usage"]["completion_tokens"] == 20

            async def flags() -> list[dict[str, str]]:
                headers = {"Authorization": f"Bearer {ADMIN}"}
                async with session.get(url + "/admin/backends", headers=headers) as answer:
                    (backend,) = (await answer.json())["backends"]
                    return list(backend["flags"])

            await chats(0.02)
            await asyncio.sleep(3.1)  # out of the recent window: the baseline
            assert await flags() == []
            await chats(0.5)
            (flag,) = await flags()
            assert (flag["kind"], flag["model"]) == ("throughput_drop", "stand-in"), flag
            assert "under 50% of it" in flag["detail"]
            async with session.get(url + "/metrics") as answer:
                text = await answer.text()
            assert 'clusterai_gateway_throughput_drop{backend="sb1",model="stand-in"} 1' in text
            assert (
                'clusterai_gateway_tokens_per_second{backend="sb1",model="stand-in",window="baseline"}'
                in text
            )

    run(test)


@pytest.mark.parametrize("affinity", [True, False])
def test_a_conversations_turns_go_back_to_its_backend_when_it_is_as_free(affinity: bool) -> None:
    """Its first turn goes to sb2 (sb1 is busy then); the next turns, with both idle, go
    back to sb2 with affinity (its prompt cache), to the first listed without."""

    async def test() -> None:
        second = TestServer(stand_in_app(), host="127.0.0.1")
        await second.start_server()
        more = (BackendConfig("sb2", str(second.make_url("")).rstrip("/"), "openai"),)
        try:
            async with gateway(more=more, affinity=affinity) as (session, url, first, server):
                await discovered(server, {"stand-in"})
                pool = server.app[POOL]
                for _ in range(100):
                    if all(b.healthy for b in pool.backends):
                        break
                    await asyncio.sleep(0.05)
                turns = [{"role": "system", "content": "be brief"},
                         {"role": "user", "content": "hi"}]  # fmt: skip

                async def chat(messages: list[dict[str, str]]) -> str:
                    body = {"model": "stand-in", "messages": messages}
                    async with session.post(url + "/v1/chat/completions", json=body) as answer:
                        assert answer.status == 200
                        return str((await answer.json())["choices"][0]["message"]["content"])

                first.app[DELAY][0] = 0.5
                busy = asyncio.create_task(chat([{"role": "user", "content": "other"}]))
                await asyncio.sleep(0.1)
                reply = await chat(turns)  # sb1 is busy: sb2
                await busy
                first.app[DELAY][0] = 0.0
                for number in range(3):
                    turns += [{"role": "assistant", "content": reply},
                              {"role": "user", "content": f"and then {number}?"}]  # fmt: skip
                    reply = await chat(turns)
                expected = ([1], [4]) if affinity else ([4], [1])
                assert (first.app[SEEN], second.app[SEEN]) == expected
        finally:
            await second.close()

    run(test)


def test_the_semantic_layer_answers_a_paraphrase_only_where_enabled() -> None:
    """With ``cache.semantic`` on the chat route (the stand-in's bag-of-words embeddings as
    the cluster's embedding model): the same question in other words is a
    ``semantic-hit`` with its similarity, a different question or other parameters a
    miss; off (the default), the paraphrase reaches the backend."""

    def asking(text: str, **more: Any) -> dict[str, Any]:
        return {"model": "stand-in", "messages": [{"role": "user", "content": text}], **more}

    async def test(enabled: bool) -> list[tuple[int, str, str]]:
        settings: dict[str, Any] = {}
        if enabled:
            settings = {"semantic_routes": ("/v1/chat/completions",),
                        "semantic_model": "stand-in", "semantic_threshold": 0.9}  # fmt: skip
        async with gateway(embeds=True, **settings) as (session, url, backend, server):
            await discovered(server, {"stand-in"})
            seen = []
            for body in (
                asking("What is the capital of France?"),
                asking("what is the capital of france"),  # the same words
                asking("Tell me a joke about cats"),
                asking("what is the capital of France", temperature=1.5),  # other parameters
            ):
                async with session.post(url + "/v1/chat/completions", json=body) as answer:
                    assert answer.status == 200
                    seen.append((backend.app[SEEN][0], answer.headers.get("X-Cache", ""),
                                 answer.headers.get("X-Cache-Similarity", "")))  # fmt: skip
            return seen

    assert run_value(test(True)) == [
        (1, "miss", ""), (1, "semantic-hit", "1.0000"), (2, "miss", ""), (3, "miss", ""),
    ]  # fmt: skip
    assert run_value(test(False)) == [(1, "", ""), (2, "", ""), (3, "", ""), (4, "", "")]


def test_the_semantic_layer_keeps_its_vectors_in_redis_when_the_cache_is_there(
    redis_server: Redis,
) -> None:
    """Two gateways sharing one Redis: a paraphrase of a question one answered is a
    ``semantic-hit`` on the other, and Redis holds the vectors."""
    import redis

    settings = {"semantic_routes": ("/v1/chat/completions",), "semantic_model": "stand-in",
                "semantic_threshold": 0.9, "cache_redis_url": redis_server.url}  # fmt: skip

    async def test() -> list[str]:
        async with (
            gateway(embeds=True, **settings) as (session, first, _b, one),
            gateway(embeds=True, **settings) as (_session, second, _c, other),
        ):
            await discovered(one, {"stand-in"})
            await discovered(other, {"stand-in"})
            said = []
            for url, text in ((first, "Which port does the gateway use?"),
                              (second, "which port does the gateway use")):  # fmt: skip
                body = {"model": "stand-in", "messages": [{"role": "user", "content": text}]}
                async with session.post(url + "/v1/chat/completions", json=body) as answer:
                    assert answer.status == 200
                    said.append(answer.headers["X-Cache"])
            return said

    assert run_value(test()) == ["miss", "semantic-hit"]
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.keys("clusterai:semantic:*:vectors")
    finally:
        client.close()


def run_value(coroutine: Awaitable[Any]) -> Any:
    async def wrapped() -> Any:
        return await coroutine

    return asyncio.run(wrapped())


def test_model_management_through_the_gateway_is_a_400_that_says_where_it_is_done() -> None:
    """The official ollama client's pull, create, copy, delete and push: Ollama's model
    management is the inventory's (`clusterai models`), answered with one clear error."""
    import ollama

    async def test() -> None:
        async with gateway() as (session, url, _backend, _server):
            client = ollama.Client(host=url)
            calls = {
                "/api/pull": lambda: client.pull("smollm2:360m"),
                "/api/create": lambda: client.create("mine", from_="stand-in"),
                "/api/copy": lambda: client.copy("stand-in", "mine"),
                "/api/delete": lambda: client.delete("stand-in"),
                "/api/push": lambda: client.push("me/mine"),
            }
            try:
                for path, call in calls.items():
                    with pytest.raises(ollama.ResponseError) as refused:
                        await asyncio.to_thread(call)
                    assert refused.value.status_code == 400, path
                    assert path in refused.value.error
                    assert "clusterai models pull" in refused.value.error
            finally:
                client.close()
            async with session.head(url + "/api/blobs/sha256:" + "0" * 64) as answer:
                assert answer.status == 400

    run(test)
