"""A test fixture: moto's EC2 server on loopback, behind a small WSGI layer that makes it
behave as EC2 does where moto does not, and that injects faults.

- ``ClientToken``: EC2 answers a repeated RunInstances with the same token with the
  instance the first call made; moto makes a new one. The layer keeps the first answer
  per token and returns it again.
- Pending: moto's instances are ``running`` at once; the layer shows an instance as
  ``pending`` to DescribeInstances for ``pending_s`` after its launch.
- Faults, per API action, each used once: ``none`` (answered as usual: a fault for a
  later call), ``error-before`` (a 503 without calling moto),
  ``error-after`` (moto makes the instance, the answer is a 500), ``drop-after`` (moto
  makes it, the connection is closed without an answer), ``slow-after`` (moto makes it,
  the answer comes ``slow_s`` later: past a client's read timeout).

Everything it serves is moto's own answer, or that answer kept, re-labelled or withheld.
"""

from __future__ import annotations

import io
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

FAULTS = ("none", "error-before", "error-after", "drop-after", "slow-after")
UNAVAILABLE = (
    b'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>Unavailable</Code>'
    b"<Message>injected by the test harness</Message></Error></Errors>"
    b"<RequestID>harness</RequestID></Response>"
)
INTERNAL = UNAVAILABLE.replace(b"Unavailable", b"InternalError")

StartResponse = Callable[..., Any]


class Ec2Harness:
    def __init__(self, pending_s: float = 0.0, slow_s: float = 3.0) -> None:
        self.pending_s = pending_s
        self.slow_s = slow_s
        self.moto = DomainDispatcherApplication(create_backend_app)
        self.faults: dict[str, list[str]] = {}
        self.calls: list[str] = []  # every action asked, in order
        self._tokens: dict[str, bytes] = {}
        self._launched: dict[str, float] = {}
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget the faults, calls, tokens and launches of an earlier test."""
        with self._lock:
            self.faults.clear()
            self.calls.clear()
            self._tokens.clear()
            self._launched.clear()

    def inject(self, action: str, *faults: str) -> None:
        """Have the next calls of ``action`` meet ``faults``, one each, in order."""
        assert all(f in FAULTS for f in faults), faults
        with self._lock:
            self.faults.setdefault(action, []).extend(faults)

    def _call_moto(self, environ: dict[str, Any], body: bytes) -> tuple[str, list[Any], bytes]:
        environ = {**environ, "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}
        answer: dict[str, Any] = {}

        def start(status: str, headers: list[Any], _exc: Any = None) -> None:
            answer["status"], answer["headers"] = status, headers

        chunks = self.moto(environ, start)
        try:
            content = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        return answer["status"], answer["headers"], content

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        form = urllib.parse.parse_qs(body.decode(errors="replace"))
        action = form.get("Action", [""])[0]
        with self._lock:
            self.calls.append(action)
            fault = self.faults.get(action, []).pop(0) if self.faults.get(action) else None
        if fault == "error-before":
            return _reply(start_response, "503 Service Unavailable", UNAVAILABLE)
        token = form.get("ClientToken", [""])[0] if action == "RunInstances" else ""
        with self._lock:
            kept = self._tokens.get(token) if token else None
        if kept is not None:
            status, headers, content = "200 OK", [("Content-Type", "text/xml")], kept
        else:
            status, headers, content = self._call_moto(environ, body)
            if action == "RunInstances" and status.startswith("200"):
                with self._lock:
                    if token:
                        self._tokens[token] = content
                    for instance_id in re.findall(
                        rb"<instanceId>(i-[0-9a-f]+)</instanceId>", content
                    ):
                        self._launched[instance_id.decode()] = time.monotonic()
        if fault == "error-after":
            return _reply(start_response, "500 Internal Server Error", INTERNAL)
        if fault == "slow-after":
            time.sleep(self.slow_s)
        if fault == "drop-after":
            raw = environ.get("werkzeug.socket")
            if raw is not None:
                raw.shutdown(socket.SHUT_RDWR)
            return _reply(start_response, "500 Internal Server Error", INTERNAL)
        if action == "DescribeInstances" and self.pending_s > 0:
            content = self._pending(content)
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(content))))
        start_response(status, headers)
        return [content]

    def _pending(self, content: bytes) -> bytes:
        now = time.monotonic()
        with self._lock:
            young = {i for i, at in self._launched.items() if now - at < self.pending_s}

        def relabel(match: re.Match[bytes]) -> bytes:
            if match.group(2).decode() in young:
                return match.group(1) + b"<code>0</code><name>pending</name>"
            return match.group(0)

        # An instance's id, then (before any other instance's id) its state.
        pattern = rb"(<instanceId>(i-[0-9a-f]+)</instanceId>(?:(?!<instanceId>).)*?<instanceState>)"
        pattern += rb"<code>16</code>\s*<name>running</name>"
        return re.sub(pattern, relabel, content, flags=re.S)


def _reply(start_response: StartResponse, status: str, body: bytes) -> list[bytes]:
    start_response(status, [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))])
    return [body]


@contextmanager
def serving(harness: Ec2Harness) -> Iterator[str]:
    """Serve ``harness`` on a free loopback port; yield its URL."""
    server = make_server("127.0.0.1", 0, harness, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
