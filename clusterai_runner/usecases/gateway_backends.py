"""The gateway's configuration for ``clusterai gateway``: its file, ``--backend`` URLs and
every worker of an inventory as a backend (read again on each reload)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clusterai_runner import backends
from clusterai_runner.adapters.inventory import InventoryHost
from clusterai_runner.adapters.inventory import load as load_inventory
from clusterai_runner.gateway.config import GatewayConfig, load


def worker_backends(hosts: list[InventoryHost]) -> list[dict[str, Any]]:
    """One backend entry (name, url, api, capabilities) per worker with a known inference
    backend."""
    found = []
    for host in hosts:
        server = backends.of_host(host.variables)
        if host.kind != "workers" or server is None:
            continue
        address = backends.url(host.address, server.port_for(host.variables))
        capabilities = server.capabilities_for(host.variables)
        found.append(
            {"name": host.name, "url": address, "api": server.api, "capabilities": capabilities}
        )
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
