"""What the CLI shows while a playbook runs and after it: the live view and the recap."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from clusterai_runner.adapters.ansible import TaskEvent


def recap_lines(recap: dict[str, dict[str, int]]) -> list[str]:
    """The per-host recap in the exact shape of Ansible's PLAY RECAP lines."""
    from clusterai_runner.store import COUNTERS  # SQLAlchemy only when a recap is shown

    lines = []
    for host in sorted(recap):
        counters = recap[host]
        fields = " ".join(f"{name}={counters.get(name, 0):<4}" for name in COUNTERS)
        lines.append(f"{host:<26} : {fields}")
    return lines


class LiveView:
    """Task progress as it happens: on a terminal one status line, rewritten, naming the
    task and the hosts still busy with it; elsewhere one line per task. Failures are
    printed the moment they happen, with the task's message."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self.tasks = 0
        self.task = ""
        self.busy: set[str] = set()
        self.done: dict[str, int] = {}

    def __call__(self, event: TaskEvent) -> None:
        if event.status == "started":
            if event.task != self.task:
                self.task = event.task
                self.tasks += 1
                self.busy = set()
                if not self.tty:
                    self._line(f"[{self.tasks}] {event.task}")
            self.busy.add(event.host)
        else:
            self.busy.discard(event.host)
            self.done[event.host] = self.done.get(event.host, 0) + 1
            if event.status in ("failed", "unreachable") and not event.ignored:
                self._clear()
                reason = f": {event.message}" if event.message else ""
                self._line(f"{event.status.upper()} {event.host}: {event.task}{reason}")
        if self.tty:
            hosts = " ".join(sorted(self.busy)) or "-"
            status = f"[{self.tasks}] {self.task[:60]}  running on: {hosts}"
            self.out.write("\r\033[K" + status[:150])
            self.out.flush()

    def finish(self) -> None:
        self._clear()

    def _clear(self) -> None:
        if self.tty:
            self.out.write("\r\033[K")
            self.out.flush()

    def _line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


def echo_lines(lines: list[str], echo: Callable[[str], None]) -> None:
    for line in lines:
        echo(line)
