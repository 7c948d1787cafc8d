"""Accounts and the audit trail, for admins; a user's own password, for everyone."""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from clusterai_runner.errors import ClusterAIError
from clusterai_runner.usecases import users as users_usecase
from clusterai_runner.web.extensions import settings, store
from clusterai_runner.web.policy import admin_only, viewer_may_post

bp = Blueprint("users", __name__)


def _page(status: int = 200, **extra: object) -> tuple[str, int]:
    found = users_usecase.list_users(settings(), store.current)
    return render_template("users.html", users=found, roles=users_usecase.ROLES, **extra), status


@bp.get("/users")
@admin_only
def index() -> tuple[str, int]:
    return _page()


@bp.post("/users")
def add() -> Response | tuple[str, int]:
    name = request.form.get("name", "").strip()
    g.audit_target = name
    try:
        users_usecase.add(
            settings(), name, request.form.get("role", ""), request.form.get("password", ""),
            store.current,
        )  # fmt: skip
    except ClusterAIError as error:
        g.audit_detail = str(error)
        return _page(400, error=str(error), form=request.form)
    flash(f"User {name} is added.", "ok")
    return redirect(url_for("users.index"))


@bp.post("/users/<name>/remove")
def remove(name: str) -> Response | tuple[str, int]:
    g.audit_target = name
    if name == g.user.name:
        g.audit_detail = "an admin cannot remove their own account"
        return _page(400, error="You cannot remove your own account.")
    try:
        users_usecase.remove(settings(), name, store.current)
    except ClusterAIError as error:
        g.audit_detail = str(error)
        return _page(404, error=str(error))
    flash(f"User {name} is removed.", "ok")
    return redirect(url_for("users.index"))


@bp.get("/audit")
@admin_only
def audit() -> str:
    user = request.args.get("user") or None
    action = request.args.get("action") or None
    entries = store.current.audit(500, user, action)
    return render_template(
        "audit.html", entries=entries, chosen={"user": user or "", "action": action or ""}
    )


@bp.route("/account", methods=["GET", "POST"])
@viewer_may_post
def account() -> Response | str | tuple[str, int]:
    if request.method == "GET":
        return render_template("account.html")
    g.audit_target = g.user.name
    current = request.form.get("current", "")
    if (
        users_usecase.login(store.current, g.user.name, current, request.remote_addr or "").user
        is None
    ):
        g.audit_detail = "the current password is wrong"
        return render_template("account.html", error="The current password is wrong."), 400
    try:
        users_usecase.set_password(settings(), g.user.name, request.form.get("new", ""),
                                   store.current)  # fmt: skip
    except ClusterAIError as error:
        g.audit_detail = str(error)
        return render_template("account.html", error=str(error)), 400
    flash("Your password is changed; log in again with it.", "ok")
    return redirect(url_for("auth.login"))
