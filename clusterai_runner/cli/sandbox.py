"""``clusterai sandbox``: a local cluster of real hosts."""

from __future__ import annotations

import json

import click

from clusterai_runner.cli.common import EXIT_CODES, JSON_OPTION, progress, settings_of
from clusterai_runner.sandbox import DEFAULT_NAME, Sandboxes, SandboxStatus


@click.group(epilog=EXIT_CODES)
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
    sandboxes = Sandboxes(settings_of(ctx), progress=progress)
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
    _emit(Sandboxes(settings_of(ctx)).status(name), as_json)


@sandbox.command("down", epilog=EXIT_CODES)
@NAME_OPTION
@click.pass_context
def sandbox_down(ctx: click.Context, name: str) -> None:
    """Stop every host and remove the sandbox's files. Safe to repeat."""
    if Sandboxes(settings_of(ctx), progress=progress).down(name):
        click.echo(f"sandbox {name} removed")
    else:
        click.echo(f"sandbox {name} does not exist; nothing to do")


@sandbox.command("list", epilog=EXIT_CODES)
@JSON_OPTION
@click.pass_context
def sandbox_list(ctx: click.Context, as_json: bool) -> None:
    """List the sandboxes on this machine."""
    sandboxes = Sandboxes(settings_of(ctx))
    statuses = [sandboxes.status(name) for name in sandboxes.names()]
    if as_json:
        click.echo(json.dumps([s.to_json() for s in statuses], indent=2))
        return
    if not statuses:
        click.echo("no sandboxes; create one with `clusterai sandbox up`")
    for s in statuses:
        up = sum(h.state == "running" for h in s.hosts)
        click.echo(f"{s.name:<24} {up}/{len(s.hosts)} running  {s.inventory}")
