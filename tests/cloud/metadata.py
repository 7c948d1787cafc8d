"""A test fixture: EC2's instance metadata service (IMDSv2) for the instances the harness
boots, on one loopback port (the inventory's ``cloud_metadata_url`` in the tests).

EC2 tells the instances that ask apart by their network interface; the sandbox hosts share
this machine's network, so the stand-in tells them apart by the container the asking
process runs in: the connection's socket (``/proc/net/tcp``) -> the process that holds it
-> its ancestors, up to the container's init, whose environment names the host's root
(``CLUSTERAI_SANDBOX_ROOT``, under ``sandboxes/<name>/``). A caller in no instance's
container gets 404 for everything, as a machine without a metadata service would.

It speaks the protocol as EC2 does: ``PUT /latest/api/token`` with
``X-aws-ec2-metadata-token-ttl-seconds`` (1 to 21600) gives a token, good for the instance
that asked; every ``GET`` under ``/latest/meta-data/`` needs a live one (401 otherwise, as
with IMDSv2 required); ``instance-id`` is the instance's, and ``spot/instance-action`` is
404 until ``interrupt`` serves a notice: ``{"action": "terminate", "time": ...}``. When
that time comes and the instance is still served, ``reclaim`` is called, as EC2 takes a
spot instance back (the test terminates it in moto, and its machine goes); the ids go to
``reclaimed``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from clusterai_runner.sandbox.host import MARKER

TOKEN_TTL = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN = "X-aws-ec2-metadata-token"


def _socket_inode(client_port: int, server_port: int) -> str | None:
    """The inode of the client's end of a loopback connection to ``server_port``."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1].split(":"), fields[2].split(":")
        if int(local[1], 16) == client_port and int(remote[1], 16) == server_port:
            return fields[9]
    return None


def _holder(inode: str) -> int | None:
    wanted = f"socket:[{inode}]"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == wanted:
                        return int(entry.name)
    return None


def container_root(client_port: int, server_port: int) -> str | None:
    """The sandbox host root of the process at the client end of a connection, from
    the environment of its container's init; None outside any sandbox host."""
    inode = _socket_inode(client_port, server_port)
    pid = _holder(inode) if inode else None
    while pid and pid > 1:
        proc = Path(f"/proc/{pid}")
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            stat = (proc / "stat").read_text()
        except OSError:
            return None
        for variable in environ:
            if variable.startswith(MARKER.encode() + b"="):
                return variable.split(b"=", 1)[1].decode()
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the parent's pid
    return None


class Metadata:
    """The metadata service of every instance served, on 127.0.0.1:``port``.
    ``identify(client_port)`` names the instance a connection comes from (by default,
    from its sandbox host; see the module's text)."""

    def __init__(
        self,
        reclaim: Callable[[str], None] | None = None,
        identify: Callable[[int], str | None] | None = None,
    ) -> None:
        self.reclaim = reclaim
        self.reclaimed: list[str] = []
        self.asked: list[tuple[str, str]] = []  # (instance id, path) of every GET answered
        self._sandboxes: dict[str, str] = {}  # instance id -> its sandbox's name
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (instance, expiry)
        self._actions: dict[str, dict[str, str]] = {}
        self._timers: dict[str, threading.Timer] = {}
        self._lock = threading.Lock()
        self._identify = identify or self._by_sandbox
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        """The inventory's ``cloud_metadata_url``."""
        return f"http://127.0.0.1:{self.port}"

    def _by_sandbox(self, client_port: int) -> str | None:
        root = container_root(client_port, self.port)
        with self._lock:
            served = dict(self._sandboxes)
        return next((i for i, n in served.items() if root and f"/sandboxes/{n}/" in root), None)

    def serve(self, instance_id: str, sandbox: str) -> None:
        """Answer the processes of sandbox ``sandbox`` as instance ``instance_id``."""
        with self._lock:
            self._sandboxes[instance_id] = sandbox

    def interrupt(self, instance_id: str, in_s: float = 120.0, action: str = "terminate") -> str:
        """Serve a spot interruption notice for ``in_s`` seconds from now; return its time.
        At that time, an instance still served is reclaimed."""
        stamp = (datetime.now(UTC) + timedelta(seconds=in_s)).strftime("%Y-%m-%dT%H:%M:%SZ")
        timer = threading.Timer(in_s, self._reclaim, (instance_id,))
        timer.daemon = True
        with self._lock:
            self._actions[instance_id] = {"action": action, "time": stamp}
            self._timers[instance_id] = timer
        timer.start()
        return stamp

    def _reclaim(self, instance_id: str) -> None:
        with self._lock:
            if instance_id not in self._sandboxes:
                return
            self.reclaimed.append(instance_id)
        if self.reclaim is not None:
            self.reclaim(instance_id)

    def stop(self, instance_id: str) -> None:
        """The instance is gone: nothing is served for it any more."""
        with self._lock:
            self._sandboxes.pop(instance_id, None)
            timer = self._timers.pop(instance_id, None)
        if timer is not None:
            timer.cancel()

    def close(self) -> None:
        for instance_id in list(self._sandboxes):
            self.stop(instance_id)
        self._server.shutdown()
        self._server.server_close()


def _handler(metadata: Metadata) -> type[BaseHTTPRequestHandler]:
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
            instance = metadata._identify(self.client_address[1])
            if self.path != "/latest/api/token" or instance is None:
                return self._answer(404, "Not Found")
            ttl = self.headers.get(TOKEN_TTL, "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                return self._answer(400, "Bad Request")
            token = secrets.token_urlsafe(32)
            with metadata._lock:
                metadata._tokens[token] = (instance, time.monotonic() + int(ttl))
            self._answer(200, token)

        def do_GET(self) -> None:
            with metadata._lock:
                instance, expires = metadata._tokens.get(self.headers.get(TOKEN, ""), ("", 0.0))
                live = instance in metadata._sandboxes
                action = metadata._actions.get(instance)
            if expires < time.monotonic() or not live:
                return self._answer(401, "Unauthorized")
            with metadata._lock:
                metadata.asked.append((instance, self.path))
            if self.path == "/latest/meta-data/instance-id":
                return self._answer(200, instance)
            if self.path == "/latest/meta-data/spot/instance-action" and action is not None:
                return self._answer(200, json.dumps(action), "application/json")
            self._answer(404, "Not Found")

    return Handler
