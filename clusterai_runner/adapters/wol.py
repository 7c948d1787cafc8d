"""Wake-on-LAN: the magic packet that powers on a sleeping desktop.

Six bytes of 0xFF, then the machine's MAC address sixteen times, in one UDP datagram to
the LAN's broadcast address (port 9, discard, by custom). The network card listens for it
while the machine sleeps, when its firmware and the operating system leave Wake-on-LAN on
(``ethtool -s IFACE wol g``).
"""

from __future__ import annotations

import socket


def magic_packet(mac: str) -> bytes:
    """The magic packet for ``mac`` (``3c:7c:3f:12:34:56`` or with dashes)."""
    raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"{mac!r} is not a MAC address")
    return b"\xff" * 6 + raw * 16


def send(mac: str, address: str = "255.255.255.255", port: int = 9) -> None:
    """Send ``mac``'s magic packet to ``address:port`` (a broadcast address, usually)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.sendto(magic_packet(mac), (address, port))
