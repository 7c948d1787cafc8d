"""Use cases that act on a cluster through playbooks, apart from any I/O of the CLI.

Each records what it does in the state store: a run, its per-host task events as they
happen, and the final recap.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from clusterai_runner.config import Settings
from clusterai_runner.errors import Interrupted, UsageError
from clusterai_runner.inventory import check_inventory
from clusterai_runner.runner import RunOutcome, TaskEvent, run_playbook

if TYPE_CHECKING:
    from clusterai_runner.store import Store


@dataclass(frozen=True)
class RunRecord:
    id: int
    outcome: RunOutcome


def run_and_record(
    settings: Settings,
    store: Store,
    playbook: str,
    inventory: Path,
    *,
    limit: str | None = None,
    tags: str | None = None,
    check: bool = False,
    extravars: dict[str, object] | None = None,
    on_event: Callable[[TaskEvent], None] | None = None,
) -> RunRecord:
    """Run a playbook, storing the run, every task result per host and the recap."""
    inventory = check_inventory(inventory)
    run_id = store.start_run(playbook, str(inventory), limit or "")

    def record(event: TaskEvent) -> None:
        if event.status != "started":
            store.add_event(run_id, event.host, event.task, event.status, event.message)
        if on_event is not None:
            on_event(event)

    try:
        outcome = run_playbook(
            playbook,
            inventory,
            settings.state_dir / "runs" / str(run_id),
            limit=limit,
            tags=tags,
            check=check,
            extravars=dict(extravars or {}),
            on_event=record,
        )
    except BaseException:
        store.finish_run(run_id, "failed", None, {})
        raise
    store.finish_run(run_id, outcome.status, outcome.rc, outcome.recap)
    return RunRecord(run_id, outcome)


def check_inventory_rules(inventory: Path, targets: list[str] | None = None) -> None:
    """Run the inventory checks every playbook starts with (playbooks/boilerplate.yml: the
    validate_inventory role), without contacting a host or recording a run; their first
    failure becomes a usage error. ``targets`` limits the host checks to those hosts."""
    inventory = check_inventory(inventory)
    failures: list[str] = []

    def collect(event: TaskEvent) -> None:
        if event.status == "failed" and not event.ignored and event.message:
            failures.append(event.message)

    extravars: dict[str, object] = {"clusterai_targets": ",".join(targets)} if targets else {}
    with tempfile.TemporaryDirectory(prefix="clusterai-check-") as data_dir:
        outcome = run_playbook(
            "boilerplate.yml",
            inventory,
            Path(data_dir) / "run",
            extravars=extravars,
            on_event=collect,
        )
    if outcome.status == "canceled":
        raise Interrupted("inventory check", "canceled by Ctrl-C", "nothing was changed")
    if outcome.status == "successful":
        return
    message = failures[0] if failures else outcome.detail or "Ansible could not read it"
    if message.startswith("inventory: "):
        message = message[len("inventory: ") :]
    raise UsageError(f"inventory {inventory}", message)
