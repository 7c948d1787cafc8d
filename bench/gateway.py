#!/usr/bin/env python3
"""Bench: what the gateway adds over a direct call, its cache, and LiteLLM's proxy.

One run, on this machine, against one real llama.cpp server with SmolLM2 (built from the
llamacpp_server role's cached wheelhouse, as the gateway tests do):

1. added latency: 1-token chat completions, one at a time over a kept-alive connection,
   taking turns: straight to the server, through ``clusterai gateway`` (auth on, with a
   key; usage records written to a scratch state store), and through LiteLLM's proxy in
   front of the same server (``litellm --config``, a virtual environment of its own, made
   once with ``pip install 'litellm[proxy]'``). Prints p50 and p99 of each, what each
   proxy adds over the direct call, and the ratio of the two additions;
2. cache hits per second: one deterministic request (temperature 0) answered, then asked
   again by concurrent clients (a separate process) for a few seconds, served from the
   gateway's cache with no backend involved.

Not a test: timings never gate CI.

    .venv/bin/python bench/gateway.py [--requests 300] [--hit-seconds 5] [--clients 32]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.gateway.conftest import (  # noqa: E402
    free_port,
    llama_server_assets,
    start_gateway,
    start_server,
    stop,
    wait_http,
)
from tests.helpers import run_cli  # noqa: E402

LITELLM_VENV = Path.home() / ".cache" / "clusterai" / "litellm-venv"
LITELLM_KEY = "sk-" + secrets.token_hex(32)
CHAT = {
    "model": "smollm2",
    "messages": [{"role": "user", "content": "Hi"}],
    "max_tokens": 1,
    "temperature": 0.7,
}


def make_litellm_venv() -> None:
    """LiteLLM's proxy in a virtual environment of its own (FastAPI, uvicorn and httpx
    come with it; bench/frameworks.py uses those), made once."""
    if not (LITELLM_VENV / "bin" / "litellm").exists():
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"],
                       check=True)  # fmt: skip


def litellm(server_url: str, scratch: Path) -> subprocess.Popen[bytes]:
    binary = LITELLM_VENV / "bin" / "litellm"
    make_litellm_venv()
    port = free_port()
    config = scratch / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: smollm2\n"
        "    litellm_params:\n"
        "      model: openai/smollm2\n"
        f"      api_base: {server_url}/v1\n"
        "      api_key: unused\n"
    )
    log = scratch / "litellm.log"
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_MASTER_KEY": LITELLM_KEY,  # both proxies check a key on every request
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
             "--num_workers", "1", "--telemetry", "False"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    process.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    wait_http(process.url + "/health/liveliness", 180, process, log)  # type: ignore[attr-defined]
    return process


class Client:
    """One kept-alive connection; returns the seconds a request took."""

    def __init__(self, url: str, key: str | None = None, cache: bool = False) -> None:
        host = url.removeprefix("http://")
        self.connection = http.client.HTTPConnection(host, timeout=60)
        self.headers = {"Content-Type": "application/json"}
        if not cache:
            self.headers["Cache-Control"] = "no-cache"
        if key:
            self.headers["Authorization"] = f"Bearer {key}"

    def chat(self, body: bytes) -> float:
        started = time.perf_counter()
        self.connection.request("POST", "/v1/chat/completions", body, self.headers)
        response = self.connection.getresponse()
        answer = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            sys.exit(f"error: bench: HTTP {response.status}: {answer[:300]!r}")
        return elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


HIT_CLIENT = r"""
import asyncio, sys, time, aiohttp
url, key, body = sys.argv[1], sys.argv[2], sys.argv[5].encode()
seconds, clients = float(sys.argv[3]), int(sys.argv[4])
async def main():
    headers = {"Content-Type": "application/json", "Authorization": "Bearer " + key}
    done = 0; bad = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as s:
        end = time.perf_counter() + seconds
        async def worker():
            nonlocal done, bad
            while time.perf_counter() < end:
                async with s.post(url, data=body, headers=headers) as r:
                    await r.read()
                    if r.status == 200 and r.headers.get("X-Cache") == "hit": done += 1
                    else: bad += 1
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        print(done / (time.perf_counter() - start), bad)
asyncio.run(main())
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--hit-seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        python, model = llama_server_assets(scratch)
        server = start_server(python, model, "bench", scratch)
        state = scratch / "state"
        key = run_cli("gateway", "keys", "create", "bench",
                      env={"CLUSTERAI_STATE_DIR": str(state)}).stdout.strip()  # fmt: skip
        gateway = start_gateway([server], scratch, state, auth={"enabled": True})
        proxy = litellm(server.url, scratch)
        try:
            body = json.dumps(CHAT).encode()
            clients = {
                "direct": Client(server.url),
                "gateway": Client(gateway.url, key),
                "litellm": Client(proxy.url, LITELLM_KEY),  # type: ignore[attr-defined]
            }
            for client in clients.values():  # warm up: connections, caches, JITs
                for _ in range(10):
                    client.chat(body)
            times: dict[str, list[float]] = {name: [] for name in clients}
            for _ in range(args.requests):
                for name, client in clients.items():
                    times[name].append(client.chat(body))
            p50 = {n: statistics.median(t) * 1000 for n, t in times.items()}
            p99 = {n: percentile(t, 0.99) * 1000 for n, t in times.items()}

            deterministic = json.dumps({**CHAT, "temperature": 0}).encode()
            Client(gateway.url, key, cache=True).chat(deterministic)  # the miss that fills it
            hits = subprocess.run(
                [sys.executable, "-c", HIT_CLIENT, gateway.url + "/v1/chat/completions", key,
                 str(args.hit_seconds), str(args.clients), deterministic.decode()],
                capture_output=True, text=True, check=True,
            ).stdout.split()  # fmt: skip
        finally:
            stop(proxy)
            stop(gateway.process)
            stop(server.process)
    added = {n: (p50[n] - p50["direct"], p99[n] - p99["direct"]) for n in ("gateway", "litellm")}
    print(f"1-token chat completions, {args.requests} each, one at a time, taking turns:")
    for name in clients:
        extra = ""
        if name in added:
            extra = f"   adds p50 {added[name][0]:6.2f} ms, p99 {added[name][1]:6.2f} ms"
        print(f"  {name:<8} p50 {p50[name]:7.2f} ms  p99 {p99[name]:7.2f} ms{extra}")
    ratio = added["litellm"][0] / added["gateway"][0] if added["gateway"][0] > 0 else float("inf")
    print(f"  LiteLLM adds {ratio:.1f}x what the gateway adds at p50")
    print(f"cache hits: {float(hits[0]):.0f} requests/s with {args.clients} clients "
          f"({hits[1]} not hits)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
