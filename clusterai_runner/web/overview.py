"""The overview: every host with its reachability, inference server, models and GPUs,
and the cluster's totals, refreshed in place (``/fragments/hosts``) without a reload."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, current_app, render_template

from clusterai_runner.web.extensions import status_watch, store

bp = Blueprint("overview", __name__)


def _context() -> dict[str, Any]:
    snapshot = status_watch.current.latest()
    hosts = snapshot.hosts
    workers = [h for h in hosts if h.kind == "workers"]
    gpus = [g for h in hosts for g in h.gpus]
    totals = {
        "hosts": len(hosts),
        "healthy": sum(1 for h in hosts if h.healthy),
        "workers": len(workers),
        "inference_up": sum(1 for h in workers if h.inference == "up"),
        "gpus": len(gpus),
        "gpu_memory_used": sum(g.memory_used_bytes for g in gpus),
        "gpu_memory_total": sum(g.memory_total_bytes for g in gpus),
    }
    age = time.time() - snapshot.at if snapshot.at else None
    return {
        "hosts": hosts,
        "totals": totals,
        "error": snapshot.error,
        "age": age,
        "interval": current_app.config["CLUSTERAI_STATUS_INTERVAL"],
        "waiting": snapshot.at == 0 and not snapshot.error,
        "alerts": snapshot.alerts,
        "gateway": snapshot.gateway,
        "services_error": snapshot.services_error,
    }


@bp.get("/")
def index() -> str:
    # The autoscaler's last actions (clusterai autoscale), from the store it writes.
    decisions = store.current.decisions(limit=5, acted=True)
    return render_template("overview.html", decisions=decisions, **_context())


@bp.get("/fragments/hosts")
def hosts_fragment() -> str:
    return render_template("_hosts.html", **_context())
