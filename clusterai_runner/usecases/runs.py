"""Past playbook runs, read from the state store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clusterai_runner.config import Settings, using_store
from clusterai_runner.errors import UsageError

if TYPE_CHECKING:
    from clusterai_runner.store import Event, Run


def list_runs(settings: Settings, last: int = 20) -> list[Run]:
    """The ``last`` runs, newest first."""
    with using_store(settings) as store:
        return store.runs(last)


def show_run(
    settings: Settings, run_id: int, host: str | None = None, only_failed: bool = False
) -> tuple[Run, list[Event]]:
    """One run and its task results: only ``host``'s, only failed or unreachable ones."""
    with using_store(settings) as store:
        run = store.run(run_id)
        if run is None:
            raise UsageError(f"run {run_id}", "no such run", "see `clusterai runs list`")
        events = store.events(run_id, host)
    if host and host not in run.recap and not events:
        raise UsageError(f"--host {host}", f"not in run {run_id}", "see its recap")
    if only_failed:
        events = [e for e in events if e.status in ("failed", "unreachable")]
    return run, events
