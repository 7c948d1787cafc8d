"""A run's per-host timeline: a row per host, a bar per task, from the stored task
results. A result is stored when its task ends on a host, so a bar runs from the end of
that host's previous task (or the run's start) to its own end; the times are whole
seconds, so a bar is at least a sliver wide."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clusterai_runner.store import Event, Run

WIDTH = 1000.0  # the SVG's user units across
MIN_BAR = 2.0


@dataclass(frozen=True)
class Bar:
    host: str
    task: str
    status: str
    message: str
    start_s: float
    end_s: float
    x: float
    width: float


@dataclass(frozen=True)
class Timeline:
    hosts: list[str]
    bars: list[Bar]
    duration_s: float

    def rows(self) -> list[tuple[str, list[Bar]]]:
        return [(h, [b for b in self.bars if b.host == h]) for h in self.hosts]


def _seconds(at: str, origin: datetime) -> float:
    try:
        return max(0.0, (datetime.fromisoformat(at) - origin).total_seconds())
    except ValueError:
        return 0.0


def build(run: Run, events: list[Event]) -> Timeline:
    origin = datetime.fromisoformat(run.started_at)
    ends = [_seconds(e.at, origin) for e in events]
    finished = _seconds(run.finished_at, origin) if run.finished_at else 0.0
    duration = max([finished, *ends, 1.0])
    hosts: list[str] = []
    last_end: dict[str, float] = {}
    bars = []
    for event, end in zip(events, ends, strict=True):
        if event.host not in last_end:
            hosts.append(event.host)
        start = last_end.get(event.host, 0.0)
        last_end[event.host] = end
        x = WIDTH * start / duration
        width = max(MIN_BAR, WIDTH * (end - start) / duration)
        bars.append(
            Bar(event.host, event.task, event.status, event.message, start, end,
                min(x, WIDTH - MIN_BAR), width)
        )  # fmt: skip
    for host in sorted(run.recap):
        if host not in last_end:
            hosts.append(host)
    return Timeline(hosts, bars, duration)
