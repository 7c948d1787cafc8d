"""Converging a cluster with playbooks, and recording each run in the state store.

``run_and_record`` is the one way a use case runs a playbook: the run, every task result
per host as it happens, and the final recap go to the store. ``check_inventory_rules``
runs the inventory checks every playbook starts with, before anything is touched.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from clusterai_runner.adapters.ansible import CancelToken, RunOutcome, TaskEvent, run_playbook
from clusterai_runner.adapters.inventory import check_inventory
from clusterai_runner.adapters.inventory import load as load_inventory
from clusterai_runner.adapters.vault import NO_VAULT, Vault
from clusterai_runner.config import Settings, using_store
from clusterai_runner.errors import Interrupted, UsageError

if TYPE_CHECKING:  # SQLAlchemy loads only when a command opens the store
    from clusterai_runner.store import Store

__all__ = [
    "CancelToken",
    "RunRecord",
    "TaskEvent",
    "Vault",
    "check_inventory_rules",
    "run_and_record",
    "up",
]


@dataclass(frozen=True)
class RunRecord:
    id: int
    outcome: RunOutcome


def _stop_if_canceled(cancel: CancelToken | None, what: str) -> None:
    if cancel is not None and cancel.canceled:
        raise Interrupted(what, "canceled", "nothing was changed")


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
    cancel: CancelToken | None = None,
    vault: Vault = NO_VAULT,
) -> RunRecord:
    """Run a playbook, storing the run, every task result per host and the recap.
    ``on_event`` is called from the runner's thread."""
    inventory = check_inventory(inventory)
    _stop_if_canceled(cancel, playbook)
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
            settings.private_state_dir() / "runs" / str(run_id),
            limit=limit,
            tags=tags,
            check=check,
            extravars=dict(extravars or {}),
            on_event=record,
            cancel=cancel,
            vault=vault,
        )
    except BaseException:
        store.finish_run(run_id, "failed", None, {})
        raise
    store.finish_run(run_id, outcome.status, outcome.rc, outcome.recap)
    return RunRecord(run_id, outcome)


def check_inventory_rules(
    inventory: Path,
    targets: list[str] | None = None,
    cancel: CancelToken | None = None,
    vault: Vault = NO_VAULT,
) -> None:
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
            cancel=cancel,
            vault=vault,
        )
    if outcome.status == "canceled":
        raise Interrupted("inventory check", "canceled", "nothing was changed")
    if outcome.status == "successful":
        return
    message = failures[0] if failures else outcome.detail or "Ansible could not read it"
    if message.startswith("inventory: "):
        message = message[len("inventory: ") :]
    raise UsageError(f"inventory {inventory}", message)


def run_on_targets(
    settings: Settings,
    inventory: Path,
    playbook: str,
    hosts: list[str],
    extravars: dict[str, object],
    *,
    store: Store | None = None,
    on_event: Callable[[TaskEvent], None] | None = None,
    cancel: CancelToken | None = None,
    vault: Vault = NO_VAULT,
) -> RunRecord:
    """``playbook`` on ``hosts`` (its ``clusterai_targets``), checked against the
    inventory's rules before the store is opened, stored as a run."""
    check_inventory_rules(inventory, hosts, cancel, vault)
    with using_store(settings, store) as opened:
        return run_and_record(settings, opened, playbook, inventory,
                              extravars={"clusterai_targets": ",".join(hosts), **extravars},
                              on_event=on_event, cancel=cancel, vault=vault)  # fmt: skip


def up(
    settings: Settings,
    inventory: Path,
    *,
    limit: str | None = None,
    tags: str | None = None,
    check: bool = False,
    store: Store | None = None,
    on_event: Callable[[TaskEvent], None] | None = None,
    cancel: CancelToken | None = None,
    vault: Vault = NO_VAULT,
) -> RunRecord:
    """Converge the cluster with site.yml. Every check (the inventory, ``limit``, the
    rules of validate_inventory) runs before the store is opened or created."""
    targets = [h.name for h in load_inventory(inventory, limit, vault)]
    check_inventory_rules(inventory, targets if limit else None, cancel, vault)
    with using_store(settings, store) as opened:
        return run_and_record(
            settings,
            opened,
            "site.yml",
            inventory,
            limit=limit,
            tags=tags,
            check=check,
            on_event=on_event,
            cancel=cancel,
            vault=vault,
        )
