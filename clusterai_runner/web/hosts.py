"""One host: CPU, memory and GPU charts over a chosen window from Prometheus, its status
now (models, GPUs, problems) and the runs that touched it."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request

from clusterai_runner.errors import ClusterAIError
from clusterai_runner.usecases import metrics
from clusterai_runner.usecases import runs as runs_usecase
from clusterai_runner.web import charts
from clusterai_runner.web.extensions import services, settings, status_watch, store

bp = Blueprint("hosts", __name__, url_prefix="/hosts")


@bp.get("/<name>")
def show(name: str) -> str:
    window = request.args.get("window", "1h")
    if window not in metrics.WINDOWS:
        abort(400, f"window {window!r} is not one of {', '.join(metrics.WINDOWS)}")
    snapshot = status_watch.current.latest()
    host = next((h for h in snapshot.hosts if h.name == name), None)
    runs = runs_usecase.list_runs(settings(), 20, store.current, host=name)
    if host is None and not runs and snapshot.at:
        abort(404, f"There is no host {name} in the inventory or the runs.")
    drawn, problem = [], ""
    try:
        found = metrics.host_charts(services.current.prometheus, name, window)
        gap = 3 * max(15, metrics.WINDOWS[window] // metrics.POINTS)
        drawn = [charts.draw(c, gap) for c in found]
    except ClusterAIError as error:
        problem = str(error)
    return render_template(
        "host.html", name=name, host=host, runs=runs, charts=drawn, problem=problem,
        window=window, windows=metrics.WINDOWS, width=charts.WIDTH, height=charts.HEIGHT,
    )  # fmt: skip
