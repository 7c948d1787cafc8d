#!/usr/bin/env python3
"""Read `clusterai sandbox status --json` on stdin; print what `make demo` needs.

demo_info.py inventory   the inventory's path
demo_info.py summary     where to look once the sandbox is provisioned
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in {"inventory", "summary"}:
        print("usage: demo_info.py inventory|summary < status.json", file=sys.stderr)
        return 2
    status = json.load(sys.stdin)
    if argv[1] == "inventory":
        print(status["inventory"])
        return 0
    from pathlib import Path

    from clusterai_runner.config import Settings

    control = next(h["address"] for h in status["hosts"] if h["group"] == "control")
    sandbox = Path(status["inventory"]).parent
    ca = Settings.from_env().cache_dir / "pki" / control / "ca.crt"
    print("\nThe sandbox is up and provisioned. Look at it:")
    print(f"  Prometheus:    https://{control}:9090/targets")
    print(f"  Alertmanager:  https://{control}:9093")
    print(f"    login:       clusterai, password in {sandbox / 'monitoring-password'}")
    print(f"    CA:          {ca} (the cluster's own: trust it, or curl --cacert it)")
    print(f"  gateway:       http://{control}:8000/v1/models (API keys: gateway_api_keys in the"
          " inventory, roles/gateway/README.md)")  # fmt: skip
    print("  workers:       their inference servers answer only the control host (firewall)")
    print(f"  status:        .venv/bin/clusterai status -i {status['inventory']}")
    print(f"  hosts:         .venv/bin/clusterai sandbox status --name {status['name']}")
    print(
        f"  ping:          .venv/bin/ansible -i {status['inventory']} all -m ansible.builtin.ping"
    )
    print("Remove it with: make demo-down")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
