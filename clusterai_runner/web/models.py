"""Models: for each worker, grouped by its inventory groups, the models it should serve
against those it serves now, and the drift. Beside the inventory only; on the control
host (no inventory) the page lists what each worker serves. Below, the last model
rollouts (`clusterai models rollout`), each with every step it took."""

from __future__ import annotations

from itertools import groupby

from flask import Blueprint, current_app, render_template

from clusterai_runner.errors import ClusterAIError
from clusterai_runner.usecases import models as models_usecase
from clusterai_runner.usecases import rollout as rollout_usecase
from clusterai_runner.web.extensions import settings, status_watch, store

bp = Blueprint("models", __name__, url_prefix="/models")


@bp.get("/")
def index() -> str:
    snapshot = status_watch.current.latest()
    serving: dict[str, list[str] | None] = {
        # What it holds where the status asked the server; else what the gateway lists.
        h.name: h.held if h.held is not None else (h.models if h.inference == "up" else None)
        for h in snapshot.hosts
        if h.kind == "workers"
    }
    inventory = current_app.config["CLUSTERAI_INVENTORY"]
    problem = ""
    hosts: list[models_usecase.HostModels] = []
    if inventory is not None:
        vault = current_app.config["CLUSTERAI_VAULT"]
        try:
            wanted = models_usecase.desired(inventory, **({"vault": vault} if vault else {}))
            details = {h.name: h.held_models for h in snapshot.hosts if h.held_models}
            hosts = models_usecase.compare(wanted, serving, details)
        except ClusterAIError as error:
            problem = str(error)
    else:
        hosts = [models_usecase.HostModels(name, ["workers"], "", [], actual)
                 for name, actual in sorted(serving.items())]  # fmt: skip
    rows = sorted(hosts, key=lambda h: (h.groups[0], h.name))
    groups = [(g, list(members)) for g, members in groupby(rows, key=lambda h: h.groups[0])]
    rollouts = rollout_usecase.history(settings(), 10, store=store.current)
    return render_template("models.html", groups=groups, problem=problem,
                           has_inventory=inventory is not None, rollouts=rollouts)  # fmt: skip
