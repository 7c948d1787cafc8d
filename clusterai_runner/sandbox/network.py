"""Each sandbox host's traffic comes from its own address, as on a real network.

The hosts share this machine's network namespace, and the kernel gives a connection to
any loopback address the source 127.0.0.1: a scrape from the control host's Prometheus
would reach a worker from the same address as a process of this machine or of another
worker, and no firewall rule could tell them apart. So each host gets a small nftables
table of its own, made before the host boots and deleted when it goes: packets that a
process of the host's cgroup sends from 127.0.0.1 to another address are given the
host's address (a mark in the output hook, then source NAT). Traffic from this machine
itself keeps 127.0.0.1: to the hosts, that is the operator's controller.

Every nftables table named ``clusterai_*_<address>`` is taken to belong to the host at
that address (the ``firewall`` role names its table so as well), and is deleted when the
host goes: a sandbox leaves nothing in this machine's rule set.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from pathlib import Path

from clusterai_runner.errors import RunFailed

NFT = "nft"
CGROUP_ROOT = Path("/sys/fs/cgroup")  # where nft looks up a cgroupv2 path


def suffix(address: str) -> str:
    """The part of a table name that says which host it belongs to: 127_0_10_2."""
    return address.replace(".", "_").replace(":", "_")


def table_name(address: str) -> str:
    return f"clusterai_sandbox_{suffix(address)}"


def _nft(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NFT, *args], input=stdin, capture_output=True, text=True, check=False, timeout=30
    )


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "no reason given")


def ruleset(address: str, cgroup: str, level: int) -> str:
    """The host's table: ``cgroup`` is its cgroupv2 path as nft names it (below
    /sys/fs/cgroup), ``level`` that cgroup's depth in the cgroupv2 hierarchy."""
    mark = int(ipaddress.IPv4Address(address))  # one mark per host, so no host takes another's
    table = table_name(address)
    return (
        f"table ip {table}\n"
        f"delete table ip {table}\n"
        f"table ip {table} {{\n"
        "  chain tag_host_traffic {\n"
        "    type route hook output priority mangle; policy accept;\n"
        f'    socket cgroupv2 level {level} "{cgroup}" ip saddr 127.0.0.1 ip daddr != 127.0.0.1'
        f" meta mark set {mark:#x}\n"
        "  }\n"
        "  chain use_host_address {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        f"    meta mark {mark:#x} ip saddr 127.0.0.1 snat ip to {address}\n"
        "  }\n"
        "}\n"
    )


def attach(address: str, cgroup_v2: Path | None, level: int) -> str | None:
    """Give the host at ``address``, whose processes run in ``cgroup_v2``, its own source
    address, after deleting what an earlier host at that address left behind. Returns
    why it could not (no cgroup v2 below /sys/fs/cgroup), or None."""
    detach(address)
    if cgroup_v2 is None or CGROUP_ROOT not in cgroup_v2.parents:
        return (
            "no cgroup v2 hierarchy below /sys/fs/cgroup: traffic between the hosts comes "
            "from 127.0.0.1, which a host's firewall only lets in when firewall_allow lists it"
        )
    done = _nft("-f", "-", stdin=ruleset(address, str(cgroup_v2.relative_to(CGROUP_ROOT)), level))
    if done.returncode != 0:
        raise RunFailed(
            "sandbox",
            f"nft refused the source address table of {address}: {_first_line(done.stderr)}",
            "check that this kernel has nf_tables and nat, and that nftables is installed",
        )
    return None


def tables_of(address: str) -> list[tuple[str, str]]:
    """(family, name) of every table that belongs to the host at ``address``."""
    if shutil.which(NFT) is None:
        return []
    listed = _nft("--json", "list", "tables")
    if listed.returncode != 0:
        return []
    end = f"_{suffix(address)}"
    found = []
    for item in json.loads(listed.stdout or "{}").get("nftables", []):
        table = item.get("table")
        if table and table["name"].startswith("clusterai_") and table["name"].endswith(end):
            found.append((table["family"], table["name"]))
    return found


def detach(address: str) -> None:
    """Delete every table of the host at ``address``: its source address and whatever
    the host's own firewall made (a host killed by ``down`` cannot remove it itself)."""
    for family, name in tables_of(address):
        done = _nft("delete", "table", family, name)
        if done.returncode != 0 and (family, name) in tables_of(address):
            raise RunFailed(
                "sandbox",
                f"could not delete nftables table {family} {name}: {_first_line(done.stderr)}",
                f"delete it by hand: nft delete table {family} {name}",
            )
