"""The autoscaler's Prometheus metrics: decisions counted by action, outcome and pool, each
pool's workers serving and parked and its min now, the signals last seen, and when the
last evaluation ran. ``AutoscaleMetrics`` is updated by the loop after each evaluation and
rendered as Prometheus text by ``autoscale run --metrics-listen``."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping, Sequence

from clusterai_runner.autoscaler.policy import PoolState, Signals


def _labels(**values: str) -> str:
    escaped = (
        v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for v in values.values()
    )
    return "{" + ",".join(f'{k}="{v}"' for k, v in zip(values, escaped, strict=True)) + "}"


class AutoscaleMetrics:
    """Safe to update from the loop's thread while a scrape renders."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.decisions: Counter[tuple[str, str, str]] = Counter()
        self.pools: list[PoolState] = []
        self.mins: dict[str, int] = {}
        self.signals: Signals | None = None
        self.evaluated_at = 0.0

    def evaluated(
        self,
        at: float,
        signals: Signals | None,
        pools: Sequence[PoolState],
        mins: Mapping[str, int],
    ) -> None:
        with self._lock:
            self.evaluated_at, self.signals = at, signals
            self.pools, self.mins = list(pools), dict(mins)

    def decided(self, action: str, outcome: str, pool: str) -> None:
        with self._lock:
            self.decisions[(action, outcome, pool)] += 1

    def render(self) -> str:
        with self._lock:
            lines = [
                "# HELP clusterai_autoscale_decisions_total Decisions recorded, by action, outcome"
                " and pool.",
                "# TYPE clusterai_autoscale_decisions_total counter",
            ]
            for (action, outcome, pool), count in sorted(self.decisions.items()):
                labels = _labels(action=action, outcome=outcome, pool=pool)
                lines.append(f"clusterai_autoscale_decisions_total{labels} {count}")
            gauges: dict[str, tuple[str, dict[str, int]]] = {
                "serving": (
                    "Workers of the pool serving.",
                    {p.name: len(p.active) for p in self.pools},
                ),
                "parked": (
                    "Workers of the pool parked.",
                    {p.name: len(p.parked) for p in self.pools},
                ),
                "min": ("The pool's min now (its schedules applied).", self.mins),
            }
            for name, (text, values) in gauges.items():
                lines += [
                    f"# HELP clusterai_autoscale_pool_{name} {text}",
                    f"# TYPE clusterai_autoscale_pool_{name} gauge",
                ]
                lines += [
                    f"clusterai_autoscale_pool_{name}{_labels(pool=pool)} {value}"
                    for pool, value in sorted(values.items())
                ]
            lines += [
                "# HELP clusterai_autoscale_last_evaluation_timestamp_seconds When the last"
                " evaluation ran.",
                "# TYPE clusterai_autoscale_last_evaluation_timestamp_seconds gauge",
                f"clusterai_autoscale_last_evaluation_timestamp_seconds {self.evaluated_at}",
                "# HELP clusterai_autoscale_signals_up 1 when the last evaluation read the"
                " gateway's signals.",
                "# TYPE clusterai_autoscale_signals_up gauge",
                f"clusterai_autoscale_signals_up {int(self.signals is not None)}",
            ]
            if self.signals is not None:
                lines += [
                    "# HELP clusterai_autoscale_queue_wait_p95_seconds The gateway's queue wait"
                    " p95 last seen.",
                    "# TYPE clusterai_autoscale_queue_wait_p95_seconds gauge",
                    f"clusterai_autoscale_queue_wait_p95_seconds {self.signals.queue_wait_p95_s}",
                ]
            return "\n".join(lines) + "\n"
