"""Redis going away under load: the gateway keeps answering, from its backends.

A real redis-server, the gateway as the CLI starts it, and a stand-in OpenAI backend
process (tests/fixtures/openai_stand_in.py), so that the backend is never the bottleneck
and only the cache's behaviour is under test. bench/gateway_redis.py measures the same
setup's latency with Redis up and down."""

from __future__ import annotations

import signal
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.gateway.conftest import Redis, start_gateway, start_stand_in, stop
from tests.helpers import wait_for


@pytest.mark.parametrize("outage", ["stopped", "frozen"])
def test_redis_going_away_under_20_clients_fails_no_request(
    tmp_path: Path, redis_server: Redis, outage: str
) -> None:
    """``stopped``: the server exits (connections refused at once). ``frozen``: SIGSTOP,
    so connections hang until the client's timeout, as with a dead host or a full link."""
    backend = start_stand_in(tmp_path)
    gateway = start_gateway([backend], tmp_path, cache={"redis_url": redis_server.url})
    errors: list[str] = []
    seen = {"hit": 0, "miss": 0}
    lock = threading.Lock()
    done = threading.Event()

    def client(number: int) -> None:
        request_number = 0
        while not done.is_set():
            request_number += 1
            # Deterministic (a seed): half repeat an earlier request, half are new.
            seed = number * 100_000 + (request_number // 2)
            body = (
                b'{"model": "stand-in", "messages": [{"role": "user", "content": "hi"}],'
                b' "seed": %d}' % seed
            )
            request = urllib.request.Request(
                gateway.url + "/v1/chat/completions",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    answer.read()
                    with lock:
                        seen[answer.headers["X-Cache"]] += 1
            except (urllib.error.URLError, OSError) as exc:
                with lock:
                    errors.append(repr(exc))

    clients = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    try:
        for thread in clients:
            thread.start()
        wait_for(lambda: seen["hit"] >= 100, 60, "cache hits through Redis")
        if outage == "stopped":
            redis_server.stop()
        else:
            redis_server.process.send_signal(signal.SIGSTOP)
        with lock:
            before = seen["miss"]
        wait_for(lambda: seen["miss"] >= before + 400, 60, "answers without Redis")
    finally:
        done.set()
        for thread in clients:
            thread.join(timeout=60)
        stop(gateway.process)
        stop(backend.process)
        redis_server.process.send_signal(signal.SIGCONT)
    assert errors == [], errors[:5]
    log = gateway.log.read_text()
    assert "the Redis cache is unreachable" in log
    # Skipped after a failure rather than tried by every request.
    assert log.count("the Redis cache is unreachable") < 20
