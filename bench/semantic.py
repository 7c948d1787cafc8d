#!/usr/bin/env python3
"""Bench: the semantic cache's precision on a labelled set of prompt pairs.

``bench/data/paraphrase_pairs.json`` holds pairs marked the same (a paraphrase: one
answer fits both) or not (another question, mostly on the same topic). Each prompt is
embedded as the gateway's semantic layer embeds it (``gateway/semantic.py``: the chat's
text, mean-pooled as the gateway pools per-token vectors, normalised) by a real
embedding model, and each pair's cosine similarity is compared with three thresholds.
Precision: of the pairs a threshold would serve from the cache, the share that are truly
the same (a wrong hit serves the wrong answer); recall: of the pairs that are the same,
the share it would serve. Prints one row per threshold.

The model: SmolLM2 (135M, a chat model) in a real llama.cpp server with ``--embedding``,
built from the llamacpp_server role's cached wheelhouse, as the gateway tests do; or
``--url`` and ``--model`` for an OpenAI-style ``/v1/embeddings`` endpoint of another
model (an Ollama with ``nomic-embed-text``, say). Not a test: nothing here gates CI.

    .venv/bin/python bench/semantic.py [--thresholds 0.9 0.95 0.98] [--url URL --model M]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from clusterai_runner.gateway.semantic import normalised, prompt_text, similarity  # noqa: E402
from clusterai_runner.gateway.translate import pooled  # noqa: E402
from tests.gateway.conftest import llama_server_assets, start_server, stop  # noqa: E402

PAIRS = REPO / "bench" / "data" / "paraphrase_pairs.json"


def embed(url: str, model: str, prompt: str) -> bytes:
    body = {"model": "x", "messages": [{"role": "user", "content": prompt}]}
    text = prompt_text("/v1/chat/completions", body)
    request = urllib.request.Request(
        url.rstrip("/") + "/v1/embeddings",
        data=json.dumps({"model": model, "input": [text]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        vector = pooled(json.load(response))["data"][0]["embedding"]
    packed = normalised([float(x) for x in vector])
    assert packed is not None, "an all-zero embedding"
    return packed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.9, 0.95, 0.98])
    parser.add_argument("--url", help="an OpenAI-style embeddings endpoint (default: SmolLM2)")
    parser.add_argument("--model", default="smollm2")
    args = parser.parse_args()
    pairs = json.loads(PAIRS.read_text())["pairs"]
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        server = None
        url = args.url
        if url is None:
            server = start_server(*llama_server_assets(scratch), "embedder", scratch)
            url = server.url
        try:
            scored = [(similarity(embed(url, args.model, p["a"]), embed(url, args.model, p["b"])),
                       bool(p["same"])) for p in pairs]  # fmt: skip
        finally:
            if server is not None:
                stop(server.process)
    same = sum(1 for _, s in scored if s)
    print(f"{len(scored)} pairs ({same} the same, {len(scored) - same} not), model {args.model}")
    print("threshold  served  right  precision  recall")
    for threshold in args.thresholds:
        served = [s for score, s in scored if score >= threshold]
        right = sum(served)
        precision = f"{right / len(served):.2f}" if served else "-"
        print(f"{threshold:9.2f}  {len(served):6d}  {right:5d}  {precision:>9}  "
              f"{right / same:6.2f}")  # fmt: skip
    scores = sorted(scored)
    print("similarities, the same:", " ".join(f"{x:.3f}" for x, s in scores if s))
    print("similarities, not:     ", " ".join(f"{x:.3f}" for x, s in scores if not s))


if __name__ == "__main__":
    main()
