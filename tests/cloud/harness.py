"""A test fixture: moto's EC2 server on loopback, behind a small WSGI layer that makes it
behave as EC2 does where moto does not, and that injects faults.

- ``ClientToken``: EC2 answers a repeated RunInstances with the same token with the
  instance the first call made; moto makes a new one. The layer keeps the first answer
  per token and returns it again.
- Pending: moto's instances are ``running`` at once; the layer shows an instance as
  ``pending`` to DescribeInstances for ``pending_s`` after its launch.
- Boot: with ``on_launch``, each new instance is booted by it (in a thread of its own:
  a sandbox host at the instance's address, given its user-data) and is ``pending``
  until that returns; what it raises is kept in ``boot_errors``. With ``on_terminate``,
  each instance TerminateInstances ends is handed to it (in a thread: its machine goes).
- Faults, per API action, each used once: ``none`` (answered as usual: a fault for a
  later call), ``error-before`` (a 503 without calling moto),
  ``error-after`` (moto makes the instance, the answer is a 500), ``drop-after`` (moto
  makes it, the connection is closed without an answer), ``slow-after`` (moto makes it,
  the answer comes ``slow_s`` later: past a client's read timeout), ``kill-after`` (moto
  acts, then ``on_kill`` runs: the test kills the client's process, which never gets its
  answer). A fault injected ``after`` another action waits until that action was called.

Everything it serves is moto's own answer, or that answer kept, re-labelled or withheld.
"""

from __future__ import annotations

import base64
import io
import os
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

# Moto builds each region's EC2 anew on every reset (each test resets it), with every
# image of its lists: 1,355 in eu-west-1, each with its snapshot and volume, about a
# quarter of a CPU-second a reset (a third of tests/cloud/test_cloud.py's time). The
# tests and the cloud benches launch one Amazon image of moto's list; moto reads the list
# from this file instead (set before moto is imported). An environment that sets
# MOTO_AMIS_PATH keeps its own.
os.environ.setdefault("MOTO_AMIS_PATH", os.path.join(os.path.dirname(__file__), "amis.json"))

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

FAULTS = ("none", "error-before", "error-after", "drop-after", "slow-after", "kill-after")
UNAVAILABLE = (
    b'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>Unavailable</Code>'
    b"<Message>injected by the test harness</Message></Error></Errors>"
    b"<RequestID>harness</RequestID></Response>"
)
INTERNAL = UNAVAILABLE.replace(b"Unavailable", b"InternalError")

StartResponse = Callable[..., Any]
# (instance id, private address, user-data): boots the instance
OnLaunch = Callable[[str, str, str], None]
OnTerminate = Callable[[str], None]  # (instance id): takes its machine away


class Ec2Harness:
    def __init__(
        self,
        pending_s: float = 0.0,
        slow_s: float = 3.0,
        on_launch: OnLaunch | None = None,
        on_terminate: OnTerminate | None = None,
    ) -> None:
        self.pending_s = pending_s
        self.slow_s = slow_s
        self.on_launch = on_launch
        self.on_terminate = on_terminate
        self.on_kill: Callable[[], None] | None = None
        self._armed_after: dict[str, str] = {}  # action -> the action that arms its faults
        self.threads: list[threading.Thread] = []
        self.boot_errors: list[str] = []
        self._booting: set[str] = set()
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
            self._armed_after.clear()
            self.calls.clear()
            self._tokens.clear()
            self._launched.clear()
            self.boot_errors.clear()

    def inject(self, action: str, *faults: str, after: str | None = None) -> None:
        """Have the next calls of ``action`` meet ``faults``, one each, in order; with
        ``after``, only the calls that come once ``after`` was called."""
        assert all(f in FAULTS for f in faults), faults
        with self._lock:
            self.faults.setdefault(action, []).extend(faults)
            if after is not None:
                self._armed_after[action] = after

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
            armed = self._armed_after.get(action) in (None, *self.calls[:-1])
            fault = self.faults[action].pop(0) if armed and self.faults.get(action) else None
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
                self._launch(content, token, form.get("UserData", [""])[0])
            if action == "TerminateInstances" and status.startswith("200") and self.on_terminate:
                for key, values in form.items():
                    if key.startswith("InstanceId."):
                        self._thread(self.on_terminate, values[0])
        if fault == "error-after":
            return _reply(start_response, "500 Internal Server Error", INTERNAL)
        if fault == "slow-after":
            time.sleep(self.slow_s)
        if fault == "kill-after":
            assert self.on_kill is not None, "kill-after needs on_kill"
            self.on_kill()
            return _reply(start_response, "500 Internal Server Error", INTERNAL)
        if fault == "drop-after":
            raw = environ.get("werkzeug.socket")
            if raw is not None:
                raw.shutdown(socket.SHUT_RDWR)
            return _reply(start_response, "500 Internal Server Error", INTERNAL)
        if action == "DescribeInstances" and (self.pending_s > 0 or self._booting):
            content = self._pending(content)
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(content))))
        start_response(status, headers)
        return [content]

    def _launch(self, content: bytes, token: str, user_data: str) -> None:
        # An instance's id, then (before any other instance's id) its private address.
        pattern = rb"<instanceId>(i-[0-9a-f]+)</instanceId>(?:(?!<instanceId>).)*?"
        pattern += rb"<privateIpAddress>([0-9.]+)</privateIpAddress>"
        made = [(i.decode(), a.decode()) for i, a in re.findall(pattern, content, flags=re.S)]
        with self._lock:
            if token:
                self._tokens[token] = content
            for instance_id, _ in made:
                self._launched[instance_id] = time.monotonic()
                if self.on_launch is not None:
                    self._booting.add(instance_id)
        if self.on_launch is not None:
            text = base64.b64decode(user_data).decode() if user_data else ""
            for instance_id, address in made:
                self._thread(self._boot, instance_id, address, text)

    def _thread(self, target: Callable[..., None], *args: str) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self.threads.append(thread)
        thread.start()

    def join(self, timeout: float = 300.0) -> None:
        """Wait for the boots and terminations under way."""
        for thread in list(self.threads):
            thread.join(timeout)

    def _boot(self, instance_id: str, address: str, user_data: str) -> None:
        assert self.on_launch is not None
        try:
            self.on_launch(instance_id, address, user_data)
        except Exception as exc:  # kept for the test to show
            with self._lock:
                self.boot_errors.append(f"{instance_id} at {address}: {exc}")
        finally:
            with self._lock:
                self._booting.discard(instance_id)

    def _pending(self, content: bytes) -> bytes:
        now = time.monotonic()
        with self._lock:
            young = {i for i, at in self._launched.items() if now - at < self.pending_s}
            young |= self._booting

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
