"""``clusterai autoscale``: workers that follow the gateway's load.

The verbs parse and render; ``usecases/autoscale.py`` does the work and
``autoscaler/policy.py`` decides. The configuration is the inventory's ``autoscale_*``
variables (README, "The autoscaler"), checked before anything is read or changed.
"""

from __future__ import annotations

import json
import signal
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
from clusterai_runner.cli.display import LiveView


@click.group("autoscale", epilog=EXIT_CODES)
def autoscale_command() -> None:
    """Start and park workers as the gateway's load asks: run, once, plan, history, wake.

    Pools of workers (the inventory's autoscale_pools, in priority order) grow when the
    gateway's queue wait or requests in flight pass their targets for a while, and shrink
    after a quiet idle time, within each pool's min and max. A parked worker is listed in
    the inventory's parked group, its inference server stopped.
    """


def _render(evaluation_json: dict[str, object]) -> str:
    action = evaluation_json["action"]
    if isinstance(action, dict):
        host = action["host"] or "a new worker"
        return f"{action['kind']} {host} ({action['pool']}): {evaluation_json['reason']}"
    return f"hold: {evaluation_json['reason']}"


@autoscale_command.command("plan", epilog=EXIT_CODES)
@INVENTORY_OPTION
@JSON_OPTION
@vault_options
@click.pass_context
def autoscale_plan(ctx: click.Context, inventory: Path, as_json: bool, vault: Vault) -> None:
    """Say what the autoscaler would do now and why; change nothing."""
    from clusterai_runner.usecases.autoscale import load, plan

    settings = settings_of(ctx)
    evaluation = plan(settings, load(settings, inventory, vault))
    shown = evaluation.to_json()
    if as_json:
        click.echo(json.dumps(shown, indent=2))
        return
    click.echo(_render(shown))
    if evaluation.signals is not None:
        s = evaluation.signals
        click.echo(
            f"gateway: queue wait p95 {s.queue_wait_p95_s:.2f} s, {s.waiting} waiting, "
            f"{s.in_flight} in flight over {s.serving} serving workers, "
            f"{s.requests_per_s:g} requests/s"
        )
        if s.gpu_utilization is not None and s.gpu_memory is not None:
            click.echo(
                f"GPUs: {s.gpu_utilization:.0%} utilised on average, "
                f"{s.gpu_memory:.0%} of the fullest one's memory in use"
            )
    else:
        click.echo(f"no signals: {evaluation.signals_error}")
    for pool in evaluation.pools:
        floor = evaluation.decision.mins.get(pool.name, 0)
        room = ""
        if pool.capped:
            room = f"; no launch now: {pool.capped}"
        elif pool.launchable:
            room = "; may launch one more"
        click.echo(
            f"pool {pool.name}: serving {', '.join(pool.active) or '-'}; "
            f"parked {', '.join(pool.parked) or '-'}; min now {floor}{room}"
        )


@autoscale_command.command("once", epilog=EXIT_CODES)
@INVENTORY_OPTION
@JSON_OPTION
@vault_options
@click.pass_context
def autoscale_once(ctx: click.Context, inventory: Path, as_json: bool, vault: Vault) -> None:
    """Evaluate once and carry out the action, if any (for a timer, or by hand)."""
    from clusterai_runner.usecases.autoscale import load, once

    settings = settings_of(ctx)
    autoscaler = load(settings, inventory, vault)
    with ctrl_c_cancels(signal.SIGTERM) as cancel:
        evaluation, recorded = once(
            autoscaler,
            cancel=cancel,
            progress=progress,
            on_event=None if as_json else LiveView(),
        )
    if as_json:
        shown = (
            recorded.to_json()
            if recorded is not None
            else {**evaluation.to_json(), "recorded": False}
        )
        click.echo(json.dumps(shown, indent=2))
    else:
        click.echo(_render(evaluation.to_json()))
    if recorded is not None and recorded.outcome == "failed":
        ctx.exit(1)


def _listen(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> tuple[str, int] | None:
    if value is None:
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise click.BadParameter(f"{value!r} is not HOST:PORT, e.g. 127.0.0.1:9109")
    return host.strip("[]"), int(port)


@autoscale_command.command("run", epilog=EXIT_CODES)
@INVENTORY_OPTION
@click.option(
    "--metrics-listen",
    "metrics_listen",
    metavar="HOST:PORT",
    callback=_listen,
    help="Serve Prometheus metrics (decisions, pools, signals) at /metrics there.",
)
@click.option(
    "--metrics-web-config",
    "metrics_web_config",
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Serve them over TLS to the logins of this Prometheus-style web configuration "
    "(tls_server_config, basic_auth_users), as the pki role writes it.",
)
@JSON_OPTION
@vault_options
@click.pass_context
def autoscale_run(
    ctx: click.Context,
    inventory: Path,
    metrics_listen: tuple[str, int] | None,
    metrics_web_config: Path | None,
    as_json: bool,
    vault: Vault,
) -> None:
    """Evaluate every autoscale_interval_s until Ctrl-C or SIGTERM (exit 0).

    Each decision recorded (an action, or a hold for a new reason) is one line on stdout
    (with --json, one JSON object: the history's shape). Run it where the state store
    and the inventory are, as a service (README, "The autoscaler").
    """
    from clusterai_runner.adapters.http import serve_metrics
    from clusterai_runner.autoscaler.metrics import AutoscaleMetrics
    from clusterai_runner.errors import UsageError
    from clusterai_runner.store import AutoscaleDecision
    from clusterai_runner.systemd import notify_systemd
    from clusterai_runner.usecases.autoscale import Evaluation, load, run
    from clusterai_runner.web_config import read_web_config

    settings = settings_of(ctx)
    if metrics_web_config is not None and metrics_listen is None:
        raise UsageError(
            "--metrics-web-config", "goes with --metrics-listen", "add --metrics-listen HOST:PORT"
        )
    web_config = read_web_config(metrics_web_config) if metrics_web_config else None
    autoscaler = load(settings, inventory, vault)
    metrics = AutoscaleMetrics()
    server = None
    if metrics_listen is not None:
        try:
            server = serve_metrics(*metrics_listen, metrics.render, web_config)
        except OSError as error:
            raise UsageError(
                f"--metrics-listen {metrics_listen[0]}:{metrics_listen[1]}",
                error.strerror or str(error),
                "pick a free port on an address of this machine",
            ) from error

    def decided(_evaluation: Evaluation, recorded: AutoscaleDecision) -> None:
        if as_json:
            click.echo(json.dumps(recorded.to_json()))
        else:
            what = (
                recorded.action
                if recorded.action == "hold"
                else f"{recorded.action} {recorded.host}"
            )
            click.echo(f"{recorded.at}  {what:<24} {recorded.outcome:<9} {recorded.reason}")

    try:
        with ctrl_c_cancels(signal.SIGTERM) as cancel:
            # Its configuration passed its checks and its metrics listen: a Type=notify
            # unit (roles/autoscaler) counts as started from here.
            notify_systemd("READY=1")
            run(autoscaler, cancel=cancel, progress=progress, on_decision=decided, metrics=metrics)
        notify_systemd("STOPPING=1")
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()


@autoscale_command.command("history", epilog=EXIT_CODES)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--actions", "acted", is_flag=True, help="Only decisions that acted (no holds).")
@JSON_OPTION
@click.pass_context
def autoscale_history(ctx: click.Context, limit: int, acted: bool, as_json: bool) -> None:
    """Past decisions, the newest first, with their reasons and outcomes."""
    from clusterai_runner.usecases.autoscale import history

    found = history(settings_of(ctx), limit=limit, acted=acted)
    if as_json:
        click.echo(json.dumps([d.to_json() for d in found], indent=2))
        return
    if not found:
        click.echo("no decisions yet")
    for d in found:
        what = d.action if d.action == "hold" else f"{d.action} {d.host}"
        took = f" {d.seconds:g} s" if d.seconds is not None else ""
        error = f" ({d.error})" if d.error else ""
        click.echo(f"{d.at}  {what:<24} {d.outcome}{took}  {d.reason}{error}")


@autoscale_command.command("wake", epilog=EXIT_CODES)
@INVENTORY_OPTION
@click.argument("host")
@JSON_OPTION
@vault_options
@click.pass_context
def autoscale_wake(
    ctx: click.Context, inventory: Path, host: str, as_json: bool, vault: Vault
) -> None:
    """Send a desktop's Wake-on-LAN magic packet (its desktop_mac, to its pool's wol
    address and port); the autoscaler does this itself before it starts a sleeping desktop."""
    from clusterai_runner.usecases.autoscale import load, wake

    settings = settings_of(ctx)
    mac, address, port = wake(load(settings, inventory, vault), host)
    if as_json:
        click.echo(json.dumps({"host": host, "mac": mac, "address": address, "port": port}))
    else:
        click.echo(f"magic packet for {host} ({mac}) sent to {address}:{port}")
