"""The YAML inventory, known_hosts and /etc/hosts a sandbox hands to Ansible and SSH."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml


class NamedHost(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def group(self) -> str: ...


@dataclass(frozen=True)
class Secrets:
    """The sandbox's generated secrets, each kept in a 0600 file of its directory."""

    backend_key: str  # clusterai_backend_api_key: the workers' servers require it
    monitoring_password: str  # clusterai_monitoring_password: the monitoring login
    web_admin_password: str = ""  # web_admin_password: the web app's admin account
    api_key: str = ""  # an API key of the gateway, named "sandbox" (gateway_api_keys)


def render(
    sandbox: str,
    hosts: Sequence[NamedHost],
    ssh_port: int,
    key: Path,
    known_hosts: Path,
    secrets: Secrets,
) -> str:
    """Render the inventory: one ``control`` host, the rest in ``workers``."""
    groups: dict[str, dict[str, Any]] = {"control": {"hosts": {}}, "workers": {"hosts": {}}}
    for host in hosts:
        groups[host.group]["hosts"][host.name] = {
            "ansible_host": host.address,
            "clusterai_address": host.address,
            # The hosts share this machine's loopback: a service meant for the host alone
            # listens on its address, and its firewall lets nothing else in.
            "clusterai_loopback_address": host.address,
        }
    variables: dict[str, Any] = {
        "ansible_user": "root",
        "ansible_port": ssh_port,
        "ansible_ssh_private_key_file": str(key),
        "ansible_ssh_common_args": (
            f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes "
            "-o IdentitiesOnly=yes"
        ),
        # Mitogen compresses its SSH traffic unless told otherwise; over loopback that
        # only costs CPU (a first converge of 3 hosts: 112 and 107 CPU-seconds with it,
        # 99 and 96 without: the model and the wheelhouses go through zlib).
        "mitogen_ssh_compression": False,
        "clusterai_sandbox": sandbox,
        # llama.cpp, built on the controller, needs nothing outside it.
        "clusterai_inference_backend": "llamacpp",
        # The key the workers' inference servers require: the gateway holds it.
        "clusterai_backend_api_key": secrets.backend_key,
        # The login Prometheus, Alertmanager and the exporters require.
        "clusterai_monitoring_password": secrets.monitoring_password,
        # This machine runs the sandbox, its CLI and its tests: to the hosts it is
        # the operator's controller, which reaches them from 127.0.0.1.
        "firewall_allow": ["127.0.0.1"],
    }
    if secrets.web_admin_password:
        # The web app's admin account (user admin), made by the web role.
        variables["web_admin_password"] = secrets.web_admin_password
    if secrets.api_key:
        # A key for clients of the gateway (`make demo` prints it).
        variables["gateway_api_keys"] = [{"name": "sandbox", "key": secrets.api_key}]
    document = {"all": {"vars": variables, "children": groups}}
    header = (
        f"# Inventory of the sandbox {sandbox!r}, written by `clusterai sandbox up`.\n"
        "# It is rewritten on every `up`: copy it before editing by hand.\n"
        "# clusterai_address is the address every service on the host binds to.\n"
        "# It holds secrets (clusterai_backend_api_key, clusterai_monitoring_password,\n"
        "# web_admin_password, gateway_api_keys): keep it 0600.\n"
    )
    return header + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def known_hosts_line(address: str, port: int, key: str) -> str:
    target = address if port == 22 else f"[{address}]:{port}"
    return f"{target} {key}\n"


def etc_hosts(hosts: Sequence[NamedHost]) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{host.address}\t{host.name}" for host in hosts]
    return "\n".join(lines) + "\n"
