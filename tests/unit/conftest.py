"""Unit tests touch no network address: an address or port another process holds (the
README's demo sandbox, an operator's service) must never change their outcome. A test
that binds, connects or sends on an IP socket fails here; such tests belong in
tests/integration. Unix sockets under the test's own temporary directory are allowed."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest


class RealSocketUsed(AssertionError):
    pass


def _guarded(name: str) -> Any:
    real = getattr(socket.socket, name)

    def call(self: socket.socket, *args: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise RealSocketUsed(f"a unit test used a network address: {name}{args!r}")
        return real(self, *args)

    return call


@pytest.fixture(autouse=True)
def no_network_addresses(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("bind", "connect", "connect_ex", "sendto"):
        monkeypatch.setattr(socket.socket, name, _guarded(name))
    yield
