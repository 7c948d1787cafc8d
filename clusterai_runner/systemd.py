"""Telling systemd about a service (sd_notify(3)): the gateway and the autoscaler run as
``Type=notify`` units, so ``systemctl start`` returns once they serve, and fails when they
exit first (a configuration their checks refuse)."""

from __future__ import annotations

import os
import socket


def notify_systemd(state: str) -> None:
    """Tell systemd (a ``Type=notify`` unit) about the service, e.g. ``READY=1``; a no-op
    outside systemd."""
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(state.encode())
