"""The one module that imports ansible-runner (an import contract checks it).

Every playbook run goes through ``start_playbook``: ansible-runner's ``RunnerConfig`` and
``Runner`` (never a subprocess of ``ansible-playbook``) in a private data directory of its
own (0700), with artifact rotation, an event handler that turns Ansible's events into
``TaskEvent``s, and a cancel callback that reads a ``CancelToken``. Nothing here touches
signals, so any thread (the CLI's main thread, a web request's, the autoscaler's) and an
asyncio loop (``PlaybookRun.wait_async``) can run a playbook; the CLI alone wires Ctrl-C
to a token.

ansible-runner's own defaults that would undo ``ansible.cfg`` are put back: host key
checking stays on (it turns it off), and the fact cache stays shared across runs (it
moves it into each run's artifacts).

Secrets stay off disk and out of ``ps``: ansible-runner records each run's environment in
``artifacts/<id>/command``, so ansible-playbook gets only the variables Ansible needs
(``ENVIRONMENT``), not the operator's whole environment (a provider key, a token); extra
variables go in a 0600 file of the run directory, removed when the run ends, not on the
command line; a vault password stays in memory (see vault.py).

Nothing of a run outlives it: Ansible's task workers start sessions of their own, so
ansible-runner's kill of the run's process group on a cancel missed those under way; they
waited forever on a connection that was gone (two per canceled converge). Every process
of a run carries a mark in its environment, and whatever still carries it when the run
ends is killed (``end_leftovers``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterai_runner.adapters.vault import NO_VAULT, Vault
from clusterai_runner.config import ANSIBLE_CONFIG, REPO, forced_variables, private_file

PLAYBOOKS = REPO / "playbooks"
# Keep the artifacts of this many runs per data directory.
KEEP_ARTIFACTS = 20

# The operator's environment variables ansible-playbook is given: what Ansible, ssh and
# the roles read (ANSIBLE_*, the locale, ssh's agent, proxies for the controller's
# downloads, the CLUSTERAI_* settings the inventory plugin and roles read); nothing else.
ENVIRONMENT = re.compile(
    r"^(HOME|USER|LOGNAME|LANG|LANGUAGE|TZ|TMPDIR|TERM|SSH_AUTH_SOCK|XDG_\w+|LC_\w+"
    r"|ANSIBLE_\w+|(?i:https?_proxy|no_proxy)"
    r"|CLUSTERAI_(STATE_DIR|STATE_URL|CACHE_DIR|DEBUG))$"
)


def ansible_environment(prepared: Mapping[str, str], ours: Mapping[str, str]) -> dict[str, str]:
    """``prepared`` (ansible-runner's: the operator's environment, then its own and
    ``ours``) without the operator's variables that ``ENVIRONMENT`` does not name."""
    operator = os.environ
    return {
        name: value
        for name, value in prepared.items()
        if name in ours or ENVIRONMENT.match(name) or operator.get(name) != value
    }


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


# The environment variable that marks every process of one run (see end_leftovers).
RUN_MARK = "CLUSTERAI_RUN_MARK"


def end_leftovers(mark: str) -> list[int]:
    """SIGKILL the processes whose environment carries ``RUN_MARK=mark``: what a run left
    behind (its ansible-playbook has ended). Their PIDs."""
    needle = f"{RUN_MARK}={mark}".encode()
    ended = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            marked = needle in (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # gone, or not ours to read
            continue
        if marked:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                continue
            ended.append(int(entry.name))
    return ended


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

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, less when canceled; whether it was."""
        return self._event.wait(timeout)


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
    vault: Vault = NO_VAULT,
) -> PlaybookRun:
    """Start ``playbooks/<playbook>`` against ``inventory`` in a thread of its own.
    ``on_event`` is called from that thread; ``cancel`` stops the run (its outcome then
    says ``canceled``); ``vault`` opens the inventory's encrypted values."""
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
    variables = None
    extravars = {**forced_variables(), **(extravars or {})}
    if extravars:
        variables = private_file(data_dir / f"extravars-{os.getpid()}-{threading.get_ident()}")
        variables.write_text(json.dumps(extravars))
    options, passwords = vault.runner_arguments()
    mark = uuid.uuid4().hex
    ours = {
        RUN_MARK: mark,
        "ANSIBLE_CONFIG": str(ANSIBLE_CONFIG),
        "ANSIBLE_NOCOLOR": "1",
        "PATH": _path_with_ansible(),
        # ansible-runner turns host key checking off unless this is set; ansible.cfg has
        # it on, and an operator who means otherwise says so in the environment.
        "ANSIBLE_HOST_KEY_CHECKING": os.environ.get("ANSIBLE_HOST_KEY_CHECKING", "True"),
    }
    # Imported here, not at the top: a third of the CLI's start-up, and most commands
    # (sandbox, runs, keys, status) run no playbook.
    import ansible_runner

    config = ansible_runner.RunnerConfig(
        private_data_dir=str(data_dir),
        playbook=str(PLAYBOOKS / playbook),
        inventory=str(inventory),
        limit=limit,
        extravars=str(variables) if variables else None,
        tags=tags,
        cmdline=" ".join([*options, *(["--check"] if check else [])]) or None,
        envvars=ours,
        passwords=passwords,
        suppress_env_files=True,
        rotate_artifacts=KEEP_ARTIFACTS,
        quiet=True,
        # ansible-runner would point the fact cache into this run's artifacts, where the
        # next run never finds it (a run with --tags then lacks gpu_facts' facts): the
        # cache stays where ansible.cfg or ANSIBLE_CACHE_PLUGIN_CONNECTION puts it.
        fact_cache_type="",
    )
    config.prepare()
    config.env = ansible_environment(config.env, ours)
    runner = ansible_runner.Runner(
        config, event_handler=handle_event, cancel_callback=lambda: token.canceled
    )

    def run() -> None:
        try:
            runner.run()
        finally:
            end_leftovers(mark)
            if variables is not None:
                variables.unlink(missing_ok=True)

    thread = threading.Thread(target=run, name=f"ansible-runner {playbook}")
    thread.start()
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
    vault: Vault = NO_VAULT,
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
        vault=vault,
    ).wait()
