"""Alerts: what fires and what is silenced, from Alertmanager; a silence created for an
alert's labels, or expired. Alertmanager down: the page says so and the rest works."""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from clusterai_runner.errors import ClusterAIError
from clusterai_runner.usecases import alerts as alerts_usecase
from clusterai_runner.web.extensions import services

bp = Blueprint("alerts", __name__, url_prefix="/alerts")

SILENCE_LABELS = ("alertname", "instance", "severity", "job")


def _page(status: int = 200, **extra: object) -> tuple[str, int]:
    found, quiet, problem = [], [], ""
    try:
        api = services.current.alertmanager
        found = alerts_usecase.alerts(api)
        quiet = alerts_usecase.silences(api)
    except ClusterAIError as error:
        problem = str(error)
    return render_template("alerts.html", alerts=found, silences=quiet, problem=problem,
                           labels=SILENCE_LABELS, **extra), status  # fmt: skip


@bp.get("/")
def index() -> tuple[str, int]:
    return _page()


@bp.post("/silences")
def silence() -> Response | tuple[str, int]:
    matchers = {n: request.form.get(n, "").strip() for n in SILENCE_LABELS}
    matchers = {n: v for n, v in matchers.items() if v}
    g.audit_target = ", ".join(f"{n}={v}" for n, v in sorted(matchers.items()))
    try:
        hours = float(request.form.get("hours", "") or 0)
    except ValueError:
        hours = 0.0
    try:
        made = alerts_usecase.silence(
            services.current.alertmanager, matchers, hours, g.user.name,
            request.form.get("comment", ""),
        )  # fmt: skip
    except ClusterAIError as error:
        g.audit_detail = str(error)
        return _page(400 if error.exit_code == 2 else 502, error=str(error))
    g.audit_detail = f"silence {made}"
    flash(f"Silenced {g.audit_target} for {hours:g} h (silence {made}).", "ok")
    return redirect(url_for("alerts.index"))


@bp.post("/silences/<silence_id>/expire")
def expire(silence_id: str) -> Response | tuple[str, int]:
    g.audit_target = silence_id
    try:
        alerts_usecase.expire(services.current.alertmanager, silence_id)
    except ClusterAIError as error:
        g.audit_detail = str(error)
        return _page(400 if error.exit_code == 2 else 502, error=str(error))
    flash(f"Silence {silence_id} expired.", "ok")
    return redirect(url_for("alerts.index"))
