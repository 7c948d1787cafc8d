"""Line charts as SVG geometry, computed here and drawn by a template: no chart library
and no script. Each series becomes a polyline in a fixed view box; gaps in the data (a
host that was down) break the line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clusterai_runner.usecases.metrics import Chart

WIDTH, HEIGHT = 600.0, 160.0
DOTS = 60  # series of at most this many points get a mark at each
COLOURS = ("#0969da", "#bf3989", "#1a7f37", "#9a6700", "#8250df", "#cf222e")


@dataclass(frozen=True)
class Drawn:
    key: str
    title: str
    unit: str
    top: float  # the value at the top edge
    lines: list[tuple[str, str, list[str]]]  # (label, colour, polyline point lists)
    latest: list[tuple[str, float, str]]  # each series' last value, and its colour
    dots: bool = False  # few points: each one marked, so that a lone one shows

    def points(self, piece: str) -> list[tuple[str, str]]:
        """A polyline's points, as (x, y) to mark them."""
        return [(xy.split(",")[0], xy.split(",")[1]) for xy in piece.split()]

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
        colour = COLOURS[index % len(COLOURS)]
        lines.append((series.label, colour, pieces))
        latest.append((series.label, series.points[-1][1], colour))
    most = max((len(s.points) for s in chart.series), default=0)
    return Drawn(chart.key, chart.title, chart.unit, top, lines, latest, dots=most <= DOTS)
