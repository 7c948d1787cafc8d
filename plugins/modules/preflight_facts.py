#!/usr/bin/python
# Copyright: Cluster AI contributors
# Apache License 2.0
"""Ansible module: what a host's preflight needs to know that Ansible's facts do not say."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: preflight_facts
short_description: Free disk space at a path and who listens on given ports
description:
  - Reports the free space of the file system that will hold O(path) (the nearest
    existing directory above it, when it does not exist yet).
  - Reports every TCP socket listening on one of O(ports) at O(address) or at a wildcard
    address, with the process and the systemd unit that own it, read from C(/proc).
  - Changes nothing; safe in check mode.
version_added: "0.1.0"
options:
  path:
    description: Directory whose file system is measured.
    type: path
    required: true
  ports:
    description: TCP ports to look for listeners on.
    type: list
    elements: int
    default: []
  address:
    description: The host's service address; listeners on other addresses are ignored.
    type: str
    required: true
author:
  - Cluster AI contributors
"""

EXAMPLES = r"""
- name: Read the free space and the listeners
  preflight_facts:
    path: /var/lib/clusterai/models
    ports: [9100, 8080]
    address: "{{ clusterai_address }}"
  register: facts
"""

RETURN = r"""
measured_path:
  description: The existing directory that was measured.
  returned: always
  type: str
free_bytes:
  description: Bytes available to unprivileged users on that file system.
  returned: always
  type: int
listeners:
  description: Sockets listening on the ports, each with port, address, pid and unit.
  returned: always
  type: list
  elements: dict
"""

import ipaddress
import os
import re
from typing import Any

from ansible.module_utils.basic import AnsibleModule

LISTEN = "0A"


def existing_ancestor(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.isdir(path):
        path = os.path.dirname(path)
    return path


def decode_address(hex_address: str) -> str:
    """/proc/net/tcp{,6} hold addresses as host-order 32-bit words in hex."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def read_listeners(table: str) -> list[dict[str, Any]]:
    found = []
    try:
        with open(table) as handle:
            lines = handle.read().splitlines()[1:]
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state != LISTEN:
            continue
        hex_address, hex_port = local.split(":")
        found.append(
            {
                "address": decode_address(hex_address),
                "port": int(hex_port, 16),
                "inode": inode,
            }
        )
    return found


def socket_owners() -> dict[str, int]:
    """Socket inode to the PID holding it, for every process this host can see."""
    owners: dict[str, int] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            match = re.fullmatch(r"socket:\[(\d+)\]", target)
            if match:
                owners.setdefault(match.group(1), int(pid))
    return owners


def unit_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cgroup") as handle:
            for line in handle:
                for part in reversed(line.strip().split(":", 2)[-1].split("/")):
                    if part.endswith((".service", ".scope")):
                        return part.rsplit(".", 1)[0]
    except OSError:
        pass
    return ""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "ports": {"type": "list", "elements": "int", "default": []},
            "address": {"type": "str", "required": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        wanted = ipaddress.ip_address(p["address"])
    except ValueError:
        module.fail_json(msg=f"preflight_facts: address {p['address']} is not an IP address")
    measured = existing_ancestor(p["path"])
    stats = os.statvfs(measured)
    ports = set(p["ports"])
    sockets = [
        s
        for table in ("/proc/net/tcp", "/proc/net/tcp6")
        for s in read_listeners(table)
        if s["port"] in ports
        and (
            ipaddress.ip_address(s["address"]).is_unspecified
            or ipaddress.ip_address(s["address"]) == wanted
        )
    ]
    owners = socket_owners() if sockets else {}
    listeners = []
    for s in sockets:
        pid = owners.get(s["inode"], 0)
        listeners.append(
            {
                "port": s["port"],
                "address": s["address"],
                "pid": pid,
                "unit": unit_of(pid) if pid else "",
            }
        )
    module.exit_json(
        changed=False,
        measured_path=measured,
        free_bytes=stats.f_bavail * stats.f_frsize,
        listeners=sorted(listeners, key=lambda item: (item["port"], item["address"])),
    )


if __name__ == "__main__":
    main()
