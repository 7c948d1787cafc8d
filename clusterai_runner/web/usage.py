"""Usage of the gateway: requests, tokens, errors, cache hits, latency and time to first
token at p50 and p95, by key, model, backend, route or time bucket, over a chosen window;
counted in SQL by the store; as a table, bars, charts over time, and CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, abort, render_template, request

from clusterai_runner.usecases.metrics import Chart, Series
from clusterai_runner.web import charts
from clusterai_runner.web.extensions import store

bp = Blueprint("usage", __name__, url_prefix="/usage")

WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7),
           "30d": timedelta(days=30)}  # fmt: skip
GROUPS = ("model", "key", "backend", "route", "hour", "day")
COLUMNS = ("group", "requests", "prompt_tokens", "completion_tokens", "errors", "cache_hits",
           "latency_p50_ms", "latency_p95_ms", "ttft_p50_ms", "ttft_p95_ms")  # fmt: skip


def _summary() -> tuple[str, str, list[dict[str, Any]]]:
    window = request.args.get("window", "24h")
    by = request.args.get("by", "model")
    if window not in WINDOWS:
        abort(400, f"window {window!r} is not one of {', '.join(WINDOWS)}")
    if by not in GROUPS:
        abort(400, f"by {by!r} is not one of {', '.join(GROUPS)}")
    since = (datetime.now(UTC) - WINDOWS[window]).isoformat(timespec="seconds")
    return window, by, store.current.usage_summary(since, by)


def over_time(
    window: str, now: datetime, summed: tuple[str, list[dict[str, Any]]] | None = None
) -> list[Chart]:
    """Requests (with errors and cache hits) and latency p50/p95 in each hour of the window,
    or each day past a day's: a bucket without requests counts 0 requests and has no
    latency (the line breaks there). ``summed``: the table's rows and what they are grouped
    by, used when that is already the chart's bucket."""
    daily = WINDOWS[window] > timedelta(days=1)
    step, width = (timedelta(days=1), 10) if daily else (timedelta(hours=1), 13)
    first = (now - WINDOWS[window]).replace(minute=0, second=0, microsecond=0)
    if daily:
        first = first.replace(hour=0)
    bucket = "day" if daily else "hour"
    if summed is not None and summed[0] == bucket:
        rows = summed[1]
    else:
        rows = store.current.usage_summary(first.isoformat(), bucket)
    found = {r["group"]: r for r in rows}
    buckets = []
    at = first
    while at <= now:
        buckets.append((at.timestamp(), found.get(at.isoformat()[:width])))
        at += step

    def series(label: str, column: str, skip_empty: bool = False) -> Series:
        return Series(label, [(t, float((r or {}).get(column) or 0)) for t, r in buckets
                              if not (skip_empty and not (r or {}).get("requests"))])  # fmt: skip

    start, end = buckets[0][0], buckets[-1][0]
    per = "day" if daily else "hour"
    return [
        Chart("requests", f"Requests per {per}", f"per {per}", start, end,
              [series("requests", "requests"), series("errors", "errors"),
               series("cache hits", "cache_hits")]),
        Chart("latency", f"Latency per {per}", "ms", start, end,
              [series("p50", "latency_p50_ms", True), series("p95", "latency_p95_ms", True)]),
    ]  # fmt: skip


@bp.get("/")
def index() -> str:
    window, by, rows = _summary()
    most = max((r["requests"] for r in rows), default=0)
    step = (86400 if WINDOWS[window] > timedelta(days=1) else 3600) * 1.5
    drawn = [charts.draw(c, step) for c in over_time(window, datetime.now(UTC), (by, rows))]
    return render_template(
        "usage.html", rows=rows, window=window, by=by, windows=WINDOWS, groups=GROUPS,
        most=most, totals={c: sum(r[c] or 0 for r in rows) for c in COLUMNS[1:6]},
        charts=drawn, width=charts.WIDTH, height=charts.HEIGHT,
    )  # fmt: skip


@bp.get("/csv")
def export() -> Response:
    window, by, rows = _summary()
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for row in rows:
        # A cell that a spreadsheet would run as a formula is prefixed with a quote.
        writer.writerow(
            "'" + v if isinstance(v, str) and v[:1] in ("=", "+", "-", "@") else v
            for v in (row[c] for c in COLUMNS)
        )
    return Response(
        out.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="usage-{by}-{window}.csv"'},
    )
