"""The gateway as a service: ``python -m clusterai_runner.gateway``.

What the gateway role's systemd unit runs. It imports neither Ansible nor click, so the
service's virtual environment holds only the gateway's own dependencies.

    python -m clusterai_runner.gateway serve --config /etc/clusterai-gateway/gateway.yml
    python -m clusterai_runner.gateway check --config FILE [--relative-to DIR]
    python -m clusterai_runner.gateway check --backends FILE
    python -m clusterai_runner.gateway sync-keys < keys.json

``check`` reads a configuration (or a backends file alone) exactly as ``serve`` and a
reload would, without the providers' keys, and prints ``ok`` or the one-line error: the
gateway role runs it on each rendered file before it replaces the installed one
(``validate:``), so a broken file fails the play and the running gateway keeps serving.

``sync-keys`` reads a JSON list of ``{name, key, admin, rpm, tpm, state}`` on standard
input and makes the state store match (keys kept hashed); it prints
``{"changed": [...]}``. Settings come from the same ``CLUSTERAI_*`` variables as the
CLI's (``CLUSTERAI_STATE_DIR``, ``CLUSTERAI_STATE_URL``). Exit codes: 0 ok, 2 bad
configuration or input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from clusterai_runner.config import Settings, using_store
from clusterai_runner.errors import UsageError
from clusterai_runner.gateway.config import load, read_backends_file
from clusterai_runner.gateway.keys import sync_keys
from clusterai_runner.gateway.monitoring import read_web_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clusterai_runner.gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve until SIGTERM")
    serve.add_argument("--config", type=Path, required=True, help="the gateway's YAML file")
    check = commands.add_parser("check", help="check a configuration file; change nothing")
    which = check.add_mutually_exclusive_group(required=True)
    which.add_argument("--config", type=Path, help="a gateway configuration file")
    which.add_argument("--backends", type=Path, help="a backends file (backends, aliases)")
    check.add_argument(
        "--relative-to", type=Path, help="find a relative backends_file here, not beside it"
    )
    commands.add_parser("sync-keys", help="make the store's API keys match a JSON list")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            if args.backends is not None:
                read_backends_file(args.backends, env=None)
            else:
                config = load(args.config, relative_to=args.relative_to, require_env=False)
                if config.metrics_web_config is not None:
                    read_web_config(Path(config.metrics_web_config))
            print(f"ok: {args.backends or args.config}")
            return 0
        settings = Settings.from_env()
        if args.command == "serve":
            from clusterai_runner.gateway.service import run_gateway

            config_path: Path = args.config
            run_gateway(
                lambda: load(config_path), settings, lambda line: print(line, file=sys.stderr)
            )
            return 0
        try:
            entries = json.load(sys.stdin)
        except json.JSONDecodeError as exc:
            raise UsageError("standard input", f"not JSON: {exc.msg}", "send a JSON list") from exc
        if not isinstance(entries, list):
            raise UsageError("standard input", "not a JSON list", "send a list of keys")
        try:
            with using_store(settings) as store:
                changed = sync_keys(store, entries)
        except ValueError as exc:
            raise UsageError("gateway keys", str(exc)) from exc
        print(json.dumps({"changed": changed}))
        return 0
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
