"""Starting the gateway: the checks and defaults shared by ``clusterai gateway`` and
``python -m clusterai_runner.gateway`` (the systemd service the gateway role installs).

Nothing here imports Ansible: the service runs from a virtual environment that holds
only the gateway's own dependencies.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from collections.abc import Callable

from clusterai_runner.config import Settings, open_store
from clusterai_runner.errors import UsageError
from clusterai_runner.gateway.app import serve
from clusterai_runner.gateway.config import GatewayConfig


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run_gateway(config: GatewayConfig, settings: Settings, say: Callable[[str], None]) -> None:
    """Check the configuration against the rules, open the store, serve until stopped."""
    if not config.auth_enabled and not is_loopback(config.host):
        raise UsageError(
            f"listen address {config.host}",
            "auth is off, which is allowed on loopback addresses only",
            "turn auth on (the default) and create keys with `clusterai gateway keys create`",
        )
    if config.cache_enabled and config.cache_path is None:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        cache = str(settings.state_dir / "gateway-cache.db")
        config = dataclasses.replace(config, cache_path=cache)
    store = open_store(settings)
    if config.auth_enabled and not store.list_keys(include_revoked=False):
        say(
            "warning: no API keys yet: every request will get a 401 until you run "
            "`clusterai gateway keys create NAME`"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    serve(config, store, ready=lambda url: say(f"gateway listening on {url}"))
