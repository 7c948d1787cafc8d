#!/usr/bin/env python3
"""Bench: the gateway's latency with its Redis cache up, stopped, and frozen.

One run, on this machine: a real redis-server, ``clusterai gateway`` with
``cache.redis_url`` pointing at it, and a stand-in OpenAI backend process that answers at
once (tests/fixtures/openai_stand_in.py), so the numbers are the gateway's and its cache's.
20 concurrent clients (one process, aiohttp, kept-alive connections) send deterministic
chat requests, each new (a cache miss, then an answer written to the cache), for
``--seconds`` in each phase:

1. Redis up;
2. Redis stopped (the process exits: connections are refused at once);
3. Redis frozen (SIGSTOP on a fresh server: connections hang until the client's timeout).

Prints requests, errors, p50 and p99 per phase, and each outage's p99 over Redis up's
(the target: within 2x, with 0 errors). Not a test: timings never gate CI.

    .venv/bin/python bench/gateway_redis.py [--seconds 10] [--clients 20]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.gateway.conftest import free_port, start_gateway, stop, wait_http  # noqa: E402
from tests.gateway.test_gateway_redis import start_stand_in  # noqa: E402


def start_redis(scratch: Path) -> tuple[str, subprocess.Popen[bytes]]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("error: redis-server is missing (apt-get install -y redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", str(scratch)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                         check=False).returncode != 0:  # fmt: skip
        if time.monotonic() > deadline:
            raise SystemExit("error: redis-server did not start")
        time.sleep(0.05)
    return f"redis://127.0.0.1:{port}/0", process


async def phase(
    url: str, clients: int, seconds: float, seeds: itertools.count[int]
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.monotonic() < deadline:
            body = {"model": "stand-in", "messages": [{"role": "user", "content": "hi"}],
                    "seed": next(seeds)}  # fmt: skip
            started = time.perf_counter()
            try:
                async with session.post(url + "/v1/chat/completions", json=body) as answer:
                    await answer.read()
                    if answer.status != 200:
                        errors += 1
                        continue
            except aiohttp.ClientError:
                errors += 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p99": latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    seeds = itertools.count(1)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as name:
        scratch = Path(name)
        backend = start_stand_in(scratch)
        redis_url, redis = start_redis(scratch)
        gateway = start_gateway([backend], scratch, cache={"redis_url": redis_url})
        frozen: subprocess.Popen[bytes] | None = None
        try:
            asyncio.run(phase(gateway.url, args.clients, 1.0, seeds))  # warm up
            results["redis up"] = asyncio.run(phase(gateway.url, args.clients, args.seconds, seeds))
            redis.terminate()
            redis.wait(timeout=20)
            results["redis stopped"] = asyncio.run(
                phase(gateway.url, args.clients, args.seconds, seeds)
            )
            stop(gateway.process)
            frozen_url, frozen = start_redis(scratch)
            gateway = start_gateway([backend], scratch, cache={"redis_url": frozen_url})
            wait_http(gateway.url + "/healthz", 30, gateway.process, gateway.log)
            frozen.send_signal(signal.SIGSTOP)
            results["redis frozen"] = asyncio.run(
                phase(gateway.url, args.clients, args.seconds, seeds)
            )
        finally:
            stop(gateway.process)
            stop(backend.process)
            for process in (redis, frozen):
                if process is not None and process.poll() is None:
                    process.send_signal(signal.SIGCONT)
                    process.terminate()
                    process.wait(timeout=20)
    up = results["redis up"]["p99"]
    print(f"{'phase':<14} {'requests':>9} {'errors':>7} {'p50 ms':>8} {'p99 ms':>8}  p99 / up")
    for name, r in results.items():
        print(f"{name:<14} {r['requests']:>9.0f} {r['errors']:>7.0f} {r['p50']:>8.2f}"
              f" {r['p99']:>8.2f}  {r['p99'] / up:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
