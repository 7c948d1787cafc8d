"""``clusterai cloud``: EC2 workers that join the cluster and leave it drained.

The verbs parse and render; ``usecases/cloud.py`` does the work. Credentials come only
from boto3's chain (environment, profile, instance role), never from an option.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import click

from clusterai_runner.adapters.vault import Vault
from clusterai_runner.cli.common import (
    EXIT_CODES,
    INVENTORY_OPTION,
    JSON_OPTION,
    ctrl_c_cancels,
    progress,
    settings_of,
    vault_options,
)
from clusterai_runner.errors import UsageError


@click.group("cloud", epilog=EXIT_CODES)
def cloud_command() -> None:
    """Cloud workers on AWS EC2: launch, list, take down, watch spot notices, reconcile, cost.

    Configured by the inventory's `cloud` group variables (cloud_region, cloud_ami,
    cloud_subnet_id, ...; see README, Cloud burst). Every verb that calls the cloud first
    reconciles it with the state store.
    """


@cloud_command.command("up", epilog=EXIT_CODES)
@INVENTORY_OPTION
@click.option("--count", type=int, default=1, show_default=True, help="How many workers.")
@click.option("--type", "instance_type", help="An instance type of cloud_instance_types.")
@click.option(
    "--spot",
    is_flag=True,
    help="Spot instances (`cloud watch` takes one out on its interruption notice).",
)
@click.option("--max-price", type=float, help="With --spot: the most to pay per hour, in USD.")
@click.option("--wait", is_flag=True, help="Return once the gateway routes to the new workers.")
@JSON_OPTION
@vault_options
@click.pass_context
def cloud_up(
    ctx: click.Context,
    inventory: Path,
    count: int,
    instance_type: str | None,
    spot: bool,
    max_price: float | None,
    wait: bool,
    as_json: bool,
    vault: Vault,
) -> None:
    """Launch workers, then preflight and converge them as `cloud` workers.

    Each worker's SSH must answer with the host key its user-data gave it
    (CLUSTERAI_CLOUD_SSH_TIMEOUT, 300 s). Refused before any call that can create
    something when it would pass cloud_max_instances or a spend cap. A worker that fails
    to start, to answer or to join is terminated. --wait needs the inventory's
    gateway_admin_key.
    """
    from clusterai_runner.usecases.cloud import up

    with ctrl_c_cancels() as cancel:
        result = up(
            settings_of(ctx),
            inventory,
            count,
            instance_type=instance_type,
            spot=spot,
            max_price=max_price,
            wait=wait,
            vault=vault,
            cancel=cancel,
            progress=progress,
        )
    if as_json:
        click.echo(json.dumps([r.to_json() for r in result.launched], indent=2))
        return
    for r in result.launched:
        click.echo(f"{r.host}  {r.instance_id}  {r.instance_type}  {r.address}  {r.state}")


@cloud_command.command("list", epilog=EXIT_CODES)
@JSON_OPTION
@click.option("--all", "show_all", is_flag=True, help="Also terminated and closed records.")
@click.pass_context
def cloud_list(ctx: click.Context, as_json: bool, show_all: bool) -> None:
    """The cloud workers the state store knows (no call to the cloud)."""
    from clusterai_runner.store import LIVE_STATES
    from clusterai_runner.usecases.cloud import listing

    records = [r for r in listing(settings_of(ctx)) if show_all or r.state in LIVE_STATES]
    if as_json:
        click.echo(json.dumps([r.to_json() for r in records], indent=2))
        return
    if not records:
        click.echo("no cloud workers; launch some with `clusterai cloud up -i INVENTORY`")
    for r in records:
        click.echo(
            f"{r.host:<16} {r.instance_id or '-':<20} {r.instance_type:<12} "
            f"{r.address or '-':<15} {r.state:<11} {r.error}"
        )


@cloud_command.command("down", epilog=EXIT_CODES)
@INVENTORY_OPTION
@click.argument("workers", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Every cloud worker of the cluster.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@JSON_OPTION
@vault_options
@click.pass_context
def cloud_down(
    ctx: click.Context,
    inventory: Path,
    workers: tuple[str, ...],
    everything: bool,
    yes: bool,
    as_json: bool,
    vault: Vault,
) -> None:
    """Drain WORKERS (instance ids or host names) at the gateway, scale them in, and
    terminate their instances."""
    from clusterai_runner.usecases.cloud import down

    if everything and workers:
        raise UsageError("cloud down", "names workers and --all", "give one or the other")
    if not everything and not workers:
        raise UsageError("cloud down", "names no worker", "give instance ids or --all")
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(
                "cloud down", "no terminal to ask for confirmation", "add --yes to go ahead"
            )
        what = "every cloud worker" if everything else ", ".join(workers)
        click.confirm(f"Drain and terminate {what}?", abort=True, err=True)
    done = down(
        settings_of(ctx),
        inventory,
        list(workers),
        everything=everything,
        vault=vault,
        progress=progress,
    )
    if as_json:
        click.echo(json.dumps([r.to_json() for r in done], indent=2))
        return
    for r in done:
        click.echo(f"{r.host}  {r.instance_id}  {r.state}")
    if not done:
        click.echo("no cloud worker to take down")


@cloud_command.command("watch", epilog=EXIT_CODES)
@INVENTORY_OPTION
@click.option(
    "--interval",
    type=click.FloatRange(min=1.0),
    default=5.0,
    show_default=True,
    help="Seconds between two asks of the spot workers' metadata.",
)
@click.option("--once", is_flag=True, help="Ask once, act on what is found, and end.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per worker taken down.")
@vault_options
@click.pass_context
def cloud_watch(
    ctx: click.Context,
    inventory: Path,
    interval: float,
    once: bool,
    as_json: bool,
    vault: Vault,
) -> None:
    """Take spot workers out before EC2 takes them back: ask each joined spot worker's
    instance metadata (spot/instance-action, over SSH) for an interruption notice; on one,
    drain the worker at the gateway at once, then scale it in and terminate it.

    Runs until Ctrl-C or SIGTERM (exit 0); run it where the state store is, as a service.
    Each worker taken down is one line (with --json, one JSON object) on stdout.
    """
    from clusterai_runner.store import CloudInstance
    from clusterai_runner.usecases.cloud_policy import SpotNotice
    from clusterai_runner.usecases.cloud_spot import watch

    def taken(record: CloudInstance, notice: SpotNotice) -> None:
        if as_json:
            shown = {**record.to_json(), "notice": {"action": notice.action, "time": notice.time}}
            click.echo(json.dumps(shown))
        else:
            click.echo(f"{record.host}  {record.instance_id}  {record.state}  ({notice})")

    with ctrl_c_cancels(signal.SIGTERM) as cancel:
        watch(
            settings_of(ctx),
            inventory,
            interval_s=interval,
            once=once,
            vault=vault,
            cancel=cancel,
            progress=progress,
            on_taken=taken,
        )


@cloud_command.command("reconcile", epilog=EXIT_CODES)
@INVENTORY_OPTION
@click.option("--dry-run", is_flag=True, help="Say what would be done; change nothing.")
@click.option("--adopt", is_flag=True, help="Record unknown tagged instances, not terminate them.")
@JSON_OPTION
@vault_options
@click.pass_context
def cloud_reconcile(
    ctx: click.Context, inventory: Path, dry_run: bool, adopt: bool, as_json: bool, vault: Vault
) -> None:
    """Make the cloud and the state store agree: terminate tagged instances the store
    does not keep (or knows as failed), close intents that never made one."""
    from clusterai_runner.usecases.cloud import reconcile_now

    actions = reconcile_now(
        settings_of(ctx), inventory, adopt=adopt, dry_run=dry_run, vault=vault, progress=progress
    )
    if as_json:
        click.echo(json.dumps([a.__dict__ for a in actions], indent=2))
        return
    if not actions:
        click.echo("the cloud and the store agree")
    for a in actions:
        verb = f"would {a.kind}" if dry_run else a.kind
        click.echo(f"{verb:<16} {a.instance_id or '-':<20} {a.intent or '-':<16} {a.reason}")


@cloud_command.command("cost", epilog=EXIT_CODES)
@JSON_OPTION
@click.pass_context
def cloud_cost(ctx: click.Context, as_json: bool) -> None:
    """What the cloud workers have cost, from their launch and end times and the price
    recorded at launch (no call to the cloud)."""
    from clusterai_runner.usecases.cloud import cost

    report = cost(settings_of(ctx))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "instances": [{**r.to_json(), "cost_usd": c} for r, c in report.rows],
                    "hourly_now_usd": report.hourly_now,
                    "month_to_date_usd": report.month_to_date,
                    "total_usd": report.total,
                },
                indent=2,
            )
        )
        return
    for r, c in report.rows:
        click.echo(f"{r.host:<16} {r.instance_type:<12} ${r.hourly_usd:.4f}/h  ${c:.4f}  {r.state}")
    click.echo(
        f"running now ${report.hourly_now:.4f}/h, this month ${report.month_to_date:.2f}, "
        f"in all ${report.total:.2f}"
    )
