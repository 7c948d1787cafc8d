"""``clusterai models``: what each worker should serve against what it holds (``status``),
syncing the workers that drifted, and pulling a model onto the workers that should hold it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from clusterai_runner.cli.common import (
    EXIT_CODES,
    INVENTORY_OPTION,
    JSON_OPTION,
    ctrl_c_cancels,
    end_run,
    settings_of,
    vault_options,
    warn,
)
from clusterai_runner.cli.display import LiveView
from clusterai_runner.errors import RunFailed
from clusterai_runner.store import Rollout, RolloutStep
from clusterai_runner.usecases import models as models_usecase
from clusterai_runner.usecases.converge import Vault


@click.group("models", epilog=EXIT_CODES)
def models_command() -> None:
    """The models each worker should serve (the inventory) and serves (its server)."""


def _size(size: int | None) -> str:
    if size is None:
        return "size unknown"
    if size < 1000:
        return f"{size} B"
    scaled, units = size / 1000, ["KB", "MB", "GB", "TB"]
    while scaled >= 1000 and len(units) > 1:
        scaled, units = scaled / 1000, units[1:]
    return f"{scaled:.1f} {units[0]}"


def _show(hosts: list[models_usecase.HostModels], as_json: bool) -> None:
    if as_json:
        payload = [{**h.__dict__, "drift": h.drifted} for h in hosts]
        click.echo(json.dumps({"hosts": payload, "drift": any(h.drifted for h in hosts)},
                              indent=2))  # fmt: skip
        return
    for h in hosts:
        click.echo(f"{h.name} ({h.backend}, {', '.join(h.groups)})")
        click.echo(f"  should serve: {', '.join(h.desired) or 'nothing'}")
        if h.actual is None:
            click.echo("  serves:       not answering")
        elif not h.models:
            click.echo(f"  serves:       {', '.join(h.actual) or 'nothing'}")
        for m in h.models:
            digest = (m["digest"] or "digest unknown")[:19]
            state = "loaded" if m["loaded"] else "on disk"
            extra = "" if m["desired"] else "  (not in its inventory)"
            click.echo(f"  - {m['name']}  {digest}  {_size(m['size'])}  {state}{extra}")
        if h.missing:
            click.echo(f"  missing:      {', '.join(h.missing)}")
        if h.extra:
            click.echo(f"  extra:        {', '.join(h.extra)}")


@models_command.command("status", epilog=EXIT_CODES)
@INVENTORY_OPTION
@JSON_OPTION
@vault_options
@click.pass_context
def models_status(ctx: click.Context, inventory: Path, as_json: bool, vault: Vault) -> None:
    """Each worker's models: desired by the inventory, held now, and the drift.

    \b
    Each held model with its content digest and size (where the server says: Ollama's
    /api/tags; llama.cpp's server says neither) and whether it is loaded in memory.
    Exit 1 when a worker misses a model it should serve, or its server does not answer.
    --json prints {"hosts": [{"name", "groups", "backend", "desired", "actual" (null: the
    server did not answer), "missing", "extra", "models": [{"name", "digest", "size",
    "loaded", "desired"}], "drift"}], "drift"}
    """
    hosts = models_usecase.status(settings_of(ctx), inventory, vault, warn)
    _show(hosts, as_json)
    behind = [h.name for h in hosts if h.actual is None or h.missing]
    if behind:
        raise RunFailed("models", f"not as the inventory says on {', '.join(behind)}",
                        "`clusterai models sync` converges them")  # fmt: skip


# The command's first name, kept for scripts.
models_command.add_command(click.Command("list", callback=models_status.callback,
                                         params=models_status.params, hidden=True,
                                         help="Same as `models status`."))  # fmt: skip


@models_command.command("sync", epilog=EXIT_CODES)
@INVENTORY_OPTION
@click.option(
    "--host",
    "hosts",
    multiple=True,
    help="Only this worker (repeat for more). Default: every worker that drifted.",
)
@click.option(
    "--prune",
    is_flag=True,
    help="Also remove the models a worker holds that its inventory does not list (Ollama).",
)
@vault_options
@click.pass_context
def models_sync(
    ctx: click.Context, inventory: Path, hosts: tuple[str, ...], prune: bool, vault: Vault
) -> None:
    """Converge the workers whose models drifted from their inventory (playbooks/models.yml).

    A worker that misses a model, or whose server does not answer, is converged: Ollama
    workers pull what they miss, llama.cpp workers get their server's model. With
    --prune, models a worker's inventory does not list are removed too. Nothing drifted:
    nothing runs (exit 0).
    """
    settings = settings_of(ctx)
    found = models_usecase.status(settings, inventory, vault, warn)
    targets = models_usecase.sync_targets(found, list(hosts) or None, prune)
    if not targets:
        click.echo("every worker holds the models its inventory lists: nothing to sync")
        return
    click.echo(f"syncing {', '.join(h.name for h in targets)}")
    view = LiveView()
    try:
        with ctrl_c_cancels() as cancel:
            record = models_usecase.sync(settings, inventory, targets, prune, on_event=view,
                                         cancel=cancel, vault=vault)  # fmt: skip
    finally:
        view.finish()
    end_run(record, "clusterai models sync")


@models_command.command("pull", epilog=EXIT_CODES)
@INVENTORY_OPTION
@click.argument("model")
@click.option(
    "--host",
    "hosts",
    multiple=True,
    help="Only this worker (repeat for more). Default: every worker that should hold MODEL.",
)
@vault_options
@click.pass_context
def models_pull(
    ctx: click.Context, inventory: Path, model: str, hosts: tuple[str, ...], vault: Vault
) -> None:
    """Put MODEL on the workers whose inventory asks for it (playbooks/models.yml).

    An Ollama worker pulls it and removes nothing; a llama.cpp worker gets its server's
    model file. A model that no chosen worker's inventory lists is refused: add it to the
    group's ollama_models first, so that the inventory stays what each worker holds.
    """
    view = LiveView()
    try:
        with ctrl_c_cancels() as cancel:
            record = models_usecase.pull(settings_of(ctx), inventory, model, list(hosts) or None,
                                         on_event=view, cancel=cancel, vault=vault)  # fmt: skip
    finally:
        view.finish()
    end_run(record, f"clusterai models pull {model}")


@models_command.command("import", epilog=EXIT_CODES)
@INVENTORY_OPTION
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", help="The model's name for a GGUF file (default: the file's name).")
@vault_options
@click.pass_context
def models_import(
    ctx: click.Context, inventory: Path, path: Path, name: str | None, vault: Vault
) -> None:
    """Seed the cluster's model store from PATH on this machine (playbooks/models_import.yml).

    \b
    PATH is an Ollama models directory (manifests/ and blobs/: ~/.ollama/models copied
    from a machine that ran `ollama pull`, or a USB disk) or a GGUF file. The control
    host hashes every blob before it writes; one that does not match its name stops the
    import with nothing written. The workers then get the models from the store, not
    the registry (air-gapped sites set model_store_upstream to "").
    """
    view = LiveView()
    try:
        with ctrl_c_cancels() as cancel:
            record = models_usecase.import_into_store(settings_of(ctx), inventory, path, name,
                                                      on_event=view, cancel=cancel,
                                                      vault=vault)  # fmt: skip
    finally:
        view.finish()
    end_run(record, f"clusterai models import {path}")


def _rollout_json(stored: Rollout, steps: list[RolloutStep]) -> dict[str, Any]:
    return {**stored.to_json(), "steps": [s.to_json() for s in steps]}


@models_command.command("rollout", epilog=EXIT_CODES)
@INVENTORY_OPTION
@click.argument("alias")
@click.option("--to", "to", required=True, metavar="MODEL",
              help="The new model: a name (smollm2:360m), a tag of the old one's (360m), or"
                   " the sha256 digest of a model the cluster's model store holds.")  # fmt: skip
@click.option("--canary", type=click.IntRange(min=1), default=1, show_default=True,
              help="Workers that get it first and face the evaluation gate.")  # fmt: skip
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Workers moved at once after the canaries, each drained first.")  # fmt: skip
@click.option("--eval", "eval_file", type=click.Path(path_type=Path),
              help="The evaluation's prompts and rules (default: evals/smoke.yml).")  # fmt: skip
@JSON_OPTION
@vault_options
@click.pass_context
def models_rollout(
    ctx: click.Context,
    inventory: Path,
    alias: str,
    to: str,
    canary: int,
    batch: int,
    eval_file: Path | None,
    as_json: bool,
    vault: Vault,
) -> None:
    """Move the workers that serve gateway alias ALIAS to another model, without a failed
    request; a failure leaves every worker on the model it had.

    \b
    ALIAS is one of the control host's gateway_aliases naming one model; its workers are
    the Ollama workers whose ollama_models list that model. The canaries are drained at
    the gateway, get the new model, and face the evaluation gate (each prompt to the new
    and the old model on the canary's server: the new one must pass every case the old
    one passes); then the rest follow in batches, each drained first. At the end the
    inventory's gateway_aliases and ollama_models name the new model and the gateway's
    aliases move (a reload). On a failure the new model is deleted where it went and the
    drained workers are put back (exit 1, with the reason). Every step is in the store:
    `clusterai models rollouts`, the web app's models page.
    """
    from clusterai_runner.usecases import rollout as rollout_usecase

    settings = settings_of(ctx)
    chosen = rollout_usecase.plan(inventory, alias, to, canary, batch, eval_file, vault)

    def say(line: str) -> None:
        if not as_json:
            click.echo(line, err=True)

    say(f"rolling {alias} out: {chosen.old} -> {chosen.new} on {', '.join(chosen.hosts)}"
        f" (canaries {', '.join(t.name for t in chosen.canaries)})")  # fmt: skip
    view = LiveView()
    try:
        with ctrl_c_cancels() as cancel:
            done = rollout_usecase.run(settings, inventory, chosen, on_event=view, cancel=cancel,
                                       vault=vault, progress=say)  # fmt: skip
    finally:
        view.finish()
    stored, steps = next((r, s) for r, s in rollout_usecase.history(settings, 5)
                         if r.id == done.id)  # fmt: skip
    if as_json:
        click.echo(json.dumps(_rollout_json(stored, steps), indent=2))
    else:
        click.echo(f"rollout {done.id}: {done.status}: {done.reason}")
    if done.status != "succeeded":
        raise RunFailed(f"rollout {done.id}", done.reason,
                        f"every worker is on {chosen.old} still; the steps: clusterai models"
                        " rollouts")  # fmt: skip


@models_command.command("rollouts", epilog=EXIT_CODES)
@click.option("--limit", type=click.IntRange(min=1), default=10, show_default=True)
@JSON_OPTION
@click.pass_context
def models_rollouts(ctx: click.Context, limit: int, as_json: bool) -> None:
    """The last model rollouts, newest first, each with every step it took."""
    from clusterai_runner.usecases import rollout as rollout_usecase

    found = rollout_usecase.history(settings_of(ctx), limit)
    if as_json:
        click.echo(json.dumps({"rollouts": [_rollout_json(r, s) for r, s in found]},
                              indent=2))  # fmt: skip
        return
    if not found:
        click.echo("no rollout yet")
    for stored, steps in found:
        click.echo(f"rollout {stored.id}: {stored.alias} {stored.from_model} -> {stored.to_model}"
                   f" {stored.status} ({stored.started_at}) {stored.reason}")  # fmt: skip
        for s in steps:
            run = f" run {s.run_id}" if s.run_id else ""
            click.echo(f"  {s.at}  {s.step:<10} {s.outcome:<9} {', '.join(s.hosts) or '-'}"
                       f"{run}  {s.detail}")  # fmt: skip
