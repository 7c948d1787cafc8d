"""Line charts as SVG geometry, computed here and drawn by a template: no chart library
and no script. Each series becomes a polyline in a fixed view box; gaps in the data (a
host that was down) break the line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clusterai_runner.usecases.metrics import Chart

WIDTH, HEIGHT = 600.0, 160.0
COLOURS = ("#0969da", "#bf3989", "#1a7f37", "#9a6700", "#8250df", "#cf222e")


@dataclass(frozen=True)
class Drawn:
    key: str
    title: str
    unit: str
    top: float  # the value at the top edge
    lines: list[tuple[str, str, list[str]]]  # (label, colour, polyline point lists)
    latest: list[tuple[str, float]]  # each series' last value

    @property
    def empty(self) -> bool:
        return not self.lines


def draw(chart: Chart, gap_s: float) -> Drawn:
    """``gap_s``: a jump in time longer than this starts a new line."""
    values = [v for s in chart.series for _, v in s.points]
    top = 100.0 if chart.unit == "%" else max([1.0, *values]) * 1.1
    span = max(1.0, chart.end - chart.start)
    lines, latest = [], []
    for index, series in enumerate(chart.series):
        if not series.points:
            continue
        pieces: list[str] = []
        current: list[str] = []
        previous = None
        for at, value in series.points:
            if previous is not None and at - previous > gap_s and current:
                pieces.append(" ".join(current))
                current = []
            x = WIDTH * (at - chart.start) / span
            y = HEIGHT - HEIGHT * min(max(value, 0.0), top) / top
            current.append(f"{x:.1f},{y:.1f}")
            previous = at
        pieces.append(" ".join(current))
        lines.append((series.label, COLOURS[index % len(COLOURS)], pieces))
        latest.append((series.label, series.points[-1][1]))
    return Drawn(chart.key, chart.title, chart.unit, top, lines, latest)
