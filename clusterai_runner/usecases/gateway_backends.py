"""The gateway's configuration for ``clusterai gateway``: its file, ``--backend`` URLs and
every worker of an inventory as a backend (read again on each reload)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from clusterai_runner import backends
from clusterai_runner.adapters.inventory import InventoryHost
from clusterai_runner.adapters.inventory import load as load_inventory
from clusterai_runner.gateway.config import GatewayConfig, load


def worker_backends(hosts: list[InventoryHost]) -> list[dict[str, Any]]:
    """One backend entry (name, url, api, capabilities) per worker with a known inference
    backend; a server that requires a key reads it from the environment (KEY_ENVIRONMENT).
    A parked worker is a standby entry with the models it would serve (none: left out)."""
    found = []
    for host in hosts:
        server = backends.of_host(host.variables)
        if host.kind != "workers" or server is None:
            continue
        models = server.models_for(host.variables)
        if host.parked and not models:
            continue
        address = backends.url(host.address, server.port_for(host.variables))
        capabilities = server.capabilities_for(host.variables)
        entry: dict[str, Any] = {
            "name": host.name,
            "url": address,
            "api": server.api,
            "capabilities": capabilities,
        }
        if server.auth == "bearer":
            entry["api_key_env"] = backends.KEY_ENVIRONMENT
        if host.parked:
            entry.update(standby=True, models=models)
        found.append(entry)
    return found


def backend_key_environment(hosts: list[InventoryHost]) -> dict[str, str]:
    """The environment the gateway reads backend keys from: this process's, with the
    inventory's clusterai_backend_api_key unless the environment sets the key already."""
    env = dict(os.environ)
    keys = {
        str(h.variables[backends.KEY_VARIABLE])
        for h in hosts
        if h.variables.get(backends.KEY_VARIABLE)
    }
    if keys and not env.get(backends.KEY_ENVIRONMENT):
        env[backends.KEY_ENVIRONMENT] = sorted(keys)[0]
    return env


def gateway_config(
    config_path: Path | None,
    backends: tuple[str, ...] = (),
    listen: str | None = None,
    inventory: Path | None = None,
) -> GatewayConfig:
    """The configuration file (or defaults), with ``backends`` URLs and, when
    ``inventory`` is given, each of its workers' inference servers."""
    hosts = load_inventory(inventory) if inventory is not None else []
    return load(
        config_path,
        backends,
        listen,
        env=backend_key_environment(hosts),
        workers=worker_backends(hosts),
    )
