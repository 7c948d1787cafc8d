"""Runs: the list (filtered by playbook, status and host, a page at a time) and one run,
with its per-host task timeline, its failed tasks and, while it runs, a live tail."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, abort, render_template, request

from clusterai_runner.errors import UsageError
from clusterai_runner.usecases import runs as runs_usecase
from clusterai_runner.web import timeline
from clusterai_runner.web.extensions import settings, store

if TYPE_CHECKING:
    from clusterai_runner.store import Event, Run

bp = Blueprint("runs", __name__, url_prefix="/runs")

STATUSES = ("running", "successful", "failed", "canceled")
PAGE = 50


@bp.get("/")
def index() -> str:
    playbook = request.args.get("playbook") or None
    status = request.args.get("status") or None
    host = request.args.get("host") or None
    before = request.args.get("before", type=int)
    if status and status not in STATUSES:
        abort(400, f"status {status!r} is not one of {', '.join(STATUSES)}")
    found = runs_usecase.list_runs(settings(), PAGE, store.current, playbook, status, host, before)
    return render_template(
        "runs.html",
        runs=found,
        playbooks=store.current.playbooks(),
        statuses=STATUSES,
        chosen={"playbook": playbook or "", "status": status or "", "host": host or ""},
        next_before=found[-1].id if len(found) == PAGE else None,
    )


def _run_or_404(run_id: int) -> tuple[Run, list[Event]]:
    try:
        return runs_usecase.show_run(settings(), run_id, store=store.current)
    except UsageError:
        abort(404, f"There is no run {run_id}.")


@bp.get("/<int:run_id>")
def show(run_id: int) -> str:
    run, events = _run_or_404(run_id)
    failed = [e for e in events if e.status in ("failed", "unreachable")]
    return render_template(
        "run.html",
        run=run,
        timeline=timeline.build(run, events),
        failed=failed,
        tail=events[-200:],
        last_id=events[-1].id if events else 0,
    )


@bp.get("/<int:run_id>/fragments/tail")
def tail(run_id: int) -> str:
    run, _ = _run_or_404(run_id)
    after = request.args.get("after", default=0, type=int)
    new = store.current.events(run_id, after=after, limit=500)
    return render_template("_tail.html", run=run, events=new, last_id=new[-1].id if new else after)
