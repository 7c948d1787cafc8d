"""The ``clusterai`` command line.

Exit codes: 0 ok, 1 a run failed, 2 usage or configuration error, 3 preflight failed,
130 interrupted. Errors are one line on stderr, ``error: <what>: <why> (<how to fix>)``;
``--debug`` (or ``CLUSTERAI_DEBUG=1``) adds the traceback.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import click

from clusterai_runner import __version__
from clusterai_runner.cluster import RunRecord, check_inventory_rules, run_and_record
from clusterai_runner.config import Settings, open_store
from clusterai_runner.display import LiveView, recap_lines
from clusterai_runner.errors import (
    ClusterAIError,
    Interrupted,
    PreflightError,
    RunFailed,
    UsageError,
)
from clusterai_runner.inventory import check_inventory
from clusterai_runner.inventory import load as load_inventory
from clusterai_runner.sandbox import DEFAULT_NAME, Sandboxes, SandboxStatus
from clusterai_runner.status import HostStatus, cluster_status
from clusterai_runner.validate import CHECKS, HostReport, validate

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


INVENTORY_OPTION = click.option(
    "-i",
    "--inventory",
    type=click.Path(path_type=Path),
    required=True,
    help="The inventory file or directory, as for ansible-playbook.",
)

LIMIT_OPTION = click.option("--limit", help="Only these hosts or groups (an Ansible pattern).")


@cli.command("up", epilog=EXIT_CODES)
@INVENTORY_OPTION
@LIMIT_OPTION
@click.option("--tags", help="Only tasks with these tags (comma-separated).")
@click.option("--check", is_flag=True, help="Show what would change; change nothing.")
@click.pass_context
def up(
    ctx: click.Context, inventory: Path, limit: str | None, tags: str | None, check: bool
) -> None:
    """Converge the cluster: run playbooks/site.yml with a live view.

    Failures are printed as they happen, with the task's message; the run ends with the
    per-host recap. The run and every task result are stored: see `clusterai runs`.
    """
    settings = _settings(ctx)
    # Every check runs before the store is opened or created.
    targets = [h.name for h in load_inventory(inventory, limit)]
    check_inventory_rules(inventory, targets if limit else None)
    store = open_store(settings)
    view = LiveView()
    try:
        record = run_and_record(
            settings,
            store,
            "site.yml",
            inventory,
            limit=limit,
            tags=tags,
            check=check,
            on_event=view,
        )
    finally:
        view.finish()
    _end_run(record, "clusterai up")


def _end_run(record: RunRecord, again: str) -> None:
    """Print a run's recap and turn a failed or canceled run into its exit code."""
    outcome = record.outcome
    for line in recap_lines(outcome.recap):
        click.echo(line)
    click.echo(f"run {record.id}: {outcome.status} (details: clusterai runs show {record.id})")
    if outcome.status == "canceled":
        raise Interrupted(f"run {record.id}", "canceled by Ctrl-C", f"run `{again}` again")
    if outcome.status != "successful":
        failed = sorted(h for h, c in outcome.recap.items() if c["failed"] or c["unreachable"])
        where = ", ".join(failed) or f"the controller: {outcome.detail or 'see its log'}"
        raise RunFailed(
            f"run {record.id}", f"failed on {where}", f"see `clusterai runs show {record.id}`"
        )


@cli.command("scale-out", epilog=EXIT_CODES)
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
    from clusterai_runner.scale import new_hosts, scale_out

    settings = _settings(ctx)
    new = new_hosts(list(hosts), list(addresses), user, port)
    inventory = check_inventory(inventory)
    store = open_store(settings)
    view = LiveView()

    def show_validation(reports: list[HostReport]) -> None:
        _print_validation(reports)

    try:
        result = scale_out(
            settings,
            store,
            inventory,
            group,
            new,
            accept_new_host_keys=accept_new_host_keys,
            on_validated=show_validation,
            on_event=view,
        )
    finally:
        view.finish()
    assert result.record is not None
    _end_run(result.record, "clusterai scale-out " + " ".join(hosts))


@cli.command("scale-in", epilog=EXIT_CODES)
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
@click.pass_context
def scale_in_command(
    ctx: click.Context,
    inventory: Path,
    hosts: tuple[str, ...],
    yes: bool,
    drain_timeout: int,
    wipe: bool,
) -> None:
    """Remove worker HOSTS from the cluster.

    Takes them out of monitoring, waits up to --drain-timeout seconds for their open
    requests, stops their services (playbooks/scale_in.yml), then deletes them from the
    inventory file or the state store. A failed run leaves the inventory as it was.
    """
    from clusterai_runner.scale import scale_in, scale_in_targets

    settings = _settings(ctx)
    names = list(hosts)
    inventory = check_inventory(inventory)
    store = open_store(settings)
    scale_in_targets(inventory, store, names)
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(
                "scale-in", "no terminal to ask for confirmation", "add --yes to go ahead"
            )
        click.confirm(
            f"Stop {', '.join(names)} and remove them from {inventory}?", abort=True, err=True
        )
    view = LiveView()
    try:
        result = scale_in(
            settings, store, inventory, names, drain_timeout=drain_timeout, wipe=wipe, on_event=view
        )
    finally:
        view.finish()
    assert result.record is not None
    _end_run(result.record, "clusterai scale-in " + " ".join(hosts))
    where = ", ".join(str(p) for p in result.edited) or "the state store"
    click.echo(f"removed {', '.join(names)} from {where}")


SYMBOL = {"pass": "ok", "warn": "WARN", "fail": "FAIL", "skip": "-"}


@cli.command("validate", epilog=EXIT_CODES)
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
@click.pass_context
def validate_command(
    ctx: click.Context,
    inventory: Path,
    limit: str | None,
    parallel: int,
    timeout: float,
    accept_new_host_keys: bool,
    as_json: bool,
) -> None:
    """Check every host over SSH at once, before anything changes.

    \b
    Checks: reach (TCP), host_key (against known_hosts), auth (key), sudo (non-root
    users), python, os, memory, disk (where models go), gpu, ports (free or already
    held by Cluster AI's unit), clock (skew against this machine). Thresholds are the
    preflight role's variables, overridable per host in the inventory.
    Exit 3 when any host fails a check.
    """
    hosts = load_inventory(inventory, limit)
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
            f"{len(failed)} of {len(reports)} hosts failed: {_names(r.name for r in failed)}",
            "fix what is listed above and run it again",
        )


def _names(names: Iterable[str], shown: int = 10) -> str:
    listed = list(names)
    more = f" and {len(listed) - shown} more" if len(listed) > shown else ""
    return ", ".join(listed[:shown]) + more


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


@cli.command("status", epilog=EXIT_CODES)
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
@click.pass_context
def status_command(
    ctx: click.Context, inventory: Path, limit: str | None, timeout: float, as_json: bool
) -> None:
    """Each host now: SSH reachable, inference server health and loaded models, node
    exporter, GPUs (from the GPU exporter) and the result of the last stored run.

    \b
    Asks every host at once over HTTP and TCP; no SSH session, nothing changes.
    Exit 1 when any host is unhealthy.
    --json prints {"hosts": [{"name", "kind", "address", "reachable", "inference":
    "up"|"down"|"n/a", "backend", "models", "exporter": "up"|"down", "gpus": [{"name",
    "utilization", "memory_used_bytes", "memory_total_bytes"}], "last_run": {"id",
    "playbook", "result": "ok"|"failed", "changed"} or null, "problems", "healthy"}],
    "summary": {"healthy", "unhealthy"}}
    """
    hosts = load_inventory(inventory, limit)
    settings = _settings(ctx)
    last_runs = open_store(settings).last_results() if _store_exists(settings) else {}
    found = cluster_status(hosts, last_runs, timeout)
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
            + _names(s.name for s in unhealthy),
            "see the problems listed; `clusterai up` converges them again",
        )


def _store_exists(settings: Settings) -> bool:
    """Whether there is a store to read; `status` never creates one."""
    return bool(settings.state_url) or (settings.state_dir / "state.db").exists()


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


@cli.group("gateway", epilog=EXIT_CODES, invoke_without_command=True)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The gateway's YAML configuration (backends, aliases, queue, health, cache, auth).",
)
@click.option("--listen", help="HOST:PORT to listen on [127.0.0.1:8000].")
@click.option(
    "--backend",
    "backends",
    multiple=True,
    help="A backend URL, e.g. http://192.0.2.21:8080 or ollama=http://192.0.2.22:11434.",
)
@click.option(
    "-i",
    "--inventory",
    type=click.Path(path_type=Path),
    help="Also serve through every worker of this inventory (its inference server).",
)
@click.pass_context
def gateway_command(
    ctx: click.Context,
    config_path: Path | None,
    listen: str | None,
    backends: tuple[str, ...],
    inventory: Path | None,
) -> None:
    """One OpenAI- and Ollama-compatible endpoint over every backend.

    \b
    OpenAI API: POST /v1/chat/completions, /v1/completions, /v1/embeddings; GET /v1/models.
    Ollama API: POST /api/chat, /api/generate, /api/embed; GET /api/tags, /api/ps,
    /api/version. Backends: the config file's, --backend URLs, and with -i every worker
    of the inventory (llama.cpp or Ollama, by clusterai_inference_backend).
    Every API route needs an API key (Authorization: Bearer KEY; see
    `clusterai gateway keys`) unless the config says auth: {enabled: false}, which is
    allowed on loopback addresses only. GET /healthz, /metrics; admin routes (an --admin
    key, or CLUSTERAI_GATEWAY_ADMIN_KEY): GET /admin/backends, POST
    /admin/backends/NAME/drain and /undrain. Usage records go to the state store.
    Runs until Ctrl-C or SIGTERM.
    """
    if ctx.invoked_subcommand is not None:
        return
    from clusterai_runner.gateway.config import GatewayConfig, load
    from clusterai_runner.gateway.service import run_gateway
    from clusterai_runner.gateway.workers import worker_backends

    def read() -> GatewayConfig:
        workers = worker_backends(load_inventory(inventory)) if inventory is not None else []
        return load(config_path, backends, listen, workers=workers)

    run_gateway(read, _settings(ctx), lambda line: click.echo(line, err=True))


@gateway_command.group("keys", epilog=EXIT_CODES)
def gateway_keys() -> None:
    """The gateway's API keys, kept hashed in the state store."""


@gateway_keys.command("create", epilog=EXIT_CODES)
@click.argument("name")
@click.option("--rpm", type=click.IntRange(1), help="Requests per minute allowed.")
@click.option("--tpm", type=click.IntRange(1), help="Tokens per minute allowed.")
@click.option("--admin", is_flag=True, help="Also allowed on the admin routes.")
@click.pass_context
def gateway_keys_create(
    ctx: click.Context, name: str, rpm: int | None, tpm: int | None, admin: bool
) -> None:
    """Create a key and print it, once: only its hash is kept."""
    from clusterai_runner.gateway.keys import NAME_FORMAT, create_key
    from clusterai_runner.store import StoreError

    if not NAME_FORMAT.fullmatch(name):
        raise UsageError(f"key name {name!r}", "is not valid", "use letters, digits, . _ -")
    try:
        key = create_key(open_store(_settings(ctx)), name, admin, rpm, tpm)
    except StoreError as exc:
        raise UsageError(exc.what, exc.why, exc.fix) from exc
    click.echo(key)
    click.echo(f"key {name} created; it is shown only now", err=True)


@gateway_keys.command("generate", epilog=EXIT_CODES)
def gateway_keys_generate() -> None:
    """Print a fresh key without storing it: for a vault file that the gateway role
    gives to the gateway (gateway_api_keys)."""
    from clusterai_runner.gateway.keys import new_key

    click.echo(new_key()[0])


@gateway_keys.command("list", epilog=EXIT_CODES)
@JSON_OPTION
@click.pass_context
def gateway_keys_list(ctx: click.Context, as_json: bool) -> None:
    """Every key: name, prefix, limits, created and revoked times (never the key)."""
    keys = open_store(_settings(ctx)).list_keys()
    if as_json:
        click.echo(json.dumps([k.to_json() for k in keys], indent=2))
        return
    if not keys:
        click.echo("no keys; create one with `clusterai gateway keys create NAME`")
    for k in keys:
        state = f"revoked {k.revoked_at}" if k.revoked_at else "active"
        limits = f"rpm={k.rpm or '-'} tpm={k.tpm or '-'}"
        click.echo(
            f"{k.name:<20} cai_{k.prefix}_…  {limits:<22} {'admin ' if k.admin else ''}{state}"
        )


@gateway_keys.command("revoke", epilog=EXIT_CODES)
@click.argument("name")
@click.pass_context
def gateway_keys_revoke(ctx: click.Context, name: str) -> None:
    """Revoke a key; running gateways refuse it within their auth.refresh_s."""
    if not open_store(_settings(ctx)).revoke_key(name):
        raise UsageError(
            f"key {name}", "no active key of that name", "see `clusterai gateway keys list`"
        )
    click.echo(f"key {name} revoked")


@cli.group(epilog=EXIT_CODES)
def runs() -> None:
    """Past playbook runs, from the state store."""


@runs.command("list", epilog=EXIT_CODES)
@click.option("--last", type=click.IntRange(1), default=20, show_default=True)
@JSON_OPTION
@click.pass_context
def runs_list(ctx: click.Context, last: int, as_json: bool) -> None:
    """The most recent runs, newest first."""
    found = open_store(_settings(ctx)).runs(last)
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
    store = open_store(_settings(ctx))
    run = store.run(run_id)
    if run is None:
        raise UsageError(f"run {run_id}", "no such run", "see `clusterai runs list`")
    if host and host not in run.recap and not store.events(run_id, host):
        raise UsageError(f"--host {host}", f"not in run {run_id}", "see its recap")
    events = [
        e
        for e in store.events(run_id, host)
        if not only_failed or e.status in ("failed", "unreachable")
    ]
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
