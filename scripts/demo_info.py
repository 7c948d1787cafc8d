#!/usr/bin/env python3
"""Read `clusterai sandbox status --json` on stdin; print what `make demo` needs.

demo_info.py inventory   the inventory's path
demo_info.py summary     where to look once the sandbox is provisioned, and a real answer
                         of SmolLM2 through the gateway, with the sandbox's API key
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

PROMPT = "In one sentence: what is a GPU?"


def ask(control: str, key: str) -> str:
    """A chat completion through the gateway, as any OpenAI client would send it."""
    body = {"model": "smollm2", "max_tokens": 48, "temperature": 0,
            "messages": [{"role": "user", "content": PROMPT}]}  # fmt: skip
    request = urllib.request.Request(
        f"http://{control}:8000/v1/chat/completions", json.dumps(body).encode(),
        {"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            reply = json.load(answer)
    except (OSError, urllib.error.URLError, ValueError) as error:
        return f"(no answer: {error})"
    return str(reply["choices"][0]["message"]["content"]).strip()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in {"inventory", "summary"}:
        print("usage: demo_info.py inventory|summary < status.json", file=sys.stderr)
        return 2
    status = json.load(sys.stdin)
    if argv[1] == "inventory":
        print(status["inventory"])
        return 0
    from clusterai_runner.config import Settings

    control = next(h["address"] for h in status["hosts"] if h["group"] == "control")
    sandbox = Path(status["inventory"]).parent
    ca = Settings.from_env().cache_dir / "pki" / control / "ca.crt"
    admin = (sandbox / "web-admin-password").read_text().strip()
    key = (sandbox / "gateway-api-key").read_text().strip()
    print("\nThe sandbox is up and provisioned. Look at it:")
    print(f"  web app:       https://{control}:8443/")
    print(f"    login:       admin / {admin}  (made for this sandbox)")
    print(f"    CA:          {ca} (the cluster's own: trust it, or curl --cacert it)")
    print(f"  gateway:       http://{control}:8000/v1  (OpenAI and Ollama APIs)")
    print(f"    API key:     {key}")
    print(f"  Prometheus:    https://{control}:9090/targets")
    print(f"  Alertmanager:  https://{control}:9093")
    print(f"    login:       clusterai, password in {sandbox / 'monitoring-password'}")
    print("  workers:       their inference servers answer only the control host (firewall)")
    print(f"  status:        .venv/bin/clusterai status -i {status['inventory']}")
    print(f"  hosts:         .venv/bin/clusterai sandbox status --name {status['name']}")
    print(
        f"  ping:          .venv/bin/ansible -i {status['inventory']} all -m ansible.builtin.ping"
    )
    print(f"\nAsked through the gateway: {PROMPT!r}")
    print(f"SmolLM2 answered: {ask(control, key)}")
    print(f"  (curl http://{control}:8000/v1/chat/completions -H 'Authorization: Bearer {key}'"
          " -H 'Content-Type: application/json' -d '{\"model\": \"smollm2\", \"messages\":"
          " [{\"role\": \"user\", \"content\": \"Hello\"}]}')")  # fmt: skip
    print("Remove it with: make demo-down")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
