"""``python -m clusterai_runner.web serve|ensure-user``: what the ``web`` role's unit and
tasks run on the control host, where the ``clusterai`` command is not installed.

``serve`` reads its settings from the environment the unit sets: ``CLUSTERAI_WEB_LISTEN``
(HOST:PORT), ``CLUSTERAI_WEB_CERTFILE`` and the key as the systemd credential ``tls-key``
(or ``CLUSTERAI_WEB_KEYFILE``), ``CLUSTERAI_WEB_THREADS``, and what ``create_app`` reads
(the services' URLs, the CA, the store). ``ensure-user NAME --role ROLE`` makes that
account with the password read from stdin; it prints ``changed`` or ``unchanged``.
Errors are one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from clusterai_runner.config import Settings
from clusterai_runner.errors import ClusterAIError, UsageError


def _serve() -> None:
    from clusterai_runner.gateway.config import parse_listen
    from clusterai_runner.web import create_app, credential_path
    from clusterai_runner.web.server import serve

    host, port = parse_listen("CLUSTERAI_WEB_LISTEN", os.environ.get("CLUSTERAI_WEB_LISTEN", ""))
    certfile = os.environ.get("CLUSTERAI_WEB_CERTFILE") or None
    keyfile = os.environ.get("CLUSTERAI_WEB_KEYFILE") or None
    key_credential = credential_path("tls-key")
    if certfile and not keyfile and key_credential is not None:
        keyfile = str(key_credential)
    if bool(certfile) != bool(keyfile):
        raise UsageError("CLUSTERAI_WEB_CERTFILE", "is set without its key", "give both")
    threads = int(os.environ.get("CLUSTERAI_WEB_THREADS", "8") or 8)
    serve(create_app(), host, port, threads, certfile, keyfile)


def _ensure_user(name: str, role: str) -> None:
    from clusterai_runner.usecases import users

    password = sys.stdin.readline().rstrip("\r\n")
    changed = users.ensure(Settings.from_env(), name, role, password)
    print("changed" if changed else "unchanged")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clusterai_runner.web")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="serve the web app (settings from the environment)")
    ensure = commands.add_parser("ensure-user", help="make an account (password on stdin)")
    ensure.add_argument("name")
    ensure.add_argument("--role", choices=["admin", "viewer"], required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            _serve()
        else:
            _ensure_user(args.name, args.role)
    except ClusterAIError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
