"""Past playbook runs, read from the state store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clusterai_runner.config import Settings, using_store
from clusterai_runner.errors import UsageError

if TYPE_CHECKING:
    from clusterai_runner.store import Event, Run, Store


def list_runs(
    settings: Settings,
    last: int = 20,
    store: Store | None = None,
    playbook: str | None = None,
    status: str | None = None,
    host: str | None = None,
    before: int | None = None,
) -> list[Run]:
    """The ``last`` runs, newest first; only those of ``playbook``, in ``status``, with
    ``host`` in their recap, older than run ``before``."""
    with using_store(settings, store) as opened:
        return opened.runs(last, playbook, status, host, before)


def show_run(
    settings: Settings,
    run_id: int,
    host: str | None = None,
    only_failed: bool = False,
    store: Store | None = None,
) -> tuple[Run, list[Event]]:
    """One run and its task results: only ``host``'s, only failed or unreachable ones."""
    with using_store(settings, store) as opened:
        run = opened.run(run_id)
        if run is None:
            raise UsageError(f"run {run_id}", "no such run", "see `clusterai runs list`")
        events = opened.events(run_id, host)
    if host and host not in run.recap and not events:
        raise UsageError(f"--host {host}", f"not in run {run_id}", "see its recap")
    if only_failed:
        events = [e for e in events if e.status in ("failed", "unreachable")]
    return run, events
