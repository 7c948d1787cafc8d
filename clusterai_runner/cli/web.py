"""``clusterai web``: the web app in the foreground, and its accounts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from clusterai_runner.adapters.vault import Vault
from clusterai_runner.cli.common import EXIT_CODES, JSON_OPTION, settings_of, vault_options
from clusterai_runner.errors import UsageError


@click.group("web", epilog=EXIT_CODES)
def web_command() -> None:
    """The web app: the cluster's status, runs, keys, usage and accounts, behind a login."""


@web_command.command("serve", epilog=EXIT_CODES)
@click.option("--listen", default="127.0.0.1:8080", show_default=True, help="HOST:PORT.")
@click.option(
    "-i",
    "--inventory",
    type=click.Path(path_type=Path),
    help="The inventory whose hosts the overview shows (as for `clusterai status`).",
)
@click.option("--threads", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Requests served at once.")  # fmt: skip
@click.option("--certfile", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Serve HTTPS with this certificate (PEM, the chain after it).")  # fmt: skip
@click.option("--keyfile", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="The certificate's private key (PEM).")  # fmt: skip
@vault_options
@click.pass_context
def web_serve(
    ctx: click.Context,
    listen: str,
    inventory: Path | None,
    threads: int,
    certfile: Path | None,
    keyfile: Path | None,
    vault: Vault,
) -> None:
    """Serve the web app with gunicorn (one process, threads) until Ctrl-C.

    \b
    Log in with an account made by `clusterai web users add`. Without --certfile and
    --keyfile it speaks plain HTTP: listen on a loopback address only (the session
    cookie is marked Secure only under TLS).
    """
    from clusterai_runner.gateway.config import parse_listen
    from clusterai_runner.web import create_app
    from clusterai_runner.web.server import serve

    host, port = parse_listen("--listen", listen)
    if inventory is not None and not inventory.exists():
        raise UsageError(f"--inventory {inventory}", "does not exist", "give an inventory path")
    if (certfile is None) != (keyfile is None):
        raise UsageError("--certfile/--keyfile", "only one is given", "give both, or neither")
    settings = settings_of(ctx)
    app = create_app({
        "CLUSTERAI_SETTINGS": settings,
        "CLUSTERAI_INVENTORY": inventory,
        "CLUSTERAI_VAULT": vault if vault.password_file or vault.password else None,
        "CLUSTERAI_TLS": certfile is not None,
    })  # fmt: skip
    scheme = "https" if certfile else "http"
    click.echo(f"web app on {scheme}://{host}:{port}/ (Ctrl-C to stop)", err=True)
    serve(app, host, port, threads, str(certfile) if certfile else None,
          str(keyfile) if keyfile else None)  # fmt: skip


@web_command.group("users", epilog=EXIT_CODES)
def web_users() -> None:
    """The web app's accounts (admin: everything; viewer: read only)."""


def _password(name: str) -> str:
    """From a prompt (typed twice) at a terminal, else the first line of stdin."""
    if sys.stdin.isatty():
        value: str = click.prompt(
            f"Password for {name}", hide_input=True, confirmation_prompt=True, err=True
        )
        return value
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise UsageError("stdin", "gave no password", "pipe the password in, or run at a terminal")
    return line


@web_users.command("add", epilog=EXIT_CODES)
@click.argument("name")
@click.option("--role", type=click.Choice(["admin", "viewer"]), required=True)
@click.pass_context
def web_users_add(ctx: click.Context, name: str, role: str) -> None:
    """Add an account. The password comes from a prompt, or from stdin when piped; never
    from the command line."""
    from clusterai_runner.usecases import users

    users.check_new(name, role, "x" * users.MIN_PASSWORD)
    users.add(settings_of(ctx), name, role, _password(name))
    click.echo(f"user {name} added ({role})")


@web_users.command("password", epilog=EXIT_CODES)
@click.argument("name")
@click.pass_context
def web_users_password(ctx: click.Context, name: str) -> None:
    """Set an account's password (and end its lockout), from a prompt or stdin."""
    from clusterai_runner.usecases import users

    users.set_password(settings_of(ctx), name, _password(name))
    click.echo(f"password of {name} set")


@web_users.command("list", epilog=EXIT_CODES)
@JSON_OPTION
@click.pass_context
def web_users_list(ctx: click.Context, as_json: bool) -> None:
    """Every account: name, role, last login, lockout (never the password hash)."""
    from clusterai_runner.usecases import users

    found = users.list_users(settings_of(ctx))
    if as_json:
        click.echo(json.dumps([u.to_json() for u in found], indent=2))
        return
    if not found:
        click.echo("no users; add one with `clusterai web users add NAME --role admin`")
    for u in found:
        locked = f" locked until {u.locked_until}" if u.locked_until else ""
        click.echo(f"{u.name:<20} {u.role:<7} last login {u.last_login_at or '-'}{locked}")


@web_users.command("remove", epilog=EXIT_CODES)
@click.argument("name")
@click.pass_context
def web_users_remove(ctx: click.Context, name: str) -> None:
    """Remove an account; its sessions end at their next request."""
    from clusterai_runner.usecases import users

    users.remove(settings_of(ctx), name)
    click.echo(f"user {name} removed")
