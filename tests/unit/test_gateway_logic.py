"""The gateway's pure parts: its configuration, the choice of a backend, the translation
of Ollama's API to OpenAI's."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from clusterai_runner.errors import UsageError
from clusterai_runner.gateway import translate
from clusterai_runner.gateway.config import BackendConfig, GatewayConfig, load
from clusterai_runner.gateway.fallback import Throughput
from clusterai_runner.gateway.pool import Busy, NoBackend, NoSuchModel, Pool, Waking


def pool_of(*backends: BackendConfig, **settings: object) -> Pool:
    pool = Pool(GatewayConfig(backends=backends, **settings))  # type: ignore[arg-type]
    for backend in pool.backends:
        backend.healthy = True
        backend.models = {"smollm2"}
    return pool


def test_the_least_loaded_backend_holding_the_model_wins() -> None:
    async def scenario() -> None:
        pool = pool_of(BackendConfig("a", "http://a", "openai", 2),
                       BackendConfig("b", "http://b", "openai", 2))  # fmt: skip
        pool.backends[1].loaded = {"smollm2"}
        leases = [await pool.acquire("smollm2") for _ in range(3)]
        # Loaded in memory beats idle until it is full; then the least loaded.
        assert [lease.backend.name for lease in leases] == ["b", "b", "a"]
        for lease in leases:
            await pool.release(lease, 200)
        assert [b.outstanding for b in pool.backends] == [0, 0]

    asyncio.run(scenario())


def test_a_full_queue_is_busy_and_release_wakes_a_waiter() -> None:
    async def scenario() -> None:
        pool = pool_of(BackendConfig("a", "http://a", "openai", 1), queue_size=1,
                       queue_timeout_s=5.0)  # fmt: skip
        held = await pool.acquire("smollm2")
        waiter = asyncio.create_task(pool.acquire("smollm2"))
        await asyncio.sleep(0.01)
        with pytest.raises(Busy):  # the one queue slot is taken
            await pool.acquire("smollm2")
        await pool.release(held, 200)
        lease = await asyncio.wait_for(waiter, 1)
        assert lease.backend.name == "a"

    asyncio.run(scenario())


def test_the_queue_wait_is_the_autoscalers_signal() -> None:
    async def scenario() -> None:
        pool = pool_of(BackendConfig("a", "http://a", "openai", 1), queue_timeout_s=5.0)
        assert pool.queue_wait() == (0.0, 0)
        held = await pool.acquire("smollm2")
        waiter = asyncio.create_task(pool.acquire("smollm2"))
        await asyncio.sleep(0.3)
        assert pool.waiting == 1
        await pool.release(held, 200)
        second = await asyncio.wait_for(waiter, 1)
        await pool.release(second, 200)
        for _ in range(8):  # ten requests, one waited 0.3 s: the p95 is that wait
            await pool.release(await pool.acquire("smollm2"), 200)
        p95, count = pool.queue_wait()
        assert count == 10 and 0.3 <= p95 < 1.0
        assert pool.queue_wait(0.5)[0] < 0.05
        # Older than the window, a wait counts no more.
        pool.waits = type(pool.waits)(((t - 61, w) for t, w in pool.waits), pool.waits.maxlen)
        assert pool.queue_wait() == (0.0, 0)

    asyncio.run(scenario())


def test_the_queue_waits_window_is_the_configurations() -> None:
    async def scenario() -> None:
        pool = pool_of(BackendConfig("a", "http://a", "openai", 1), wait_window_s=10.0)
        held = await pool.acquire("smollm2")
        waiter = asyncio.create_task(pool.acquire("smollm2"))
        await asyncio.sleep(0.2)
        await pool.release(held, 200)
        await pool.release(await asyncio.wait_for(waiter, 1), 200)
        assert pool.queue_wait()[1] == 2
        pool.waits = type(pool.waits)(((t - 9, w) for t, w in pool.waits), pool.waits.maxlen)
        assert pool.queue_wait()[1] == 2  # 9 s old: inside 10 s
        pool.waits = type(pool.waits)(((t - 2, w) for t, w in pool.waits), pool.waits.maxlen)
        assert pool.queue_wait() == (0.0, 0)  # 11 s old: out

    asyncio.run(scenario())


def test_a_request_for_a_parked_workers_model_waits_for_it_to_be_started() -> None:
    async def scenario() -> None:
        parked = BackendConfig("p", "http://p", "openai", 1, standby=True, models=("m",))
        pool = Pool(GatewayConfig(backends=(parked,), queue_timeout_s=5.0))
        assert pool.serves("m") and not pool.serves("other")
        assert pool.wanted() == {}
        waiter = asyncio.create_task(pool.acquire("m"))
        await asyncio.sleep(0.05)
        assert pool.wanted() == {"m": 1}  # what the autoscaler reads
        await pool.probe(pool.backends[0])  # a standby backend is never asked
        assert pool.backends[0].probed_at == 0
        # The autoscaler started it: a reload makes it an ordinary backend, not probed yet;
        # the request keeps waiting instead of failing, and goes there once it is healthy.
        started = GatewayConfig(backends=(BackendConfig("p", "http://p", "openai", 1),),
                                queue_timeout_s=5.0)  # fmt: skip
        await pool.update(started)
        await asyncio.sleep(0.05)
        assert not waiter.done()
        async with pool._changed:
            backend = pool.backends[0]
            backend.models, backend.healthy, backend.probed_at = {"m"}, True, 1.0
            pool._changed.notify_all()
        lease = await asyncio.wait_for(waiter, 1)
        assert lease.backend.name == "p" and pool.waking == {"m": 0}
        assert pool.wanted() == {}  # served again

    asyncio.run(scenario())


def test_a_wake_longer_than_the_queue_timeout_is_waking_not_a_hang() -> None:
    async def scenario() -> None:
        parked = BackendConfig("p", "http://p", "openai", 1, standby=True, models=("m",))
        pool = Pool(GatewayConfig(backends=(parked,), queue_timeout_s=0.2))
        started = time.monotonic()
        with pytest.raises(Waking):
            await pool.acquire("m")
        assert time.monotonic() - started < 1
        assert pool.wanted() == {"m": 0}  # asked for lately, none waiting now

    asyncio.run(scenario())


def test_fallbacks_serve_only_when_no_worker_can_in_their_order() -> None:
    async def scenario() -> None:
        pool = pool_of(BackendConfig("hosted", "http://h", "openai", 1, None, True),
                       BackendConfig("w", "http://w", "openai", 1),
                       BackendConfig("backup", "http://b", "openai", 9, None, True))  # fmt: skip
        names = [(await pool.acquire("smollm2")).backend.name for _ in range(3)]
        assert names == ["w", "hosted", "backup"]

    asyncio.run(scenario())


def test_unknown_models_drained_and_ejected_backends() -> None:
    async def scenario() -> None:
        pool = pool_of(BackendConfig("a", "http://a", "openai", 1), eject_after=2)
        with pytest.raises(NoSuchModel):
            await pool.acquire("llama3")
        await pool.set_draining("a", True)
        with pytest.raises(NoBackend):
            await pool.acquire("smollm2")
        await pool.set_draining("a", False)
        for _ in range(2):
            await pool.release(await pool.acquire("smollm2"), 500, "HTTP 500")
        assert pool.backends[0].healthy is False
        with pytest.raises(NoBackend):
            await pool.acquire("smollm2")

    asyncio.run(scenario())


def test_aliases_map_a_public_name_to_backend_models() -> None:
    async def scenario() -> None:
        pool = pool_of(
            BackendConfig("a", "http://a", "openai", 1), aliases={"chat": ("x", "smollm2")}
        )
        lease = await pool.acquire("chat")
        assert lease.model == "smollm2"
        assert pool.public_models() == ["chat", "smollm2"]

    asyncio.run(scenario())


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yml"
    path.write_text(text)
    return path


def test_a_config_file_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, """\
listen: 127.0.0.1:9000
backends:
  - {name: w1, url: "http://127.0.0.1:8080/v1", max_concurrency: 2,
     digests: {smollm2: "sha256:%s"}}
  - {name: o1, url: "http://127.0.0.1:11434", api: ollama}
  - {name: hosted, url: "https://api.example.com/v1", api_key_env: HOSTED_KEY, fallback: true}
aliases: {chat: smollm2}
""" % ("0f" * 32))  # fmt: skip
    config = load(path, env={"HOSTED_KEY": "secret"})
    assert config.backends[0].digests == (("smollm2", "0f" * 32),)
    assert (config.host, config.port) == ("127.0.0.1", 9000)
    assert [b.url for b in config.backends] == [
        "http://127.0.0.1:8080", "http://127.0.0.1:11434", "https://api.example.com",
    ]  # fmt: skip
    assert config.backends[2].api_key == "secret" and "secret" not in repr(config.backends[2])
    assert config.aliases == {"chat": ("smollm2",)}


def test_a_backends_file_adds_backends_and_aliases(tmp_path: Path) -> None:
    (tmp_path / "backends.yml").write_text(
        "backends: [{name: w2, url: 'http://127.0.0.1:8081'}]\naliases: {chat: [qwen]}\n"
    )
    path = write(tmp_path, """\
backends: [{name: w1, url: "http://127.0.0.1:8080"}]
aliases: {chat: smollm2, small: smollm2}
backends_file: backends.yml
""")  # fmt: skip
    config = load(path, env={})
    assert [b.name for b in config.backends] == ["w1", "w2"]
    assert config.aliases == {"chat": ("qwen",), "small": ("smollm2",)}
    # The last worker left: no backends for now is allowed with a backends file.
    (tmp_path / "empty.yml").write_text("backends: []\n")
    assert load(write(tmp_path, "backends_file: empty.yml"), env={}).backends == ()


def test_an_update_keeps_the_state_of_unchanged_backends() -> None:
    async def scenario() -> None:
        a, b = BackendConfig("a", "http://a", "openai"), BackendConfig("b", "http://b", "openai")
        pool = pool_of(a, b)
        lease = await pool.acquire("smollm2")
        await pool.set_draining("a", True)
        moved = BackendConfig("b", "http://b2", "openai")
        c = BackendConfig("c", "http://c", "openai")
        added, removed = await pool.update(GatewayConfig(backends=(a, moved, c)))
        assert [x.name for x in added] == ["b", "c"] and removed == []
        kept = pool.backend("a")
        assert kept is not None and kept.draining and kept.healthy  # state kept
        assert [x.healthy for x in added] == [False, False]  # unprobed: no traffic yet
        added, removed = await pool.update(GatewayConfig(backends=(moved,)))
        assert (added, removed) == ([], ["a", "c"])
        await pool.release(lease, 200)  # a request in flight on a removed backend ends
        assert lease.backend.outstanding == 0

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("backends: [{name: a, url: 'ftp://x'}]", "backends[0].url: 'ftp://x' is not an http"),
        ("backends: [{name: a, url: 'http://x', api: grpc}]", "backends[0].api: 'grpc' is not"),
        ("backends: [{name: a, url: 'http://x', max_concurrency: 0}]", "max_concurrency: 0 is not"),
        ("backends: [{name: a, url: 'http://x', api_key_env: NOPE}]", "NOPE is not set"),
        ("backends: [{name: a, url: 'http://x', key: k}]", "backends[0].key: is not a backend"),
        ("backends: [{name: a, url: 'http://x', standby: true}]",
         "backends[0].models: a standby backend needs the models"),
        ("backends: [{name: a, url: 'http://x', standby: yes please}]",
         "backends[0].standby: 'yes please' is not true or false"),
        ("queue: {wake_retry_after_s: 0}\nbackends: [{name: a, url: 'http://x'}]",
         "queue.wake_retry_after_s: 0 is not a number of at least 1"),
        ("backends: [{name: a, url: 'http://x'}, {name: a, url: 'http://y'}]", "'a' is used twice"),
        ("throughput: {drop_below: 2}\nbackends: [{name: a, url: 'http://x'}]",
         "throughput.drop_below: 2 is not a fraction between 0 and 1"),
        ("backends: [{name: a, url: 'http://x', gpu: 1}]", "backends[0].gpu: 1 is not true"),
        ("cache: {semantic: {routes: [/v1/chat/completions], model: e, threshold: 0}}\n"
         "backends: [{name: a, url: 'http://x'}]",
         "cache.semantic.threshold: 0 is not a similarity in (0, 1]"),
        ("cache: {semantic: {routes: [/v1/chat/completions], model: e, threshold: 1.5}}\n"
         "backends: [{name: a, url: 'http://x'}]",
         "cache.semantic.threshold: 1.5 is not a similarity in (0, 1]"),
        ("cache: {semantic: {routes: [/v1/chat/completions]}}\n"
         "backends: [{name: a, url: 'http://x'}]", "cache.semantic.model: is not set"),
        ("cache: {semantic: {routes: [/v1/embeddings], model: e}}\n"
         "backends: [{name: a, url: 'http://x'}]", "cache.semantic.routes: ['/v1/embeddings']"),
        ("routing: {affinity: maybe}\nbackends: [{name: a, url: 'http://x'}]",
         "routing.affinity: 'maybe' is not true or false"),
        ("backends: [{name: a, url: 'http://x', digests: {m: md5:ab}}]",
         "backends[0].digests: is not a mapping of model names to SHA-256 digests"),
        ("listen: nowhere\nbackends: [{name: a, url: 'http://x'}]", "listen: 'nowhere' is not"),
        ("backend: []", "backend: is not a setting"),
        ("cache: {redis_url: 'http://x'}\nbackends: [{name: a, url: 'http://x'}]",
         "cache.redis_url: 'http://x' is not a Redis URL"),
        ("backends: []", "gateway: no backends"),
        ("backends: [\n", "gateway.yml:2: YAML error"),
        ("backends_file: nope.yml", "nope.yml: No such file"),
        ("backends_file: more.yml", "more.yml: listen: is not a setting"),
        ("backends_file: bad.yml", "bad.yml: backends[0].url"),
    ],
)  # fmt: skip
def test_config_mistakes_name_the_field(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "more.yml").write_text("listen: 127.0.0.1:1\n")
    (tmp_path / "bad.yml").write_text("backends: [{name: b, url: 'ftp://x'}]\n")
    with pytest.raises(UsageError) as raised:
        load(write(tmp_path, text), env={})
    assert expected in str(raised.value)


def test_ollama_chat_becomes_an_openai_request_and_back() -> None:
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": "hi"}],
        "options": {"num_predict": 5, "temperature": 0, "seed": 7},
        "stream": False,
    }
    request = translate.chat_request(body, "smollm2")
    assert request == {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}],
                       "stream": False, "max_tokens": 5, "temperature": 0, "seed": 7}  # fmt: skip
    answer = {"choices": [{"message": {"role": "assistant", "content": "Hello"},
                           "finish_reason": "length"}],
              "usage": {"prompt_tokens": 9, "completion_tokens": 5}}  # fmt: skip
    converted = translate.chat_answer(answer, "chat", 0.0)
    assert converted["message"] == {"role": "assistant", "content": "Hello"}
    assert (converted["done"], converted["done_reason"]) == (True, "length")
    assert (converted["prompt_eval_count"], converted["eval_count"]) == (9, 5)


def test_a_stream_is_translated_piece_by_piece() -> None:
    stream = translate.StreamTranslator("generate", "smollm2")
    assert stream.chunk({"choices": [{"text": "Once"}]})["response"] == "Once"
    assert stream.chunk({"choices": [{"text": "", "finish_reason": "stop"}]}) is None
    stream.chunk({"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 1}})
    last = stream.last()
    assert (last["done"], last["done_reason"], last["eval_count"]) == (True, "stop", 1)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"messages": []}, "messages must be a non-empty list"),
        (
            {"messages": [{"content": "x"}]},
            "messages[0] must be an object with a role: system, user, assistant, tool",
        ),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content must be a string"),
        ({"messages": [{"role": "user"}], "stream": "no"}, "stream must be true or false"),
        ({"messages": [{"role": "user"}], "options": []}, "options must be an object"),
    ],
)
def test_bad_ollama_requests_name_the_field(body: dict[str, object], expected: str) -> None:
    with pytest.raises(
        translate.BadRequest, match=expected.replace("[", r"\[").replace("]", r"\]")
    ):
        translate.chat_request(body, "m")


def test_the_inventorys_workers_become_backends(tmp_path: Path) -> None:
    from clusterai_runner.adapters.inventory import load as load_inventory
    from clusterai_runner.usecases.gateway_backends import (
        backend_key_environment,
        worker_backends,
    )

    inventory = write(tmp_path, """\
all:
  vars:
    clusterai_backend_api_key: inventory-backend-key-0123
  children:
    control:
      hosts:
        ctl1: {ansible_host: 192.0.2.10, clusterai_address: 192.0.2.10}
    workers:
      hosts:
        w1: {ansible_host: 192.0.2.21, clusterai_address: 192.0.2.21,
             clusterai_inference_backend: llamacpp, llamacpp_server_port: 8081}
        w3: {ansible_host: 192.0.2.23, clusterai_address: 192.0.2.23,
             clusterai_inference_backend: llamacpp, llamacpp_server_embedding: true}
        w2: {ansible_host: 192.0.2.22, clusterai_address: "2001:db8::22",
             clusterai_inference_backend: ollama}
""")  # fmt: skip
    # llama.cpp's servers require the backend key (the catalogue's auth: bearer); Ollama's
    # have none.
    assert worker_backends(load_inventory(inventory)) == [
        {"name": "w1", "url": "http://192.0.2.21:8081", "api": "openai",
         "capabilities": ["chat", "completions"], "api_key_env": "CLUSTERAI_BACKEND_API_KEY"},
        {"name": "w3", "url": "http://192.0.2.23:8080", "api": "openai",
         "capabilities": ["chat", "completions", "embeddings"],
         "api_key_env": "CLUSTERAI_BACKEND_API_KEY"},
        {"name": "w2", "url": "http://[2001:db8::22]:11434", "api": "ollama",
         "capabilities": ["chat", "completions", "embeddings", "stream_usage"]},
    ]  # fmt: skip
    hosts = load_inventory(inventory)
    env = backend_key_environment(hosts)
    assert env["CLUSTERAI_BACKEND_API_KEY"] == "inventory-backend-key-0123"
    config = load(None, workers=worker_backends(hosts), env=env)
    assert [(b.name, b.api, b.capabilities, b.api_key) for b in config.backends] == [
        ("w1", "openai", ("chat", "completions"), "inventory-backend-key-0123"),
        ("w3", "openai", ("chat", "completions", "embeddings"), "inventory-backend-key-0123"),
        ("w2", "ollama", ("chat", "completions", "embeddings", "stream_usage"), None),
    ]


def test_the_metrics_listener_is_read_with_its_web_config_beside_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, """\
listen: 127.0.0.1:8000
backends: [{name: a, url: "http://127.0.0.1:9", api: openai}]
metrics: {listen: "127.0.0.1:8001", web_config: metrics-web.yml}
""")  # fmt: skip
    config = load(path, env={})
    assert (config.metrics_host, config.metrics_port) == ("127.0.0.1", 8001)
    assert config.metrics_web_config == str(tmp_path / "metrics-web.yml")
    assert (
        load(write(tmp_path, "backends: [{name: a, url: 'http://x:9'}]\n"), env={}).metrics_host
        is None
    )


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ("{listen: '127.0.0.1:8001'}", "metrics: needs listen and web_config"),
        ("{listen: nowhere, web_config: w.yml}", "metrics.listen: 'nowhere' is not HOST:PORT"),
        ("{listen: '127.0.0.1:8000', web_config: w.yml}", "metrics.listen: is the client listener"),
        (
            "{listen: '127.0.0.1:8001', web_config: w.yml, tls: true}",
            "metrics.tls: is not a setting",
        ),
    ],
)
def test_a_bad_metrics_section_names_the_field(tmp_path: Path, metrics: str, message: str) -> None:
    path = write(tmp_path, f"""\
listen: 127.0.0.1:8000
backends: [{{name: a, url: "http://127.0.0.1:9", api: openai}}]
metrics: {metrics}
""")  # fmt: skip
    with pytest.raises(UsageError, match=re.escape(message)):
        load(path, env={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]", "is not a mapping"),
        ("basic_auth_users: {a: x}", "tls_server_config: needs cert_file and key_file"),
        ("tls_server_config: {cert_file: c, key_file: k}", "basic_auth_users: needs at least one"),
        ("tls_server_config: {cert_file: c, key_file: k}\nbasic_auth_users: {a: plain}",
         "basic_auth_users.a: is not a bcrypt hash"),
    ],
)  # fmt: skip
def test_a_bad_web_config_names_the_field(tmp_path: Path, text: str, message: str) -> None:
    from clusterai_runner.gateway.monitoring import read_web_config

    (tmp_path / "web.yml").write_text(text)
    with pytest.raises(UsageError, match=re.escape(message)):
        read_web_config(tmp_path / "web.yml")


def test_throughput_baselines_come_from_usage_records_and_drops_need_samples_each_side() -> None:
    now = time.time()

    def record(ago: float, tokens: int, latency_ms: float, **more: Any) -> dict[str, Any]:
        at = datetime.fromtimestamp(now - ago, UTC).isoformat(timespec="milliseconds")
        return {"at": at, "backend": "w1", "model": "smollm2", "status": 200,
                "completion_tokens": tokens, "latency_ms": latency_ms, "ttft_ms": 100.0,
                "cache_hit": False, **more}  # fmt: skip

    watch = Throughput(drop_below=0.5, recent_s=60, baseline_s=3600, min_samples=3)
    records = [record(600 + i, 40, 1100.0) for i in range(3)]  # 40 tokens/s, 10 min ago
    records += [record(700, 40, 1100.0, cache_hit=True), record(700, 40, 1100.0, status=500),
                record(700, 4, 200.0), record(7200, 40, 1100.0)]  # fmt: skip
    # The hit, the 500, the answer too short to time and the 2-hour-old one left out.
    assert watch.seed(records) == 3
    rates = watch.rates("w1", "smollm2")
    assert (rates.baseline, rates.baseline_samples, rates.recent) == (40.0, 3, None)
    for _ in range(2):
        watch.observe("w1", "smollm2", 40, 4.0)  # 10 tokens/s now
    assert watch.drops() == []  # two recent samples: not enough to say
    watch.observe("w1", "smollm2", 40, 4.0)
    (flag,) = watch.drops()
    assert (flag.kind, flag.backend, flag.model) == ("throughput_drop", "w1", "smollm2")
    assert flag.detail == ("10.0 tokens/s over the last 60 s, against 40.0 before"
                           " (under 50% of it)")  # fmt: skip
    watch.observe("w2", "smollm2", 7, 0.1)  # too short an answer to time
    assert ("w2", "smollm2") not in watch.samples
