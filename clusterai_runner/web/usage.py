"""Usage of the gateway: requests, tokens, errors, cache hits, latency and time to first
token at p50 and p95, by key, model, backend, route or time bucket, over a chosen window;
counted in SQL by the store; as a table, bars, and CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, abort, render_template, request

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


@bp.get("/")
def index() -> str:
    window, by, rows = _summary()
    most = max((r["requests"] for r in rows), default=0)
    return render_template(
        "usage.html", rows=rows, window=window, by=by, windows=WINDOWS, groups=GROUPS,
        most=most, totals={c: sum(r[c] or 0 for r in rows) for c in COLUMNS[1:6]},
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
