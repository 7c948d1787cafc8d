"""A Prometheus-style web configuration (exporter-toolkit's ``--web.config.file``, which
the ``pki`` role writes for every monitored service) read by our own metrics listeners:
the gateway's and the autoscaler's.

    tls_server_config: {cert_file: ..., key_file: ...}
    basic_auth_users: {clusterai: $2b$10$...}      # bcrypt hashes

A login that passed is remembered (by a digest of it), so that each scrape does not pay
for bcrypt again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from clusterai_runner.errors import UsageError


@dataclass(frozen=True)
class WebConfig:
    cert_file: str
    key_file: str
    users: dict[str, str] = field(repr=False)  # user: bcrypt hash


def read_web_config(path: Path) -> WebConfig:
    """The file's TLS files and users, checked; errors name the file and the field."""
    where = f"web config {path}"
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UsageError(where, exc.strerror or str(exc), "give a readable file") from exc
    except yaml.YAMLError as exc:
        raise UsageError(where, "is not YAML", "fix the file") from exc
    if not isinstance(raw, dict):
        raise UsageError(where, "is not a mapping", "give tls_server_config and basic_auth_users")
    tls = raw.get("tls_server_config")
    if not isinstance(tls, dict) or not tls.get("cert_file") or not tls.get("key_file"):
        raise UsageError(f"{where}: tls_server_config", "needs cert_file and key_file")
    users = raw.get("basic_auth_users")
    if not isinstance(users, dict) or not users:
        raise UsageError(f"{where}: basic_auth_users", "needs at least one user")
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise UsageError(f"{where}: basic_auth_users.{user}", "is not a bcrypt hash")
    return WebConfig(
        str(tls["cert_file"]), str(tls["key_file"]), {str(u): h for u, h in users.items()}
    )


def server_context(web_config: WebConfig) -> ssl.SSLContext:
    """TLS 1.2 or newer with the configuration's certificate and key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(web_config.cert_file, web_config.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(
            "metrics",
            f"cannot load {web_config.cert_file} with {web_config.key_file}: {exc}",
            "check the web configuration's tls_server_config",
        ) from exc
    return context


class Logins:
    """Checks Basic credentials against bcrypt hashes, remembering the ones that passed."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self.passed: set[bytes] = set()
        self._lock = threading.Lock()

    def check(self, header: str) -> bool:
        """Whether ``header`` (an Authorization value) names a user with its password;
        tens of milliseconds the first time (bcrypt), callable from any thread."""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = (
                base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if hashed is None:
            return False
        digest = hashlib.sha256(f"{user}\0{password}\0{hashed}".encode()).digest()
        with self._lock:
            if any(hmac.compare_digest(digest, seen) for seen in self.passed):
                return True
        import bcrypt  # imported only where a login is checked

        ok = bcrypt.checkpw(password.encode(), hashed.encode())
        if ok:
            with self._lock:
                self.passed.add(digest)
        return bool(ok)
