"""The ``clusterai`` command line.

Exit codes: 0 ok, 1 a run failed, 2 usage or configuration error, 3 preflight failed,
130 interrupted. Errors are one line on stderr, ``error: <what>: <why> (<how to fix>)``;
``--debug`` (or ``CLUSTERAI_DEBUG=1``) adds the traceback.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import click

from clusterai_runner import __version__
from clusterai_runner.config import Settings
from clusterai_runner.errors import ClusterAIError
from clusterai_runner.sandbox import DEFAULT_NAME, Sandboxes, SandboxStatus

EXIT_CODES = """\b
Exit codes:
  0    ok
  1    a run or operation failed
  2    usage or configuration error (nothing was changed)
  3    preflight failed on at least one host
  130  interrupted
"""


def _progress(message: str) -> None:
    click.echo(f"… {message}", err=True)


def _settings(ctx: click.Context) -> Settings:
    settings = ctx.find_object(Settings)
    assert settings is not None  # set by the group callback
    return settings


@click.group(epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(__version__, prog_name="clusterai")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Cluster AI: turn a list of machines into one self-hosted AI cluster."""
    settings = Settings.from_env()
    if debug and not settings.debug:
        settings = Settings(**{**settings.__dict__, "debug": True})
    ctx.obj = settings


@cli.group(epilog=EXIT_CODES)
def sandbox() -> None:
    """A local cluster of real Debian 12 hosts (systemd-nspawn, one loopback address each).

    Needs root, systemd-nspawn and debootstrap. Hosts are reached as root@127.0.S.N with
    the sandbox's own key and known_hosts; host key checking stays on.
    """


def _print_status(status: SandboxStatus) -> None:
    click.echo(f"sandbox {status.name}")
    width = max(len(h.name) for h in status.hosts) if status.hosts else 4
    for h in status.hosts:
        click.echo(f"  {h.name:<{width}}  {h.address:<15}  {h.group:<8}  {h.state}")
    click.echo(f"inventory:   {status.inventory}")
    click.echo(f"ssh key:     {status.ssh_key}")
    click.echo(f"known_hosts: {status.known_hosts}")


def _emit(status: SandboxStatus, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(status.to_json(), indent=2))
    else:
        _print_status(status)


NAME_OPTION = click.option("--name", default=DEFAULT_NAME, show_default=True, help="Which sandbox.")
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print stable JSON.")


@sandbox.command("up", epilog=EXIT_CODES)
@click.option(
    "--hosts",
    "count",
    type=click.IntRange(1, 250),
    default=3,
    show_default=True,
    help="How many hosts: one control, the rest workers.",
)
@NAME_OPTION
@click.option("--first-address", help="First host address (default: a free 127.0.S.1).")
@click.option("--ssh-port", type=click.IntRange(1, 65535), help="sshd port on every host [22].")
@click.option(
    "--timeout",
    type=click.FloatRange(1),
    default=120.0,
    show_default=True,
    help="Seconds to wait for each host to boot.",
)
@JSON_OPTION
@click.pass_context
def sandbox_up(
    ctx: click.Context,
    count: int,
    name: str,
    first_address: str | None,
    ssh_port: int | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Create the sandbox, or start what is missing of it.

    Builds the root file system once (cached), creates the hosts, waits until each
    one's systemd is running and sshd answers, then writes the inventory. Running it
    again keeps running hosts and starts missing ones; a larger --hosts adds workers.
    """
    sandboxes = Sandboxes(_settings(ctx), progress=_progress)
    status = sandboxes.up(name, count, first_address, ssh_port, timeout)
    _emit(status, as_json)
    if not as_json:
        click.echo(f"try:         ansible -i {status.inventory} all -m ansible.builtin.ping")


@sandbox.command("status", epilog=EXIT_CODES)
@NAME_OPTION
@JSON_OPTION
@click.pass_context
def sandbox_status(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show each host's name, address, group and state, and the sandbox's files.

    \b
    --json prints:
      {"name", "directory", "inventory", "ssh_key", "known_hosts", "ssh_port",
       "hosts": [{"name", "address", "group": "control"|"workers",
                  "state": "running"|"starting"|"stopped"|"orphaned",
                  "pid"}]}
    """
    _emit(Sandboxes(_settings(ctx)).status(name), as_json)


@sandbox.command("down", epilog=EXIT_CODES)
@NAME_OPTION
@click.pass_context
def sandbox_down(ctx: click.Context, name: str) -> None:
    """Stop every host and remove the sandbox's files. Safe to repeat."""
    if Sandboxes(_settings(ctx), progress=_progress).down(name):
        click.echo(f"sandbox {name} removed")
    else:
        click.echo(f"sandbox {name} does not exist; nothing to do")


@sandbox.command("list", epilog=EXIT_CODES)
@JSON_OPTION
@click.pass_context
def sandbox_list(ctx: click.Context, as_json: bool) -> None:
    """List the sandboxes on this machine."""
    sandboxes = Sandboxes(_settings(ctx))
    statuses = [sandboxes.status(name) for name in sandboxes.names()]
    if as_json:
        click.echo(json.dumps([s.to_json() for s in statuses], indent=2))
        return
    if not statuses:
        click.echo("no sandboxes; create one with `clusterai sandbox up`")
    for s in statuses:
        up = sum(h.state == "running" for h in s.hosts)
        click.echo(f"{s.name:<24} {up}/{len(s.hosts)} running  {s.inventory}")


def _wants_debug(argv: Sequence[str]) -> bool:
    if "--debug" in argv:
        return True
    try:
        return Settings.from_env().debug
    except ClusterAIError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and turn every failure into one line and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _wants_debug(args)
    try:
        result: Any = cli.main(args=args, prog_name="clusterai", standalone_mode=False)
    except ClusterAIError as error:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {error}", err=True)
        return error.exit_code
    except click.UsageError as error:
        command = error.ctx.command_path if error.ctx else "clusterai"
        click.echo(f"error: {command}: {error.format_message()} (see `{command} --help`)", err=True)
        return 2
    except click.ClickException as error:
        click.echo(f"error: {error.format_message()}", err=True)
        return error.exit_code
    except (KeyboardInterrupt, click.Abort):
        click.echo("error: interrupted", err=True)
        return 130
    except Exception as error:
        if debug:
            traceback.print_exc()
        click.echo(
            f"error: internal error: {type(error).__name__}: {error} "
            "(re-run with --debug and report the traceback)",
            err=True,
        )
        return 1
    return result if isinstance(result, int) else 0
