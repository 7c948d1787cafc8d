"""Starting the gateway: the checks and defaults shared by ``clusterai gateway`` and
``python -m clusterai_runner.gateway`` (the systemd service the gateway role installs).

Nothing here imports Ansible: the service runs from a virtual environment that holds
only the gateway's own dependencies.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import os
from collections.abc import Callable
from pathlib import Path

from clusterai_runner.config import Settings, open_store, private_file
from clusterai_runner.errors import UsageError
from clusterai_runner.gateway.app import serve
from clusterai_runner.gateway.config import GatewayConfig
from clusterai_runner.gateway.monitoring import read_web_config, server_context
from clusterai_runner.systemd import notify_systemd


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def watchdog_interval() -> float | None:
    """Seconds between pings when systemd watches this process (``WatchdogSec=``): half
    its timeout, as sd_watchdog_enabled(3) advises; None when nothing watches."""
    usec, pid = os.environ.get("WATCHDOG_USEC", ""), os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid.isdigit() and int(pid) != os.getpid()):
        return None
    return int(usec) / 2_000_000


async def feed_watchdog(every: float) -> None:
    """Ping systemd's watchdog from the event loop: a loop that stops turning (blocked,
    deadlocked) stops the pings, and systemd restarts the service."""
    while True:
        notify_systemd("WATCHDOG=1")
        await asyncio.sleep(every)


def run_gateway(
    read: Callable[[], GatewayConfig], settings: Settings, say: Callable[[str], None]
) -> None:
    """Load the configuration with ``read``, check it against the rules, open the store,
    serve until stopped; SIGHUP loads it again and applies the new backends."""

    def prepared() -> GatewayConfig:
        config = read()
        if config.cache_enabled and config.cache_path is None:
            cache = str(private_file(settings.private_state_dir() / "gateway-cache.db"))
            config = dataclasses.replace(config, cache_path=cache)
        return config

    config = prepared()
    if not config.auth_enabled and not is_loopback(config.host):
        raise UsageError(
            f"listen address {config.host}",
            "auth is off, which is allowed on loopback addresses only",
            "turn auth on (the default) and create keys with `clusterai gateway keys create`",
        )
    if config.cache_enabled and config.cache_path is not None:
        Path(config.cache_path).parent.mkdir(parents=True, exist_ok=True)
    store = open_store(settings)
    if config.auth_enabled and not store.list_keys(include_revoked=False):
        say(
            "warning: no API keys yet: every request will get a 401 until you run "
            "`clusterai gateway keys create NAME`"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    watchdog = watchdog_interval()
    feeding: list[asyncio.Task[None]] = []

    def ready(url: str) -> None:
        say(f"gateway listening on {url}")
        # Only now: a reload (SIGHUP) that systemd sends after this finds its handler.
        notify_systemd("READY=1")
        if watchdog is not None:
            feeding.append(asyncio.get_running_loop().create_task(feed_watchdog(watchdog)))

    monitoring = None
    if config.metrics_host is not None and config.metrics_web_config is not None:
        web_config = read_web_config(Path(config.metrics_web_config))
        monitoring = (web_config, server_context(web_config))
    spool = settings.private_state_dir() / "usage-spool"
    serve(config, store, spool, ready=ready, read=prepared, monitoring=monitoring)
