"""The sandbox's check of who listens where, against a real listener of the test's own."""

from __future__ import annotations

import socket

import pytest

from clusterai_runner.sandbox import checks

pytestmark = pytest.mark.sandbox


def test_address_in_use_sees_a_listener() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.55.7", 0))
        port = listener.getsockname()[1]
        listener.listen()
        assert checks.address_in_use("127.0.55.7", port)
    assert not checks.address_in_use("127.0.55.7", port)
