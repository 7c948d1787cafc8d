"""Checks made before a sandbox changes anything, each failing with one clear line."""

from __future__ import annotations

import errno
import os
import shutil
import socket
from pathlib import Path

from clusterai_runner.errors import UsageError

# Each tool the sandbox runs, and the Debian package that provides it.
TOOLS = {
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "nft": "nftables",  # each host's traffic from its own address (network.py)
}
MEMORY_RESERVE_MIB = 512


def require_root() -> None:
    if os.geteuid() != 0:
        raise UsageError(
            "sandbox",
            "must run as root: systemd-nspawn boots the hosts and needs it",
            "run it with sudo, e.g. sudo .venv/bin/clusterai sandbox up",
        )


def require_tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        packages = " ".join(sorted({TOOLS[tool] for tool in missing}))
        raise UsageError(
            "sandbox",
            f"{', '.join(missing)} not found on PATH",
            f"install with: apt-get install -y {packages}",
        )


def available_memory_mib(meminfo: Path = Path("/proc/meminfo")) -> int:
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    raise UsageError("sandbox", f"{meminfo} has no MemAvailable line", "is this Linux 3.14+?")


def require_memory(count: int, per_host_mib: int) -> None:
    if count == 0:
        return
    need = count * per_host_mib
    have = available_memory_mib() - MEMORY_RESERVE_MIB
    if need > have:
        raise UsageError(
            "sandbox",
            f"{count} hosts need about {need} MiB of memory ({per_host_mib} MiB each) "
            f"but {max(have, 0)} MiB is available",
            "ask for fewer --hosts, or set CLUSTERAI_SANDBOX_HOST_MEMORY_MIB lower "
            "if your hosts need less",
        )


def _existing_parent(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def require_disk(directory: Path, need_mib: int) -> None:
    if need_mib == 0:
        return
    where = _existing_parent(directory)
    have = shutil.disk_usage(where).free // (1024 * 1024)
    if need_mib > have:
        raise UsageError(
            "sandbox",
            f"needs about {need_mib} MiB free under {where} but {have} MiB is free",
            "free some space, ask for fewer --hosts, or set CLUSTERAI_STATE_DIR elsewhere",
        )


def address_in_use(address: str, port: int) -> bool:
    """True when something on this machine already listens on (address, port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return True
            raise UsageError(
                "sandbox",
                f"cannot use {address}:{port}: {error.strerror}",
                "choose another --first-address in 127.0.0.0/8",
            ) from error
    return False
