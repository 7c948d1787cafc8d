"""What every command group shares: exit codes, options, settings, Ctrl-C, run endings."""

from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import click

from clusterai_runner.cli.display import recap_lines
from clusterai_runner.config import Settings
from clusterai_runner.errors import Interrupted, RunFailed, UsageError
from clusterai_runner.usecases.converge import CancelToken, RunRecord, Vault

EXIT_CODES = """\b
Exit codes:
  0    ok
  1    a run or operation failed
  2    usage or configuration error (nothing was changed)
  3    preflight failed on at least one host
  130  interrupted
"""


def progress(message: str) -> None:
    click.echo(f"… {message}", err=True)


def warn(message: str) -> None:
    """Something the operator should know that does not stop the command."""
    click.echo(f"warning: {message}", err=True)


def settings_of(ctx: click.Context) -> Settings:
    settings = ctx.find_object(Settings)
    assert settings is not None  # set by the group callback
    return settings


JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print stable JSON.")

INVENTORY_OPTION = click.option(
    "-i",
    "--inventory",
    type=click.Path(path_type=Path),
    required=True,
    help="The inventory file or directory, as for ansible-playbook.",
)

LIMIT_OPTION = click.option("--limit", help="Only these hosts or groups (an Ansible pattern).")


def vault_options(command: Callable[..., None]) -> Callable[..., None]:
    """``--vault-password-file`` and ``--ask-vault-pass``, handed to the command as one
    ``vault`` argument. A typed password stays in this process's memory."""

    @click.option(
        "--ask-vault-pass",
        is_flag=True,
        help="Ask for the password of the inventory's ansible-vault encrypted values.",
    )
    @click.option(
        "--vault-password-file",
        type=click.Path(path_type=Path, dir_okay=False),
        help="A file (or a script that prints it) holding the vault password.",
    )
    @functools.wraps(command)
    def with_vault(
        *args: object, vault_password_file: Path | None, ask_vault_pass: bool, **kwargs: object
    ) -> None:
        if vault_password_file is not None and ask_vault_pass:
            raise UsageError(
                "--ask-vault-pass", "and --vault-password-file both given", "give one of them"
            )
        password = None
        if ask_vault_pass:
            password = click.prompt("Vault password", hide_input=True, err=True)
        command(*args, vault=Vault(vault_password_file, password), **kwargs)

    return with_vault


@contextmanager
def ctrl_c_cancels(*also: signal.Signals) -> Iterator[CancelToken]:
    """A cancel token that Ctrl-C (and the signals in ``also``) sets while the block runs
    (the use cases stop at the next step and a playbook run ends as canceled); the
    previous handlers come back."""
    token = CancelToken()
    if threading.current_thread() is not threading.main_thread():
        yield token
        return

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        token.cancel()

    chosen = (signal.SIGINT, *also)
    previous = [signal.signal(s, on_signal) for s in chosen]
    try:
        yield token
    finally:
        for number, handler in zip(chosen, previous, strict=True):
            signal.signal(number, handler)


def end_run(record: RunRecord, again: str) -> None:
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


def names(names: Iterable[str], shown: int = 10) -> str:
    listed = list(names)
    more = f" and {len(listed) - shown} more" if len(listed) > shown else ""
    return ", ".join(listed[:shown]) + more
