"""JSON over HTTP(S) to the cluster's own services: Prometheus's HTTP API, Alertmanager's
API v2 and the gateway's admin API; and ``serve_metrics``, a process's own Prometheus
text on a port of its own (the autoscaler's).

One small client with a timeout, a TLS context (the cluster CA's, so certificates are
checked) and headers (the monitoring login, the gateway's admin key). Every failure is one
``ServiceUnavailable`` naming the service and why, so a page can blank one panel and keep
the rest.
"""

from __future__ import annotations

import json
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from clusterai_runner.errors import ClusterAIError
from clusterai_runner.web_config import Logins, WebConfig, server_context


class ServiceUnavailable(ClusterAIError):
    """A cluster service did not answer, or answered with an error (exit 1); ``status``:
    the HTTP status of that error, if it answered one."""

    exit_code = 1
    status: int | None = None


@dataclass(frozen=True)
class JsonApi:
    name: str  # for messages: "Prometheus", "Alertmanager", "the gateway"
    base_url: str
    context: ssl.SSLContext | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    timeout: float = 3.0

    def get(self, path: str, params: dict[str, Any] | list[tuple[str, Any]] | None = None) -> Any:
        query = f"?{urllib.parse.urlencode(params, doseq=True)}" if params else ""
        return self._call("GET", path + query, None)

    def post(self, path: str, body: Any = None) -> Any:
        return self._call("POST", path, body)

    def head(self, path: str) -> None:
        self._call("HEAD", path, None)

    def delete(self, path: str, body: Any = None) -> Any:
        return self._call("DELETE", path, body)

    def _call(self, method: str, path: str, body: Any) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json", **self.headers}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(
            self.base_url.rstrip("/") + path, data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as r:
                raw = r.read(20_000_000)
        except urllib.error.HTTPError as error:
            detail = error.read(2000).decode("utf-8", "replace").strip()
            if error.code == 401:
                raise ServiceUnavailable(
                    self.name, "refused the login (401)",
                    "check the monitoring password or admin key this app was given",
                ) from error  # fmt: skip
            answered = ServiceUnavailable(
                self.name, f"answered {error.code} to {method} {path.split('?')[0]}: "
                f"{_message(detail)}",
            )  # fmt: skip
            answered.status = error.code
            raise answered from error
        except (OSError, urllib.error.URLError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise ServiceUnavailable(
                self.name, f"does not answer at {self.base_url} ({reason})",
                "is it running, and does its firewall let this machine in (firewall_allow)?",
            ) from error  # fmt: skip
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as error:
            raise ServiceUnavailable(self.name, "answered something that is not JSON") from error


def _message(detail: str) -> str:
    """The error message in a JSON error body, else the body's first line."""
    try:
        parsed = json.loads(detail)
    except ValueError:
        return detail.splitlines()[0][:300] if detail else "(no body)"
    if isinstance(parsed, dict):
        for key in ("error", "message", "detail"):
            value = parsed.get(key)
            if isinstance(value, dict):
                value = value.get("message")
            if value:
                return str(value)[:300]
    return str(parsed)[:300]


class _MetricsServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up or fails its TLS handshake is not news either


def serve_metrics(
    host: str, port: int, render: Callable[[], str], web_config: WebConfig | None = None
) -> ThreadingHTTPServer:
    """Serve ``render()`` as Prometheus text at ``/metrics`` on ``host:port`` from a
    daemon thread, until ``shutdown()``; with ``web_config``, over TLS and only to its
    users (401 otherwise). Raises OSError when the port is taken."""
    logins = Logins(web_config.users) if web_config is not None else None

    class Handler(BaseHTTPRequestHandler):
        timeout = 30  # seconds a connection may take (its TLS handshake included)

        def setup(self) -> None:
            # The TLS handshake here, in the connection's thread, not in the thread that
            # accepts connections: a client that never finishes it blocks no one else.
            if isinstance(self.request, ssl.SSLSocket):
                self.request.settimeout(self.timeout)
                self.request.do_handshake()
            super().setup()

        def do_GET(self) -> None:
            if logins is not None and not logins.check(self.headers.get("Authorization", "")):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="clusterai metrics"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path != "/metrics":
                self.send_error(404)
                return
            body = render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a scrape every few seconds is not news

    server = _MetricsServer((host, port), Handler)
    if web_config is not None:
        context = server_context(web_config)
        server.socket = context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
