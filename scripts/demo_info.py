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

    from clusterai_runner import backends
    from clusterai_runner.adapters.inventory import load

    control = next(h["address"] for h in status["hosts"] if h["group"] == "control")
    print("\nThe sandbox is up and provisioned. Look at it:")
    print(f"  Prometheus:    http://{control}:9090/targets")
    print(f"  Alertmanager:  http://{control}:9093")
    for host in load(Path(status["inventory"])):
        server = backends.of_host(host.variables)
        if host.kind == "workers" and server is not None:
            where = backends.url(host.address, server.port_for(host.variables), server.models_path)
            print(f"  inference:     curl {where}")
    print(f"  hosts:         .venv/bin/clusterai sandbox status --name {status['name']}")
    print(
        f"  ping:          .venv/bin/ansible -i {status['inventory']} all -m ansible.builtin.ping"
    )
    print("Remove it with: make demo-down")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
