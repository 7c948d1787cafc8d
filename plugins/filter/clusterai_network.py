# Copyright: Cluster AI contributors
# Apache License 2.0
"""Filters for addresses and networks, as the ``firewall`` role needs them.

``['10.0.0.5', '2001:db8::/32'] | clusterai_networks`` gives ``{'ipv4': ['10.0.0.5/32'],
'ipv6': ['2001:db8::/32']}`` (each entry normalised, host bits cleared), and fails
naming an entry that is neither an address nor a network. ``'10.0.0.5' |
clusterai_ip_in(['10.0.0.0/8'])`` says whether an address lies in any of the networks.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from ansible.errors import AnsibleFilterError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _network(value: Any) -> Network:
    try:
        return ipaddress.ip_network(str(value).strip(), strict=False)
    except ValueError as exc:
        raise AnsibleFilterError(
            f"{value!r} is not an IP address or network (e.g. 192.0.2.10 or 192.0.2.0/24)"
        ) from exc


def clusterai_networks(values: Any) -> dict[str, list[str]]:
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise AnsibleFilterError(f"clusterai_networks: {values!r} is not a list of networks")
    found: dict[str, list[str]] = {"ipv4": [], "ipv6": []}
    for value in values:
        network = _network(value)
        family = "ipv4" if network.version == 4 else "ipv6"
        if str(network) not in found[family]:
            found[family].append(str(network))
    return found


def clusterai_ip_in(address: Any, networks: Any) -> bool:
    ip = ipaddress.ip_address(str(address).strip())
    return any(ip in _network(n) for n in networks if _network(n).version == ip.version)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"clusterai_networks": clusterai_networks, "clusterai_ip_in": clusterai_ip_in}
