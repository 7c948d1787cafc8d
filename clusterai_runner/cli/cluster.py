"""The cluster's verbs: ``up``, ``scale-out``, ``scale-in``, ``validate``, ``status``.

Each parses its arguments, calls its use case and renders the result; nothing else.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from clusterai_runner.cli.common import (
    EXIT_CODES,
    INVENTORY_OPTION,
    JSON_OPTION,
    LIMIT_OPTION,
    ctrl_c_cancels,
    end_run,
    names,
    settings_of,
    vault_options,
    warn,
)
from clusterai_runner.cli.display import LiveView
from clusterai_runner.errors import PreflightError, RunFailed, UsageError
from clusterai_runner.usecases import converge
from clusterai_runner.usecases.converge import Vault
from clusterai_runner.usecases.status import HostStatus
from clusterai_runner.usecases.status import status as cluster_status
from clusterai_runner.usecases.validate import CHECKS, HostReport, validate, validate_targets


@click.command("up", epilog=EXIT_CODES)
@INVENTORY_OPTION
@LIMIT_OPTION
@click.option("--tags", help="Only tasks with these tags (comma-separated).")
@click.option("--check", is_flag=True, help="Show what would change; change nothing.")
@vault_options
@click.pass_context
def up(
    ctx: click.Context,
    inventory: Path,
    limit: str | None,
    tags: str | None,
    check: bool,
    vault: Vault,
) -> None:
    """Converge the cluster: run playbooks/site.yml with a live view.

    Failures are printed as they happen, with the task's message; the run ends with the
    per-host recap. The run and every task result are stored: see `clusterai runs`.
    """
    view = LiveView()
    try:
        with ctrl_c_cancels() as cancel:
            record = converge.up(
                settings_of(ctx),
                inventory,
                limit=limit,
                tags=tags,
                check=check,
                on_event=view,
                cancel=cancel,
                vault=vault,
            )
    finally:
        view.finish()
    end_run(record, "clusterai up")


@click.command("scale-out", epilog=EXIT_CODES)
@INVENTORY_OPTION
@click.argument("hosts", nargs=-1, required=True)
@click.option(
    "--group",
    default="workers",
    show_default=True,
    help="The inventory group to add them to (workers or one of its subgroups).",
)
@click.option(
    "--address",
    "addresses",
    multiple=True,
    help="Each host's IP address or DNS name, once per host in the same order.",
)
@click.option("--user", help="SSH user (ansible_user) for the new hosts.")
@click.option("--port", type=click.IntRange(1, 65535), help="SSH port (ansible_port).")
@click.option(
    "--accept-new-host-keys",
    is_flag=True,
    help="Record the new hosts' keys in known_hosts (changed keys still fail).",
)
@vault_options
@click.pass_context
def scale_out_command(
    ctx: click.Context,
    inventory: Path,
    hosts: tuple[str, ...],
    group: str,
    addresses: tuple[str, ...],
    user: str | None,
    port: int | None,
    accept_new_host_keys: bool,
    vault: Vault,
) -> None:
    """Add worker HOSTS to the cluster.

    \b
    1. adds them to the inventory: to the state store when -i is, or is a directory
       holding, a clusterai_state.yml config of the dynamic inventory plugin; otherwise
       to the YAML file that defines --group, edited in place (comments, order and
       quoting kept);
    2. checks the inventory and runs `clusterai validate` on them: on a failure the
       inventory is put back as it was (exit 2 or 3);
    3. runs playbooks/scale_out.yml on them and the control host only.
    Hosts already in --group are converged again, so a failed scale-out heals on a re-run.
    """
    from clusterai_runner.usecases.scale import new_hosts, scale_out

    new = new_hosts(list(hosts), list(addresses), user, port)
    view = LiveView()
    try:
        with ctrl_c_cancels() as cancel:
            result = scale_out(
                settings_of(ctx),
                inventory,
                group,
                new,
                accept_new_host_keys=accept_new_host_keys,
                on_validated=_print_validation,
                on_event=view,
                cancel=cancel,
                vault=vault,
            )
    finally:
        view.finish()
    assert result.record is not None
    end_run(result.record, "clusterai scale-out " + " ".join(hosts))


@click.command("scale-in", epilog=EXIT_CODES)
@INVENTORY_OPTION
@click.argument("hosts", nargs=-1, required=True)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--drain-timeout",
    type=click.IntRange(0, 86400),
    default=60,
    show_default=True,
    help="Seconds to wait for requests open on the inference servers before stopping them.",
)
@click.option("--wipe", is_flag=True, help="Also delete the hosts' models and Cluster AI files.")
@vault_options
@click.pass_context
def scale_in_command(
    ctx: click.Context,
    inventory: Path,
    hosts: tuple[str, ...],
    yes: bool,
    drain_timeout: int,
    wipe: bool,
    vault: Vault,
) -> None:
    """Remove worker HOSTS from the cluster.

    Takes them out of monitoring, waits up to --drain-timeout seconds for their open
    requests, stops their services (playbooks/scale_in.yml), then deletes them from the
    inventory file or the state store. A failed run leaves the inventory as it was.
    """
    from clusterai_runner.usecases.scale import scale_in, scale_in_targets

    settings = settings_of(ctx)
    targets = [h.name for h in scale_in_targets(settings, inventory, list(hosts), vault=vault)]
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(
                "scale-in", "no terminal to ask for confirmation", "add --yes to go ahead"
            )
        click.confirm(
            f"Stop {', '.join(targets)} and remove them from {inventory}?", abort=True, err=True
        )
    view = LiveView()
    try:
        with ctrl_c_cancels() as cancel:
            result = scale_in(
                settings,
                inventory,
                targets,
                drain_timeout=drain_timeout,
                wipe=wipe,
                on_event=view,
                cancel=cancel,
                vault=vault,
            )
    finally:
        view.finish()
    assert result.record is not None
    end_run(result.record, "clusterai scale-in " + " ".join(hosts))
    where = ", ".join(str(p) for p in result.edited) or "the state store"
    click.echo(f"removed {', '.join(targets)} from {where}")


SYMBOL = {"pass": "ok", "warn": "WARN", "fail": "FAIL", "skip": "-"}


@click.command("validate", epilog=EXIT_CODES)
@INVENTORY_OPTION
@LIMIT_OPTION
@click.option("--parallel", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option(
    "--timeout",
    type=click.FloatRange(1),
    default=10.0,
    show_default=True,
    help="Seconds to wait for each host's SSH port and answer.",
)
@click.option(
    "--accept-new-host-keys",
    is_flag=True,
    help="Record unknown host keys (changed keys still fail).",
)
@JSON_OPTION
@vault_options
@click.pass_context
def validate_command(
    ctx: click.Context,
    inventory: Path,
    limit: str | None,
    parallel: int,
    timeout: float,
    accept_new_host_keys: bool,
    as_json: bool,
    vault: Vault,
) -> None:
    """Check every host over SSH at once, before anything changes.

    \b
    Checks: reach (TCP), host_key (against known_hosts), auth (key), sudo (non-root
    users), python, os, memory, disk (where models go), gpu, ports (free or already
    held by Cluster AI's unit), clock (skew against this machine). Thresholds are the
    preflight role's variables, overridable per host in the inventory.
    Exit 3 when any host fails a check.
    """
    hosts = validate_targets(inventory, limit, vault)
    done = 0

    def progress(report: HostReport) -> None:
        nonlocal done
        done += 1
        if not as_json and sys.stderr.isatty():
            click.echo(f"\r… {done}/{len(hosts)} hosts checked", nl=False, err=True)

    reports = validate(hosts, parallel, accept_new_host_keys, timeout, progress)
    if not as_json and sys.stderr.isatty():
        click.echo("\r\033[K", nl=False, err=True)
    failed = [r for r in reports if r.status == "fail"]
    if as_json:
        summary = {s: sum(r.status == s for r in reports) for s in ("pass", "warn", "fail")}
        click.echo(
            json.dumps({"hosts": [r.to_json() for r in reports], "summary": summary}, indent=2)
        )
    else:
        _print_validation(reports)
    if failed:
        raise PreflightError(
            "validate",
            f"{len(failed)} of {len(reports)} hosts failed: {names(r.name for r in failed)}",
            "fix what is listed above and run it again",
        )


def _print_validation(reports: list[HostReport]) -> None:
    width = max(len(r.name) for r in reports)
    click.echo(f"{'host':<{width}}  " + " ".join(f"{c:<8}" for c in CHECKS) + " result")
    for r in reports:
        states = {c.name: SYMBOL[c.status] for c in r.checks}
        cells = " ".join(f"{states.get(c, ''):<8}" for c in CHECKS)
        click.echo(f"{r.name:<{width}}  {cells} {r.status}")
    for r in reports:
        for c in r.checks:
            if c.status in ("warn", "fail"):
                fix = f" ({c.fix})" if c.fix else ""
                click.echo(f"{r.name}: {c.name}: {c.detail}{fix}")


@click.command("status", epilog=EXIT_CODES)
@INVENTORY_OPTION
@LIMIT_OPTION
@click.option(
    "--timeout",
    type=click.FloatRange(0.1),
    default=3.0,
    show_default=True,
    help="Seconds to wait for each answer.",
)
@JSON_OPTION
@vault_options
@click.pass_context
def status_command(
    ctx: click.Context,
    inventory: Path,
    limit: str | None,
    timeout: float,
    as_json: bool,
    vault: Vault,
) -> None:
    """Each host now: SSH reachable, inference server health and loaded models, node
    exporter, GPUs (from the GPU exporter) and the result of the last stored run.

    \b
    Asks every host at once over HTTP and TCP; no SSH session, nothing changes.
    Exit 1 when any host is unhealthy.
    --json prints {"hosts": [{"name", "kind", "address", "reachable", "inference":
    "up"|"down"|"n/a", "backend", "models" (loaded), "held" (can serve; null: unknown),
    "exporter": "up"|"down", "gpus": [{"name", "utilization", "memory_used_bytes",
    "memory_total_bytes"}], "last_run": {"id", "playbook", "result": "ok"|"failed",
    "changed"} or null, "problems", "healthy"}],
    "summary": {"healthy", "unhealthy"}}
    """
    found = cluster_status(settings_of(ctx), inventory, limit, timeout, warn, vault)
    unhealthy = [s for s in found if not s.healthy]
    if as_json:
        summary = {"healthy": len(found) - len(unhealthy), "unhealthy": len(unhealthy)}
        payload = {"hosts": [s.to_json() for s in found], "summary": summary}
        click.echo(json.dumps(payload, indent=2))
    else:
        _print_status_table(found)
    if unhealthy:
        raise RunFailed(
            "status",
            f"{len(unhealthy)} of {len(found)} hosts unhealthy: "
            + names(s.name for s in unhealthy),
            "see the problems listed; `clusterai up` converges them again",
        )


def _print_status_table(found: list[HostStatus]) -> None:
    width = max(len(s.name) for s in found)
    click.echo(
        f"{'host':<{width}}  {'address':<15} {'ssh':<4} {'inference':<10} {'exporter':<9}"
        f" {'gpus':<5} last run   models"
    )
    for s in found:
        last = f"{s.last_run['id']} {s.last_run['result']}" if s.last_run else "-"
        click.echo(
            f"{s.name:<{width}}  {s.address:<15} {'up' if s.reachable else 'DOWN':<4}"
            f" {s.inference:<10} {s.exporter:<9} {len(s.gpus):<5} {last:<10} "
            f"{', '.join(s.models) or '-'}"
        )
    for s in found:
        for gpu in s.gpus:
            used, total = gpu.memory_used_bytes / 2**30, gpu.memory_total_bytes / 2**30
            click.echo(
                f"{s.name}: {gpu.name}: {gpu.utilization:.0%} busy, {used:.1f}/{total:.1f} GiB"
            )
        for problem in s.problems:
            click.echo(f"{s.name}: {problem}")
