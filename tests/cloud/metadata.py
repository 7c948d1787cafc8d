"""A test fixture: EC2's instance metadata service (IMDSv2) for each instance the harness
boots, served on the instance's own address (sandbox hosts share this machine's network,
so 169.254.169.254 cannot tell them apart; the inventory's ``cloud_metadata_url`` is
``http://{address}:PORT`` in the tests).

It speaks the protocol as EC2 does: ``PUT /latest/api/token`` with
``X-aws-ec2-metadata-token-ttl-seconds`` (1 to 21600) gives a token; every ``GET`` under
``/latest/meta-data/`` needs a live one (401 otherwise, as with IMDSv2 required);
``instance-id`` is the instance's, and ``spot/instance-action`` is 404 until
``interrupt`` serves a notice: ``{"action": "terminate", "time": ...}``. When that time
comes and the instance still runs, ``reclaim`` is called, as EC2 takes a spot instance
back (the test terminates it in moto, and its machine goes); the ids go to ``reclaimed``.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN_TTL = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN = "X-aws-ec2-metadata-token"


class _Instance:
    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self.tokens: dict[str, float] = {}  # token -> when it expires (time.monotonic)
        self.action: dict[str, str] | None = None
        self.reclaim: threading.Timer | None = None


class Metadata:
    """One metadata server per booted instance, on ``(address, port)``."""

    def __init__(self, port: int, reclaim: Callable[[str], None] | None = None) -> None:
        self.port = port
        self.reclaim = reclaim
        self.reclaimed: list[str] = []
        self.asked: list[tuple[str, str]] = []  # (instance id, path) of every GET answered
        self._servers: dict[str, tuple[ThreadingHTTPServer, _Instance]] = {}
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The inventory's ``cloud_metadata_url``."""
        return f"http://{{address}}:{self.port}"

    def serve(self, instance_id: str, address: str) -> None:
        instance = _Instance(instance_id)
        server = ThreadingHTTPServer((address, self.port), _handler(self, instance))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        with self._lock:
            self._servers[instance_id] = (server, instance)

    def interrupt(self, instance_id: str, in_s: float = 120.0, action: str = "terminate") -> str:
        """Serve a spot interruption notice for ``in_s`` seconds from now; return its time.
        At that time, an instance still served is reclaimed."""
        when = datetime.now(UTC) + timedelta(seconds=in_s)
        stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        with self._lock:
            instance = self._servers[instance_id][1]
            instance.action = {"action": action, "time": stamp}
            instance.reclaim = threading.Timer(in_s, self._reclaim, (instance_id,))
            instance.reclaim.daemon = True
            instance.reclaim.start()
        return stamp

    def _reclaim(self, instance_id: str) -> None:
        with self._lock:
            if instance_id not in self._servers:
                return
            self.reclaimed.append(instance_id)
        if self.reclaim is not None:
            self.reclaim(instance_id)

    def stop(self, instance_id: str) -> None:
        """The instance is gone: its metadata server too."""
        with self._lock:
            served = self._servers.pop(instance_id, None)
        if served is not None:
            server, instance = served
            if instance.reclaim is not None:
                instance.reclaim.cancel()
            server.shutdown()
            server.server_close()

    def close(self) -> None:
        for instance_id in list(self._servers):
            self.stop(instance_id)


def _handler(metadata: Metadata, instance: _Instance) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: str, kind: str = "text/plain") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_PUT(self) -> None:
            if self.path != "/latest/api/token":
                return self._answer(404, "Not Found")
            ttl = self.headers.get(TOKEN_TTL, "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                return self._answer(400, "Bad Request")
            token = secrets.token_urlsafe(32)
            with metadata._lock:
                instance.tokens[token] = time.monotonic() + int(ttl)
            self._answer(200, token)

        def do_GET(self) -> None:
            with metadata._lock:
                expires = instance.tokens.get(self.headers.get(TOKEN, ""), 0.0)
                action = instance.action
            if expires < time.monotonic():
                return self._answer(401, "Unauthorized")
            with metadata._lock:
                metadata.asked.append((instance.instance_id, self.path))
            if self.path == "/latest/meta-data/instance-id":
                return self._answer(200, instance.instance_id)
            if self.path == "/latest/meta-data/spot/instance-action" and action is not None:
                return self._answer(200, json.dumps(action), "application/json")
            self._answer(404, "Not Found")

    return Handler
