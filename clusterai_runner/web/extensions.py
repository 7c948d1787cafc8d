"""The app's extensions, each attached with ``init_app``: the state store it reads, CSRF
protection, the status watch that asks every host in the background, and the cluster's
services (Prometheus, Alertmanager, the gateway's admin API)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flask import Flask, current_app
from flask_wtf.csrf import CSRFProtect

from clusterai_runner.config import Settings, open_store
from clusterai_runner.errors import ClusterAIError, UsageError
from clusterai_runner.usecases import alerts as alerts_usecase
from clusterai_runner.usecases import metrics as metrics_usecase
from clusterai_runner.usecases import services as services_usecase
from clusterai_runner.usecases import status as status_usecase

if TYPE_CHECKING:
    from clusterai_runner.store import Store
    from clusterai_runner.usecases.alerts import Alert
    from clusterai_runner.usecases.services import ClusterServices
    from clusterai_runner.usecases.status import HostStatus

csrf = CSRFProtect()


class StoreExtension:
    """One store per app, opened (and migrated) at start; it serves every thread."""

    def init_app(self, app: Flask) -> None:
        settings: Settings = app.config["CLUSTERAI_SETTINGS"]
        app.extensions["clusterai_store"] = open_store(settings)

    @property
    def current(self) -> Store:
        opened: Store = current_app.extensions["clusterai_store"]
        return opened


store = StoreExtension()


@dataclass
class Snapshot:
    """What the status watch saw last: every host, when, and why it could not look; the
    alerts firing and the gateway's rates, or why they are missing."""

    hosts: list[HostStatus] = field(default_factory=list)
    at: float = 0.0
    error: str = ""
    alerts: list[Alert] | None = None
    gateway: dict[str, float] | None = None
    services_error: str = ""


class StatusWatch:
    """Asks every host of the configured inventory every interval, in a daemon thread
    started on the first page that wants it, so a page never waits on a slow host."""

    def init_app(self, app: Flask) -> None:
        app.extensions["clusterai_status"] = _Watch(app)

    @property
    def current(self) -> _Watch:
        watch: _Watch = current_app.extensions["clusterai_status"]
        return watch


class _Watch:
    def __init__(self, app: Flask) -> None:
        settings: Settings = app.config["CLUSTERAI_SETTINGS"]
        inventory = app.config["CLUSTERAI_INVENTORY"]
        vault = app.config["CLUSTERAI_VAULT"]
        self.interval = float(app.config["CLUSTERAI_STATUS_INTERVAL"])
        # Where the hosts' status comes from: the status use case over the inventory, or
        # what the configuration gives instead (CLUSTERAI_STATUS_SOURCE, for tests).
        source: Callable[[], list[HostStatus]] | None = app.config.get("CLUSTERAI_STATUS_SOURCE")
        if source is None and inventory is not None:
            timeout = min(3.0, self.interval)
            kwargs = {"vault": vault} if vault is not None else {}

            def source() -> list[HostStatus]:
                return status_usecase.status(settings, inventory, timeout=timeout, **kwargs)

        self.source = source
        self.services: _Cached = app.extensions["clusterai_services"]
        self.snapshot = Snapshot()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def latest(self) -> Snapshot:
        if self.source is None:
            return Snapshot(error="no inventory is configured (clusterai web serve -i INVENTORY)")
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="clusterai-status", daemon=True
                )
                self._thread.start()
        return self.snapshot

    def look(self) -> Snapshot:
        """Ask every host now (the thread's step)."""
        assert self.source is not None
        try:
            snapshot = Snapshot(self.source(), time.time())
        except ClusterAIError as error:
            snapshot = Snapshot(self.snapshot.hosts, self.snapshot.at, str(error))
        except Exception as error:  # the watch must outlive any one bad look
            logging.getLogger(__name__).exception("asking the hosts failed")
            reason = f"internal error: {type(error).__name__}: {error}"
            snapshot = Snapshot(self.snapshot.hosts, self.snapshot.at, reason)
        self._look_at_services(snapshot)
        self.snapshot = snapshot
        return snapshot

    def _look_at_services(self, snapshot: Snapshot) -> None:
        """The alerts firing (Alertmanager) and the gateway's rates (Prometheus)."""
        problems = []
        try:
            found = self.services.get()
        except ClusterAIError as error:
            snapshot.services_error = str(error)
            return
        try:
            snapshot.alerts = [
                a for a in alerts_usecase.alerts(found.alertmanager) if a.state == "active"
            ]
        except ClusterAIError as error:
            problems.append(str(error))
        try:
            snapshot.gateway = metrics_usecase.gateway_rates(found.prometheus)
        except ClusterAIError as error:
            problems.append(str(error))
        snapshot.services_error = "; ".join(problems)

    def _loop(self) -> None:
        while True:
            began = time.monotonic()
            self.look()
            time.sleep(max(0.5, self.interval - (time.monotonic() - began)))


status_watch = StatusWatch()


class ServicesExtension:
    """The cluster's Prometheus, Alertmanager and gateway admin API, from the configured
    inventory (read again after a minute, so a converge's new CA copy is picked up), or
    what the configuration gives (CLUSTERAI_SERVICES: a callable, for tests)."""

    def init_app(self, app: Flask) -> None:
        settings: Settings = app.config["CLUSTERAI_SETTINGS"]
        inventory = app.config["CLUSTERAI_INVENTORY"]
        vault = app.config["CLUSTERAI_VAULT"]
        source: Callable[[], ClusterServices] | None = app.config.get("CLUSTERAI_SERVICES")
        if source is None and inventory is not None:
            kwargs = {"vault": vault} if vault is not None else {}

            def source() -> ClusterServices:
                return services_usecase.of_inventory(settings, inventory, **kwargs)

        app.extensions["clusterai_services"] = _Cached(source)

    @property
    def current(self) -> ClusterServices:
        """The services, or ``UsageError`` saying why there are none."""
        cached: _Cached = current_app.extensions["clusterai_services"]
        return cached.get()


class _Cached:
    def __init__(self, source: Callable[[], ClusterServices] | None) -> None:
        self.source = source
        self.value: ClusterServices | None = None
        self.at = 0.0

    def get(self) -> ClusterServices:
        if self.source is None:
            raise UsageError(
                "monitoring", "no inventory is configured", "clusterai web serve -i INVENTORY"
            )
        if self.value is None or time.monotonic() - self.at > 60:
            self.value, self.at = self.source(), time.monotonic()
        return self.value


services = ServicesExtension()


def settings() -> Settings:
    """The app's settings, for the use cases it calls."""
    configured: Settings = current_app.config["CLUSTERAI_SETTINGS"]
    return configured
