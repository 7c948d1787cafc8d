#!/usr/bin/env python3
"""Bench: aiohttp versus Starlette/uvicorn/httpx for the gateway's request path.

The measurement behind the gateway's choice of framework. The same minimal proxy (read
the body, parse the JSON, forward it with a pooled client, hand the answer back) written
in each (bench/frameworks/), in front of the same stand-in backend that answers at once,
all run by one Python (LiteLLM's bench environment, which holds both frameworks; made
once by bench/gateway.py, or here). In one run:

1. added latency: chat completions one at a time over a kept-alive connection, taking
   turns: direct, through the aiohttp proxy, through the Starlette proxy; p50 and p99 of
   what each proxy adds;
2. throughput: 16 client threads for a few seconds against each proxy.

Not a test: timings never gate CI.

    .venv/bin/python bench/frameworks.py [--requests 1000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.gateway import LITELLM_VENV, make_litellm_venv  # noqa: E402
from tests.gateway.conftest import free_port, stop  # noqa: E402

BODY = json.dumps(
    {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
).encode()


def start(script: str, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        [str(LITELLM_VENV / "bin" / "python"), str(HERE / "frameworks" / script), str(port), *args]
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            post(http.client.HTTPConnection("127.0.0.1", port, timeout=5))
            return process, port
        except OSError:
            time.sleep(0.1)
    stop(process)
    raise SystemExit(f"error: bench: {script} did not answer within 30 s")


def post(connection: http.client.HTTPConnection) -> None:
    connection.request("POST", "/v1/chat/completions", BODY, {"Content-Type": "application/json"})
    answer = connection.getresponse()
    answer.read()
    if answer.status != 200:
        raise SystemExit(f"error: bench: HTTP {answer.status}")


def throughput(port: int, seconds: float, clients: int = 16) -> float:
    done = [0] * clients
    end = time.monotonic() + seconds

    def client(i: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while time.monotonic() < end:
            post(connection)
            done[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    make_litellm_venv()
    backend, backend_port = start("backend.py")
    backend_url = f"http://127.0.0.1:{backend_port}"
    proxies = {}
    try:
        proxies["aiohttp"] = start("aiohttp_proxy.py", backend_url)
        proxies["starlette"] = start("starlette_proxy.py", backend_url)
        ports = {"direct": backend_port, **{name: p for name, (_, p) in proxies.items()}}
        connections = {n: http.client.HTTPConnection("127.0.0.1", p) for n, p in ports.items()}
        times: dict[str, list[float]] = {name: [] for name in ports}
        for _ in range(50):  # warm up
            for connection in connections.values():
                post(connection)
        for _ in range(args.requests):
            for name, connection in connections.items():
                started = time.perf_counter()
                post(connection)
                times[name].append((time.perf_counter() - started) * 1000)
        rates = {name: throughput(ports[name], args.seconds) for name in proxies}
    finally:
        for process, _ in proxies.values():
            stop(process)
        stop(backend)

    def pct(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100)[int(q) - 1]

    direct50, direct99 = pct(times["direct"], 50), pct(times["direct"], 99)
    print(f"{args.requests} requests each, one at a time, taking turns; then 16 clients:")
    print(f"  direct               p50 {direct50:6.3f} ms  p99 {direct99:6.3f} ms")
    added = {}
    for name in proxies:
        p50, p99 = pct(times[name], 50) - direct50, pct(times[name], 99) - direct99
        added[name] = p50
        print(f"  {name:<10} adds     p50 {p50:6.3f} ms  p99 {p99:6.3f} ms"
              f"   {rates[name]:8.0f} requests/s with 16 clients")  # fmt: skip
    print(f"  Starlette/uvicorn/httpx adds {added['starlette'] / added['aiohttp']:.2f}x"
          f" aiohttp's latency; aiohttp serves {rates['aiohttp'] / rates['starlette']:.2f}x"
          " its requests per second")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
