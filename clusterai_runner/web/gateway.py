"""The gateway's backends: state, requests in flight, failures; drain and undrain."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from clusterai_runner.errors import ClusterAIError, UsageError
from clusterai_runner.usecases import gateway_admin
from clusterai_runner.web.extensions import services

bp = Blueprint("gateway", __name__, url_prefix="/gateway")


def _api() -> Any:
    api = services.current.gateway
    if api is None:
        raise UsageError("the gateway", "no admin key is configured",
                         "set gateway_admin_key in the inventory's vault")  # fmt: skip
    return api


def _page(status: int = 200, **extra: object) -> tuple[str, int]:
    state: dict[str, Any] = {}
    problem = ""
    try:
        state = gateway_admin.backends(_api())
    except ClusterAIError as error:
        problem = str(error)
    return render_template("gateway.html", state=state, problem=problem, **extra), status


@bp.get("/")
def index() -> tuple[str, int]:
    return _page()


@bp.post("/backends/<name>/<action>")
def act(name: str, action: str) -> Response | tuple[str, int]:
    g.audit_target = f"{name} {action}"
    if action not in ("drain", "undrain"):
        return _page(404, error=f"{action!r} is not drain or undrain")
    try:
        if action == "drain":
            wait = min(max(float(request.form.get("wait_s", "") or 30), 0.0), 300.0)
            answer = gateway_admin.drain(_api(), name, wait)
            idle = "no request in flight" if answer.get("idle") else "requests still in flight"
            flash(f"Backend {name} is draining: {idle}.", "ok")
        else:
            gateway_admin.undrain(_api(), name)
            flash(f"Backend {name} is back in service.", "ok")
    except (ClusterAIError, ValueError) as error:
        g.audit_detail = str(error)
        status = (400 if isinstance(error, ValueError) or error.exit_code == 2
                  else 404 if "answered 404" in str(error) else 502)  # fmt: skip
        return _page(status, error=str(error))
    return redirect(url_for("gateway.index"))
