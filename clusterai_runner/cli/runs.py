"""``clusterai runs``: past playbook runs, from the state store."""

from __future__ import annotations

import json

import click

from clusterai_runner.cli.common import EXIT_CODES, JSON_OPTION, settings_of
from clusterai_runner.cli.display import recap_lines
from clusterai_runner.usecases.runs import list_runs, show_run


@click.group(epilog=EXIT_CODES)
def runs() -> None:
    """Past playbook runs, from the state store."""


@runs.command("list", epilog=EXIT_CODES)
@click.option("--last", type=click.IntRange(1), default=20, show_default=True)
@JSON_OPTION
@click.pass_context
def runs_list(ctx: click.Context, last: int, as_json: bool) -> None:
    """The most recent runs, newest first."""
    found = list_runs(settings_of(ctx), last)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in found], indent=2))
        return
    if not found:
        click.echo("no runs yet; converge with `clusterai up -i INVENTORY`")
    for r in found:
        hosts = len(r.recap)
        click.echo(f"{r.id:>5}  {r.started_at}  {r.status:<10}  {r.playbook:<14} {hosts} hosts")


@runs.command("show", epilog=EXIT_CODES)
@click.argument("run_id", type=int)
@click.option("--host", help="Only this host's task results.")
@click.option("--failed", "only_failed", is_flag=True, help="Only failed or unreachable tasks.")
@JSON_OPTION
@click.pass_context
def runs_show(
    ctx: click.Context, run_id: int, host: str | None, only_failed: bool, as_json: bool
) -> None:
    """One run: its per-host task log and recap."""
    run, events = show_run(settings_of(ctx), run_id, host, only_failed)
    if as_json:
        payload = run.to_json()
        payload["events"] = [e.__dict__ for e in events]
        click.echo(json.dumps(payload, indent=2))
        return
    click.echo(f"run {run.id}: {run.playbook} on {run.inventory} ({run.status}, rc {run.rc})")
    click.echo(f"started {run.started_at}, finished {run.finished_at or '-'}")
    for e in events:
        reason = f": {e.message}" if e.message and e.status in ("failed", "unreachable") else ""
        click.echo(f"  {e.host:<16} {e.status:<11} {e.task}{reason}")
    click.echo("PLAY RECAP")
    for line in recap_lines(run.recap):
        click.echo(line)
