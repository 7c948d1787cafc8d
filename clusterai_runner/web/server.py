"""Serving the app: gunicorn, one process with threads (the ``gthread`` worker).

Measured against waitress on the same app and store (bench/web.py): the same page times
and throughput within a few percent; gunicorn also terminates TLS itself
(``certfile``/``keyfile``), which the ``web`` role uses with a certificate of the
cluster's CA or the operator's own. One process, because the jobs started from the page
live in it; threads serve the pages meanwhile.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication


class _Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, app: Flask, options: dict[str, Any]) -> None:
        self.application = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self.application


def serve(
    app: Flask,
    host: str,
    port: int,
    threads: int = 8,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM."""
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    options: dict[str, Any] = {
        "bind": [bind],
        "workers": 1,
        "worker_class": "gthread",
        "threads": threads,
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": "info",
        # The default 30 s would end a worker whose thread waits on a slow page's service
        # call; the pages' own calls time out well before this.
        "timeout": 120,
        "graceful_timeout": 10,
        "forwarded_allow_ips": "",
        # No runtime control socket (it would be made under $HOME): stop it with a signal.
        "control_socket_disable": True,
    }
    if certfile and keyfile:
        options.update(certfile=certfile, keyfile=keyfile)
    _Server(app, options).run()
