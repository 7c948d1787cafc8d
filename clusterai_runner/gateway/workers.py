"""The cluster's workers as gateway backends, from an inventory (read at startup only)."""

from __future__ import annotations

from clusterai_runner.inventory import InventoryHost
from clusterai_runner.status import DEFAULT_PORTS

# clusterai_inference_backend -> (the API it speaks, the variable holding its port)
SERVERS = {"llamacpp": ("openai", "llamacpp_server_port"), "ollama": ("ollama", "ollama_port")}


def worker_backends(hosts: list[InventoryHost]) -> list[dict[str, str]]:
    """One backend entry (name, url, api) per worker with a known inference backend."""
    found = []
    for host in hosts:
        backend = str(host.variables.get("clusterai_inference_backend", ""))
        if host.kind != "workers" or backend not in SERVERS:
            continue
        api, port_variable = SERVERS[backend]
        port = int(host.variables.get(port_variable, DEFAULT_PORTS[port_variable]))
        address = f"[{host.address}]" if ":" in host.address else host.address
        found.append({"name": host.name, "url": f"http://{address}:{port}", "api": api})
    return found
