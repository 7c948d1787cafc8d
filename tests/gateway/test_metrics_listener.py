"""The autoscaler's metrics listener with a Prometheus-style web configuration: TLS with
the given certificate, and /metrics only for its logins (bcrypt), as the pki role
configures every monitored service."""

from __future__ import annotations

import base64
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest
import yaml

from clusterai_runner.adapters.http import serve_metrics
from clusterai_runner.web_config import read_web_config
from tests.helpers import certificates, free_port


def test_metrics_over_tls_only_for_the_login(tmp_path: Path) -> None:
    ca, cert, key = certificates(tmp_path)
    hashed = bcrypt.hashpw(b"p" * 20, bcrypt.gensalt(rounds=4)).decode()
    config = tmp_path / "web.yml"
    config.write_text(yaml.safe_dump({
        "tls_server_config": {"cert_file": str(cert), "key_file": str(key)},
        "basic_auth_users": {"clusterai": hashed},
    }))  # fmt: skip
    port = free_port()
    server = serve_metrics("127.0.0.1", port, lambda: "up 1\n", read_web_config(config))
    context = ssl.create_default_context(cafile=str(ca))
    url = f"https://127.0.0.1:{port}/metrics"

    def get(password: str | None) -> tuple[int, str]:
        headers = {}
        if password is not None:
            token = base64.b64encode(f"clusterai:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, headers=headers), timeout=10, context=context
            ) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, ""

    try:
        # A client that opens a connection and never says a word holds up no one.
        idle = socket.create_connection(("127.0.0.1", port))
        assert get("p" * 20) == (200, "up 1\n")
        assert get("p" * 20) == (200, "up 1\n")  # remembered: no second bcrypt
        assert get("wrong")[0] == 401
        assert get(None)[0] == 401
        with pytest.raises(OSError):  # plain HTTP gets no answer
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
        idle.close()
    finally:
        server.shutdown()
        server.server_close()
