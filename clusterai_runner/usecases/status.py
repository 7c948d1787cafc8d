"""What each host is doing now: ``clusterai status``.

Asks every host at once over HTTP(S) and TCP, the way Prometheus would, with no SSH and
no Ansible: is its SSH port open, does its inference server answer and which models it
holds in memory (with the inventory's backend key), does its node exporter answer, what
its GPU exporter says, and what the last stored run did to it.

The exporters speak TLS with certificates of the cluster's CA and want the monitoring
login. The CA's certificate is the copy a converge left on this machine
(``<cache>/pki/<control address>/ca.crt``, roles/pki); with it, and the inventory's
``clusterai_monitoring_password``, the exporters are read in full. Without the CA the
password is never sent (the certificate could not be checked): an exporter that answers
401 over TLS is up, and its figures are left out.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clusterai_runner import backends
from clusterai_runner.adapters.http import JsonApi
from clusterai_runner.adapters.inventory import InventoryHost
from clusterai_runner.adapters.inventory import load as load_inventory
from clusterai_runner.adapters.vault import NO_VAULT, Vault
from clusterai_runner.backends import url
from clusterai_runner.config import Settings, store_exists, using_store
from clusterai_runner.errors import ClusterAIError, StoreError
from clusterai_runner.usecases.metrics import instant
from clusterai_runner.usecases.parallel import each_host

# The exporters' ports unless the inventory sets the roles' variables; the inference
# servers' come from the backend catalogue (clusterai_runner/backends.yml).
EXPORTER_PORTS = {"node_exporter_port": 9100, "gpu_exporter_port": 9835}

LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass
class Gpu:
    name: str
    utilization: float  # 0..1
    memory_used_bytes: float
    memory_total_bytes: float
    temperature_c: float | None = None


@dataclass
class HeldModel:
    """A model a worker holds, as its server tells it: the content digest and size where
    the server says (Ollama's /api/tags; llama.cpp's server says neither), and whether
    it is in memory now."""

    name: str
    digest: str | None
    size: int | None
    loaded: bool


@dataclass
class HostStatus:
    name: str
    kind: str  # control, workers
    address: str
    reachable: bool
    inference: str  # up, down, n/a
    backend: str
    models: list[str] = field(default_factory=list)
    # The models it holds and can serve (Ollama's pulled ones; a llama.cpp server's one
    # model); None where unknown (its server does not answer, or only the gateway was asked).
    held: list[str] | None = None
    held_models: list[HeldModel] | None = None  # the same, with digests, sizes, loaded
    exporter: str = "down"  # up, down
    gpus: list[Gpu] = field(default_factory=list)
    last_run: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["healthy"] = self.healthy
        return payload


def _port(host: InventoryHost, variable: str) -> int:
    return int(host.variables.get(variable, EXPORTER_PORTS[variable]))


# A server that answers 401 is up: it wants a key this inventory does not give.
LOCKED = "(a key is required)"


@dataclass(frozen=True)
class Monitoring:
    """How to ask the monitoring services: the TLS context and the login to send."""

    context: ssl.SSLContext
    headers: dict[str, str]

    @classmethod
    def of(cls, hosts: list[InventoryHost], cache_dir: Path) -> Monitoring:
        control = next((h for h in hosts if h.kind == "control"), None)
        ca = cache_dir / "pki" / control.address / "ca.crt" if control else None
        if ca is None or not ca.is_file():
            unchecked = ssl.create_default_context()
            unchecked.check_hostname = False
            unchecked.verify_mode = ssl.CERT_NONE
            return cls(unchecked, {})  # no login over a connection nobody checked
        variables = control.variables if control else {}
        user = variables.get("clusterai_monitoring_user") or "clusterai"
        return cls.checked(str(ca), user, variables.get("clusterai_monitoring_password") or "")

    @classmethod
    def checked(cls, ca_file: str, user: str, password: str) -> Monitoring:
        """Certificates checked against ``ca_file``, and the login when there is a password."""
        context = ssl.create_default_context(cafile=ca_file)
        if not password:
            return cls(context, {})
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return cls(context, {"Authorization": f"Basic {token}"})


def _get(
    url: str,
    timeout: float,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> str | None:
    """The body of a 200 answer, LOCKED for a 401, or None when the service does not
    answer well (or does not answer: down, or a firewall keeps this machine out)."""
    try:
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            body: bytes = response.read(4_000_000)
            return body.decode("utf-8", "replace") if response.status == 200 else None
    except urllib.error.HTTPError as error:
        return LOCKED if error.code == 401 else None
    except (OSError, urllib.error.URLError, ValueError):
        return None


def tcp_open(address: str, port: int, timeout: float) -> bool:
    """Whether a TCP connection to ``address:port`` opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def _models(backend: str, body: str | None) -> list[str]:
    if body is None or body == LOCKED:
        return []
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return []
    if backend == "ollama":  # /api/ps (loaded in memory) and /api/tags (pulled) alike
        return sorted(str(m.get("name", "")) for m in data.get("models") or [])
    return sorted(str(m.get("id", "")) for m in data.get("data") or [])  # /v1/models


def _held_models(backend: str, body: str, loaded: set[str]) -> list[HeldModel]:
    """The held models' details from the held-models answer (Ollama's /api/tags, a
    llama.cpp server's /v1/models, which holds its one model in memory)."""
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return []
    if backend != "ollama":
        names = sorted(str(m.get("id", "")) for m in data.get("data") or [])
        return [HeldModel(name, None, None, True) for name in names]
    found = []
    for entry in data.get("models") or []:
        name = str(entry.get("name", ""))
        digest, size = entry.get("digest"), entry.get("size")
        known = str(digest) if isinstance(digest, str) and digest else None
        found.append(HeldModel(name, known, size if isinstance(size, int) else None,
                               name in loaded))  # fmt: skip
    return sorted(found, key=lambda m: m.name)


def parse_gpus(metrics: str) -> list[Gpu]:
    """GPUs from nvidia_gpu_exporter's metrics text."""
    by_uuid: dict[str, dict[str, Any]] = {}
    for line in metrics.splitlines():
        if not line.startswith("nvidia_smi_") or "{" not in line:
            continue
        name, rest = line.split("{", 1)
        labels_text, _, value_text = rest.rpartition("}")
        labels = dict(LABEL.findall(labels_text))
        uuid = labels.get("uuid", "")
        try:
            value = float(value_text.split()[0])
        except (IndexError, ValueError):
            continue
        gpu = by_uuid.setdefault(
            uuid, {"name": "", "util": 0.0, "used": 0.0, "total": 0.0, "temp": None}
        )
        if name == "nvidia_smi_gpu_info":
            gpu["name"] = labels.get("name", "")
        elif name == "nvidia_smi_utilization_gpu_ratio":
            gpu["util"] = value
        elif name == "nvidia_smi_memory_used_bytes":
            gpu["used"] = value
        elif name == "nvidia_smi_memory_total_bytes":
            gpu["total"] = value
        elif name == "nvidia_smi_temperature_gpu":
            gpu["temp"] = value
    return [
        Gpu(g["name"] or uuid, g["util"], g["used"], g["total"], g["temp"])
        for uuid, g in by_uuid.items()
    ]


def _https(address: str, port: int, path: str) -> str:
    return url(address, port, path).replace("http://", "https://", 1)


def host_status(
    host: InventoryHost,
    last_run: dict[str, Any] | None,
    timeout: float,
    monitoring: Monitoring | None = None,
) -> HostStatus:
    backend = str(host.variables.get("clusterai_inference_backend", ""))
    status = HostStatus(
        host.name,
        host.kind,
        host.address,
        tcp_open(host.host, host.port, timeout),
        "n/a",
        backend if host.kind == "workers" else "",
        last_run=last_run,
    )
    if not status.reachable:
        status.problems.append(f"SSH port {host.host}:{host.port} does not answer")
    server = backends.of_host(host.variables)
    if host.kind == "workers" and server is None:
        known = ", ".join(backends.catalogue())
        status.problems.append(f"clusterai_inference_backend {backend!r} is not one of {known}")
    elif host.parked:
        status.inference = "parked"
    elif host.kind == "workers" and server is not None:
        port = server.port_for(host.variables)
        headers = server.headers_for(host.variables)
        health = _get(url(host.address, port, server.health_path), timeout, headers)
        healthy = health is not None
        models = health
        if healthy and server.models_path != server.health_path:
            models = _get(url(host.address, port, server.models_path), timeout, headers)
        status.inference = "up" if healthy else "down"
        status.models = _models(backend, models)
        if healthy:
            held = models
            if server.held_path != server.models_path:
                held = _get(url(host.address, port, server.held_path), timeout, headers)
            status.held = None if held in (None, LOCKED) else _models(backend, held)
            if status.held is not None and held is not None:
                status.held_models = _held_models(backend, held, set(status.models))
        if not healthy:
            status.problems.append(
                f"{backend} server on port {port} does not answer (down, or its firewall "
                "keeps this machine out: list this machine's address in firewall_allow)"
            )
    monitoring = monitoring or Monitoring(ssl.create_default_context(), {})
    headers, context = monitoring.headers, monitoring.context
    node_url = _https(host.address, _port(host, "node_exporter_port"), "/metrics")
    node = _get(node_url, timeout, headers, context)
    status.exporter = "up" if node is not None else "down"
    if node is None:
        status.problems.append(
            "node exporter does not answer (down, or its firewall keeps this machine out)"
        )
    gpu_url = _https(host.address, _port(host, "gpu_exporter_port"), "/metrics")
    gpu_metrics = _get(gpu_url, timeout, headers, context)
    if gpu_metrics is not None and gpu_metrics != LOCKED:
        status.gpus = parse_gpus(gpu_metrics)
    if last_run is not None and last_run["result"] != "ok":
        status.problems.append(f"last run {last_run['id']} ({last_run['playbook']}) failed here")
    return status


def cluster_status(
    hosts: list[InventoryHost],
    last_runs: dict[str, tuple[int, str, dict[str, int]]],
    timeout: float = 3.0,
    parallel: int = 50,
    on_done: Callable[[HostStatus], None] | None = None,
    monitoring: Monitoring | None = None,
) -> list[HostStatus]:
    """Every host's status, asked concurrently; in inventory order."""

    def last(name: str) -> dict[str, Any] | None:
        if name not in last_runs:
            return None
        run_id, playbook, counters = last_runs[name]
        bad = counters.get("failed", 0) or counters.get("unreachable", 0)
        return {
            "id": run_id,
            "playbook": playbook,
            "result": "failed" if bad else "ok",
            "changed": counters.get("changed", 0),
        }

    return each_host(
        lambda h: host_status(h, last(h.name), timeout, monitoring), hosts, parallel, on_done
    )


def status(
    settings: Settings,
    inventory: Path,
    limit: str | None = None,
    timeout: float = 3.0,
    warn: Callable[[str], None] = lambda _message: None,
    vault: Vault = NO_VAULT,
) -> list[HostStatus]:
    """Every host of ``inventory`` (``limit``) now, with its result in the last stored
    run; reads the store only when there is one, and never creates it. The hosts are
    asked even when the store cannot be read: ``warn`` hears why the last runs are left out."""
    hosts = load_inventory(inventory, limit, vault)
    last_runs = {}
    if store_exists(settings):
        try:
            with using_store(settings) as store:
                last_runs = store.last_results()
        except StoreError as error:
            warn(f"{error}; the last runs are left out")
    return cluster_status(
        hosts, last_runs, timeout, monitoring=Monitoring.of(hosts, settings.cache_dir)
    )


def from_prometheus(prometheus: JsonApi, gateway: JsonApi | None = None) -> list[HostStatus]:
    """Every host as the control host's Prometheus sees it, for the web app on the control
    host (no inventory, no SSH there): a host is reachable when its node exporter is
    scraped, its inference server up when the blackbox probe succeeds, its GPUs from the
    GPU exporter; its models from the gateway's admin API when there is one. Hosts in
    the order of their names, the control host first."""
    hosts: dict[str, HostStatus] = {}
    for labels, value in instant(prometheus, 'up{job="node"}'):
        name = labels.get("instance", "")
        kind = "control" if labels.get("role") == "control" else "workers"
        hosts[name] = HostStatus(name, kind, labels.get("address", ""), value == 1, "n/a", "",
                                 exporter="up" if value == 1 else "down")  # fmt: skip
    for labels, value in instant(prometheus, 'probe_success{job="inference"}'):
        name = labels.get("instance", "")
        host = hosts.setdefault(name, HostStatus(name, "workers", "", False, "n/a", ""))
        host.kind, host.backend = "workers", labels.get("backend", "")
        host.inference = "up" if value == 1 else "down"
    gpus: dict[tuple[str, str], dict[str, Any]] = {}
    for metric, field_name in (("nvidia_smi_utilization_gpu_ratio", "util"),
                               ("nvidia_smi_memory_used_bytes", "used"),
                               ("nvidia_smi_memory_total_bytes", "total"),
                               ("nvidia_smi_temperature_gpu", "temp"),
                               ("nvidia_smi_gpu_info", "info")):  # fmt: skip
        for labels, value in instant(prometheus, metric):
            gpu = gpus.setdefault((labels.get("instance", ""), labels.get("uuid", "")), {})
            gpu[field_name] = labels.get("name", "") if field_name == "info" else value
    for (name, uuid), g in sorted(gpus.items()):
        if name in hosts:
            hosts[name].gpus.append(Gpu(g.get("info") or uuid, g.get("util", 0.0),
                                        g.get("used", 0.0), g.get("total", 0.0),
                                        g.get("temp")))  # fmt: skip
    if gateway is not None:
        try:
            backends_now = (gateway.get("/admin/backends") or {}).get("backends") or []
        except ClusterAIError:
            backends_now = []
        for backend in backends_now:
            served = hosts.get(str(backend.get("name", "")))
            if served is not None:
                models = backend.get("loaded") or backend.get("models") or []
                served.models = [str(m) for m in models]
    for host in hosts.values():
        if not host.reachable:
            host.problems.append("its node exporter is not scraped (down, or unreachable)")
        if host.inference == "down":
            host.problems.append(f"{host.backend or 'inference'} server does not answer the probe")
    return sorted(hosts.values(), key=lambda h: (h.kind != "control", h.name))
