"""``clusterai models``: what each worker should serve against what it serves, and pulling
a model onto the workers that should hold it."""

from __future__ import annotations

import json
from pathlib import Path

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
from clusterai_runner.usecases import models as models_usecase
from clusterai_runner.usecases.converge import Vault
from clusterai_runner.usecases.status import status as cluster_status


@click.group("models", epilog=EXIT_CODES)
def models_command() -> None:
    """The models each worker should serve (the inventory) and serves (its server)."""


@models_command.command("list", epilog=EXIT_CODES)
@INVENTORY_OPTION
@JSON_OPTION
@vault_options
@click.pass_context
def models_list(ctx: click.Context, inventory: Path, as_json: bool, vault: Vault) -> None:
    """Each worker's models: desired by the inventory, served now, and the drift.

    \b
    Exit 1 when a worker misses a model it should serve, or its server does not answer.
    --json prints {"hosts": [{"name", "groups", "backend", "desired", "actual" (null: the
    server did not answer), "missing", "extra"}]}
    """
    wanted = models_usecase.desired(inventory, vault)
    found = cluster_status(settings_of(ctx), inventory, None, 3.0, warn, vault)
    serving = {s.name: s.held for s in found}
    hosts = models_usecase.compare(wanted, serving)
    if as_json:
        click.echo(json.dumps({"hosts": [h.__dict__ for h in hosts]}, indent=2))
    else:
        for h in hosts:
            served = "not answering" if h.actual is None else ", ".join(h.actual) or "nothing"
            click.echo(f"{h.name} ({h.backend}, {', '.join(h.groups)})")
            click.echo(f"  should serve: {', '.join(h.desired) or 'nothing'}")
            click.echo(f"  serves:       {served}")
            if h.missing:
                click.echo(f"  missing:      {', '.join(h.missing)}")
            if h.extra:
                click.echo(f"  extra:        {', '.join(h.extra)}")
    behind = [h.name for h in hosts if h.actual is None or h.missing]
    if behind:
        raise RunFailed("models", f"not as the inventory says on {', '.join(behind)}",
                        "`clusterai models pull MODEL` puts a missing model on them")  # fmt: skip


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
