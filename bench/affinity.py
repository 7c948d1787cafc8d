#!/usr/bin/env python3
"""Bench: prefix affinity, a conversation's turns sent back to the backend of its earlier
turns, against routing by load alone.

Two real llama.cpp servers with SmolLM2 (built from the llamacpp_server role's cached
wheelhouse, as the gateway tests do), ``clusterai gateway`` in front of them with
``routing.affinity`` on, then off. In each mode, ``--conversations`` conversations at once
(one thread each), ``--turns`` turns each: a long system prompt (about 1,000 tokens), then
each turn adds the last answer and a new question, after a pause of up to a second. Time
to first token of every turn after the first, streamed; llama.cpp's server keeps the last
prompt's tokens and evaluates only what follows the common prefix, so a turn that lands
where its conversation's earlier turn was skips most of its prompt (one server, this
prompt: 3.7 s cold, 0.08 s for the next turn). Prints each mode's TTFT p50 and p95, and
the ratio.

Not a test: timings never gate CI.

    .venv/bin/python bench/affinity.py [--conversations 2] [--turns 10]
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.gateway.conftest import (  # noqa: E402
    llama_server_assets,
    start_gateway,
    start_server,
    stop,
)

# About 1,000 tokens: what the server skips when a turn lands where the last one was.
SYSTEM = (
    "You are the help desk of a company that runs a cluster of machines for language models."
    " Answer in one short sentence. " * 36
)
QUESTIONS = [
    "How do I add a worker?", "What does the gateway do?", "Why is my model slow?",
    "Can I use a desktop GPU?", "How are keys stored?", "What is a parked worker?",
    "How do I upgrade?", "Where are the logs?", "What does drain mean?", "How do I stop it?",
]  # fmt: skip


def ttft(url: str, messages: list[dict[str, str]]) -> tuple[float, str]:
    """Seconds to the first streamed piece of text, and the whole answer."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=300)
    body = {"model": "smollm2", "messages": messages, "max_tokens": 12, "stream": True,
            "temperature": 0.7}  # fmt: skip
    started = time.perf_counter()
    headers = {"Content-Type": "application/json", "Cache-Control": "no-cache"}
    connection.request("POST", "/v1/chat/completions", json.dumps(body), headers)
    response = connection.getresponse()
    first, text = 0.0, []
    for raw in response:
        line = raw.strip()
        if not line.startswith(b"data:") or line == b"data: [DONE]":
            continue
        chunk = json.loads(line[5:])
        piece = (chunk.get("choices") or [{}])[0].get("delta", {}).get("content")
        if piece:
            first = first or time.perf_counter() - started
            text.append(piece)
    connection.close()
    return first, "".join(text)


def conversation(url: str, number: int, turns: int, into: list[float]) -> None:
    """One user: a turn, a pause to read the answer (0 to 1 s, the same each run), the
    next turn."""
    pauses = random.Random(number)
    messages = [{"role": "system", "content": f"(desk {number}) " + SYSTEM}]
    for turn in range(turns):
        time.sleep(pauses.uniform(0.0, 1.0))
        messages.append({"role": "user", "content": QUESTIONS[turn % len(QUESTIONS)]})
        seconds, answer = ttft(url, messages)
        if turn:  # the first turn has no earlier one to reuse
            into.append(seconds)
        messages.append({"role": "assistant", "content": answer})


def mode(
    servers: list, scratch: Path, affinity: bool, conversations: int, turns: int
) -> list[float]:  # type: ignore[type-arg]
    gateway = start_gateway(servers, scratch, routing={"affinity": affinity},
                            cache={"enabled": False})  # fmt: skip
    try:
        seen: list[float] = []
        threads = [threading.Thread(target=conversation, args=(gateway.url, n, turns, seen))
                   for n in range(conversations)]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return seen
    finally:
        stop(gateway.process)


def quantile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=2)
    parser.add_argument("--turns", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        assets = llama_server_assets(scratch)
        servers = [start_server(*assets, f"llama{n}", scratch) for n in (1, 2)]
        try:
            results = {}
            for affinity in (True, False):
                results[affinity] = mode(servers, scratch, affinity, args.conversations,
                                         args.turns)  # fmt: skip
        finally:
            for server in servers:
                stop(server.process)
    print(f"{args.conversations} conversations at once, {args.turns} turns each, over two"
          " llama.cpp servers; TTFT of turns 2 and later (s):")  # fmt: skip
    for affinity, label in ((True, "with affinity"), (False, "by load alone")):
        values = results[affinity]
        print(f"  {label:14} p50 {statistics.median(values):.3f}  p95 "
              f"{quantile(values, 0.95):.3f}  ({len(values)} turns)")  # fmt: skip
    ratio = statistics.median(results[False]) / statistics.median(results[True])
    print(f"  by load alone / with affinity, p50: {ratio:.2f}x")


if __name__ == "__main__":
    main()
