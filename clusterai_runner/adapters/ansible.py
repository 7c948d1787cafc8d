"""The one module that imports ansible-runner (an import contract checks it).

Every playbook run goes through ``start_playbook``: ``ansible_runner.run_async`` (never a
subprocess of ``ansible-playbook``) in a private data directory of its own, with
``suppress_env_files`` so secrets given as extra variables are not written to disk,
artifact rotation, an event handler that turns Ansible's events into ``TaskEvent``s, and
a cancel callback that reads a ``CancelToken``. Nothing here touches signals, so any
thread (the CLI's main thread, a web request's, the autoscaler's) and an asyncio loop
(``PlaybookRun.wait_async``) can run a playbook; the CLI alone wires Ctrl-C to a token.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner

from clusterai_runner.config import ANSIBLE_CONFIG, REPO

PLAYBOOKS = REPO / "playbooks"
# Keep the artifacts of this many runs per data directory.
KEEP_ARTIFACTS = 20

_STATUS_OF_EVENT = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "unreachable",
    "runner_item_on_failed": "failed",
}
_STATS_KEYS = {
    "ok": "ok",
    "changed": "changed",
    "dark": "unreachable",
    "failures": "failed",
    "skipped": "skipped",
    "rescued": "rescued",
    "ignored": "ignored",
}


@dataclass(frozen=True)
class TaskEvent:
    """One task's result on one host, or the start of a task (``status`` ``started``)."""

    host: str
    task: str
    status: str  # started, ok, changed, failed, skipped, unreachable
    message: str = ""
    ignored: bool = False


@dataclass
class RunOutcome:
    status: str  # successful, failed, canceled
    rc: int
    recap: dict[str, dict[str, int]] = field(default_factory=dict)
    # When Ansible stopped before any host was reached: its last words.
    detail: str = ""


def _path_with_ansible() -> str:
    """PATH with this Python's environment first, so ansible-runner finds the
    ansible-playbook installed beside clusterai even when that is not on the PATH."""
    here = str(Path(sys.executable).parent)
    return os.pathsep.join([here, os.environ.get("PATH", os.defpath)])


def _message(result: dict[str, Any]) -> str:
    # A loop's result says only "One or more items failed": the first failed item's
    # message says what.
    for item in result.get("results") or []:
        if isinstance(item, dict) and item.get("failed"):
            found = _message(item)
            if found:
                return found
    for key in ("msg", "stderr", "reason"):
        value = result.get(key)
        if value:
            return " ".join(str(value).split())[:2000]
    return ""


def translate(event: dict[str, Any]) -> TaskEvent | None:
    """Ansible's event, as ansible-runner hands it over, as a TaskEvent (or None)."""
    name = event.get("event", "")
    data = event.get("event_data") or {}
    host = data.get("host") or data.get("remote_addr") or ""
    task = data.get("task") or ""
    if name == "runner_on_start" and host:
        return TaskEvent(host, task, "started")
    status = _STATUS_OF_EVENT.get(name)
    if status is None or not host or name == "runner_item_on_failed":
        return None
    result = data.get("res") or {}
    if status == "ok" and result.get("changed"):
        status = "changed"
    return TaskEvent(host, task, status, _message(result), bool(data.get("ignore_errors")))


def recap_of(stats: dict[str, Any]) -> dict[str, dict[str, int]]:
    """The PLAY RECAP counters per host from a playbook_on_stats event's data."""
    recap: dict[str, dict[str, int]] = {}
    for key, counter in _STATS_KEYS.items():
        for host, count in (stats.get(key) or {}).items():
            recap.setdefault(host, dict.fromkeys(_STATS_KEYS.values(), 0))[counter] = int(count)
    return recap


class CancelToken:
    """Asks a run to stop; set from any thread or a signal handler, read by the runner."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def canceled(self) -> bool:
        return self._event.is_set()


class PlaybookRun:
    """A playbook running in ansible-runner's own thread; ``wait`` or ``wait_async`` for
    its outcome."""

    def __init__(
        self,
        thread: threading.Thread,
        runner: Any,
        token: CancelToken,
        recap: dict[str, dict[str, int]],
    ) -> None:
        self._thread = thread
        self._runner = runner
        self.cancel_token = token
        # Filled by the event handler in the runner's thread when the run ends.
        self.recap = recap

    def cancel(self) -> None:
        self.cancel_token.cancel()

    def wait(self) -> RunOutcome:
        self._thread.join()
        return self._outcome()

    async def wait_async(self) -> RunOutcome:
        await asyncio.to_thread(self._thread.join)
        return self._outcome()

    def _outcome(self) -> RunOutcome:
        runner = self._runner
        status = str(runner.status)
        if self.cancel_token.canceled or status == "canceled":
            status = "canceled"
        elif status != "successful":
            status = "failed"
        detail = ""
        if status == "failed" and not self.recap:
            lines = [line.strip() for line in runner.stdout.read().splitlines() if line.strip()]
            detail = lines[-1] if lines else ""
        return RunOutcome(
            status, int(runner.rc if runner.rc is not None else 1), self.recap, detail
        )


def start_playbook(
    playbook: str,
    inventory: Path,
    data_dir: Path,
    *,
    limit: str | None = None,
    extravars: dict[str, Any] | None = None,
    tags: str | None = None,
    check: bool = False,
    on_event: Callable[[TaskEvent], None] | None = None,
    cancel: CancelToken | None = None,
) -> PlaybookRun:
    """Start ``playbooks/<playbook>`` against ``inventory`` in a thread of its own.
    ``on_event`` is called from that thread; ``cancel`` stops the run (its outcome then
    says ``canceled``)."""
    token = cancel or CancelToken()
    recap: dict[str, dict[str, int]] = {}

    def handle_event(event: dict[str, Any]) -> bool:
        if event.get("event") == "playbook_on_stats":
            recap.update(recap_of(event.get("event_data") or {}))
        elif on_event is not None:
            task_event = translate(event)
            if task_event is not None:
                on_event(task_event)
        return True

    # ansible-runner records the command and its environment in the artifacts.
    data_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir.parent.chmod(0o700)
    data_dir.mkdir(mode=0o700, exist_ok=True)
    thread, runner = ansible_runner.run_async(
        private_data_dir=str(data_dir),
        playbook=str(PLAYBOOKS / playbook),
        inventory=str(inventory),
        limit=limit,
        extravars=extravars or {},
        tags=tags,
        cmdline="--check" if check else None,
        envvars={
            "ANSIBLE_CONFIG": str(ANSIBLE_CONFIG),
            "ANSIBLE_NOCOLOR": "1",
            "PATH": _path_with_ansible(),
        },
        suppress_env_files=True,
        rotate_artifacts=KEEP_ARTIFACTS,
        quiet=True,
        event_handler=handle_event,
        cancel_callback=lambda: token.canceled,
    )
    return PlaybookRun(thread, runner, token, recap)


def run_playbook(
    playbook: str,
    inventory: Path,
    data_dir: Path,
    *,
    limit: str | None = None,
    extravars: dict[str, Any] | None = None,
    tags: str | None = None,
    check: bool = False,
    on_event: Callable[[TaskEvent], None] | None = None,
    cancel: CancelToken | None = None,
) -> RunOutcome:
    """``start_playbook`` and wait for its outcome."""
    return start_playbook(
        playbook,
        inventory,
        data_dir,
        limit=limit,
        extravars=extravars,
        tags=tags,
        check=check,
        on_event=on_event,
        cancel=cancel,
    ).wait()
