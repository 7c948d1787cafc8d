"""Where the cluster's own services answer, from an inventory: Prometheus, Alertmanager
and the gateway's admin API on the control host, with the TLS context and login
(``status.Monitoring``: the CA copy a converge leaves on this machine, and the monitoring
password) or the gateway's admin key the inventory gives."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from clusterai_runner.adapters.http import JsonApi
from clusterai_runner.adapters.inventory import load as load_inventory
from clusterai_runner.adapters.vault import NO_VAULT, Vault
from clusterai_runner.backends import url
from clusterai_runner.config import Settings
from clusterai_runner.errors import UsageError
from clusterai_runner.usecases.status import Monitoring

DEFAULT_PORTS = {"prometheus_port": 9090, "alertmanager_port": 9093, "gateway_port": 8000}


@dataclass(frozen=True)
class ClusterServices:
    prometheus: JsonApi
    alertmanager: JsonApi
    gateway: JsonApi | None  # None: the inventory gives no gateway_admin_key
    control: str  # the control host's inventory name

    @property
    def checked(self) -> bool:
        """Whether certificates are checked (the CA copy is here) and so the login sent."""
        return bool(self.prometheus.headers)


def of_inventory(
    settings: Settings, inventory: Path, vault: Vault = NO_VAULT, timeout: float = 3.0
) -> ClusterServices:
    hosts = load_inventory(inventory, None, vault)
    control = next((h for h in hosts if h.kind == "control"), None)
    if control is None:
        raise UsageError(f"inventory {inventory}", "has no host in the control group",
                         "add the control host under control:")  # fmt: skip
    monitoring = Monitoring.of(hosts, settings.cache_dir)
    variables = control.variables

    def port(name: str) -> int:
        return int(variables.get(name, DEFAULT_PORTS[name]))

    def https(name: str) -> str:
        return url(control.address, port(name), "").replace("http://", "https://", 1)

    key = variables.get("gateway_admin_key")
    gateway = None
    if key:
        gateway = JsonApi("the gateway", url(control.address, port("gateway_port"), ""),
                          None, {"Authorization": f"Bearer {key}"}, timeout)  # fmt: skip
    return ClusterServices(
        JsonApi("Prometheus", https("prometheus_port"), monitoring.context,
                monitoring.headers, timeout),
        JsonApi("Alertmanager", https("alertmanager_port"), monitoring.context,
                monitoring.headers, timeout),
        gateway,
        control.name,
    )  # fmt: skip


def of_urls(
    prometheus_url: str,
    alertmanager_url: str,
    gateway_url: str = "",
    ca_file: str = "",
    monitoring_user: str = "clusterai",
    monitoring_password: str = "",
    gateway_admin_key: str = "",
    control: str = "",
    timeout: float = 3.0,
) -> ClusterServices:
    """The services at these URLs (the web role's control host: its own services, the CA
    and the login given as files). The login goes only where the CA checks the server."""
    if ca_file:
        monitoring = Monitoring.checked(ca_file, monitoring_user, monitoring_password)
        context, headers = monitoring.context, monitoring.headers
    else:  # the system's trust store, and no login
        context, headers = ssl.create_default_context(), {}
    gateway = None
    if gateway_url and gateway_admin_key:
        gateway = JsonApi("the gateway", gateway_url, context,
                          {"Authorization": f"Bearer {gateway_admin_key}"}, timeout)  # fmt: skip
    return ClusterServices(
        JsonApi("Prometheus", prometheus_url, context, headers, timeout),
        JsonApi("Alertmanager", alertmanager_url, context, headers, timeout),
        gateway,
        control,
    )
