"""The gateway's configuration for ``clusterai gateway``: its file, ``--backend`` URLs and
every worker of an inventory as a backend (read again on each reload)."""

from __future__ import annotations

from pathlib import Path

from clusterai_runner.adapters.inventory import InventoryHost
from clusterai_runner.adapters.inventory import load as load_inventory
from clusterai_runner.gateway.config import GatewayConfig, load
from clusterai_runner.usecases.status import DEFAULT_PORTS

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


def gateway_config(
    config_path: Path | None,
    backends: tuple[str, ...] = (),
    listen: str | None = None,
    inventory: Path | None = None,
) -> GatewayConfig:
    """The configuration file (or defaults), with ``backends`` URLs and, when
    ``inventory`` is given, each of its workers' inference servers."""
    workers = worker_backends(load_inventory(inventory)) if inventory is not None else []
    return load(config_path, backends, listen, workers=workers)
