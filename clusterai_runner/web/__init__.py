"""The web app: the cluster's status, runs, keys, usage and accounts, behind a login.

Built the way Flask's tutorial builds apps: ``create_app(test_config=None)`` assembles
it, one blueprint per page group, extensions attached with ``init_app``. It reads the
state store and acts only through the use cases the CLI calls (``clusterai_runner.usecases``),
so a page and a command do the same thing. Access rules live in ``policy``: every page
needs a login, every POST needs a CSRF token and, unless a view says otherwise, the
admin role; every POST is written to the audit table.

Configuration (``test_config``, or ``clusterai web serve``'s options, or the
environment): ``SECRET_KEY`` (``CLUSTERAI_WEB_SECRET_KEY``, else a random key kept in
``<state dir>/web-secret-key``), ``CLUSTERAI_INVENTORY`` (the inventory whose hosts the
overview shows; ``CLUSTERAI_WEB_INVENTORY``), ``CLUSTERAI_TLS`` (cookies marked Secure).

Two ways to run it. Beside the operator's inventory (``clusterai web serve -i``): hosts
asked over SSH and HTTP like ``clusterai status``, the services found from the inventory,
and jobs that run playbooks. On the control host (the ``web`` role): the hosts as its
Prometheus sees them, its own services at the URLs the unit gives
(``CLUSTERAI_WEB_PROMETHEUS_URL``, ``_ALERTMANAGER_URL``, ``_GATEWAY_URL``, ``_CA_FILE``,
the secrets as systemd credentials), the gateway's store; no jobs (no inventory there).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask

from clusterai_runner.config import Settings, private_file
from clusterai_runner.usecases import services as services_usecase
from clusterai_runner.usecases import status as status_usecase
from clusterai_runner.web import (
    alerts,
    auth,
    gateway,
    hosts,
    jobs,
    keys,
    models,
    overview,
    policy,
    runs,
    usage,
    users,
)
from clusterai_runner.web.extensions import csrf, services, status_watch, store


def _secret_key(settings: Settings) -> str:
    """The key that signs session cookies: from the environment or a systemd credential
    (the web role's), else kept in the state directory (0600) so sessions outlive a
    restart."""
    given = os.environ.get("CLUSTERAI_WEB_SECRET_KEY", "") or _credential("secret-key")
    if given:
        return given
    path = private_file(settings.private_state_dir() / "web-secret-key")
    key = path.read_text().strip()
    if len(key) < 32:
        key = secrets.token_hex(32)
        path.write_text(key + "\n")
    return key


def credential_path(name: str) -> Path | None:
    """The file of a secret systemd handed over with LoadCredential (the web role's unit)."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    path = Path(directory) / name if directory else None
    return path if path is not None and path.is_file() else None


def _credential(name: str) -> str:
    """That secret, or ""."""
    path = credential_path(name)
    return path.read_text().strip() if path is not None else ""


def _control_host_config() -> dict[str, Any]:
    """On the control host (the web role): the services at the URLs the unit gives, the
    hosts' status from Prometheus, the secrets from systemd credentials."""
    env = os.environ
    prometheus = env.get("CLUSTERAI_WEB_PROMETHEUS_URL")
    if not prometheus:
        return {}
    found = services_usecase.of_urls(
        prometheus, env.get("CLUSTERAI_WEB_ALERTMANAGER_URL", ""),
        env.get("CLUSTERAI_WEB_GATEWAY_URL", ""), env.get("CLUSTERAI_WEB_CA_FILE", ""),
        env.get("CLUSTERAI_WEB_MONITORING_USER", "clusterai"),
        _credential("monitoring-password"), _credential("gateway-admin-key"),
        env.get("CLUSTERAI_WEB_CONTROL", ""),
    )  # fmt: skip
    return {
        "CLUSTERAI_SERVICES": lambda: found,
        "CLUSTERAI_STATUS_SOURCE": lambda: status_usecase.from_prometheus(
            found.prometheus, found.gateway
        ),
        "CLUSTERAI_TLS": env.get("CLUSTERAI_WEB_TLS", "") == "1",
    }


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    settings = (test_config or {}).get("CLUSTERAI_SETTINGS") or Settings.from_env()
    inventory = os.environ.get("CLUSTERAI_WEB_INVENTORY")
    app.config.from_mapping(
        CLUSTERAI_SETTINGS=settings,
        CLUSTERAI_INVENTORY=Path(inventory) if inventory else None,
        CLUSTERAI_VAULT=None,
        CLUSTERAI_TLS=False,
        # How often the overview asks every host (the page polls at the same pace).
        CLUSTERAI_STATUS_INTERVAL=5.0,
        SESSION_COOKIE_NAME="clusterai_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=8),
        # policy.check runs the CSRF check itself, after the login check.
        WTF_CSRF_CHECK_DEFAULT=False,
        WTF_CSRF_TIME_LIMIT=None,  # a token lives as long as its session
        MAX_CONTENT_LENGTH=1_000_000,
    )
    if test_config is None:
        app.config.from_mapping(_control_host_config())
    else:
        app.config.from_mapping(test_config)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _secret_key(settings)
    app.config["SESSION_COOKIE_SECURE"] = bool(app.config["CLUSTERAI_TLS"])

    store.init_app(app)
    csrf.init_app(app)
    services.init_app(app)
    status_watch.init_app(app)  # it reads the services too
    policy.init_app(app)
    jobs.init_app(app)
    for blueprint in (
        auth.bp, overview.bp, hosts.bp, runs.bp, alerts.bp, gateway.bp, jobs.bp, models.bp,
        keys.bp, usage.bp, users.bp,
    ):  # fmt: skip
        app.register_blueprint(blueprint)
    return app
