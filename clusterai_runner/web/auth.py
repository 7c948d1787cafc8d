"""Logging in and out. The session is Flask's signed cookie (HttpOnly, SameSite=Strict,
Secure under TLS, 8 hours): it holds the user's name and a piece of their password hash,
so changing a password ends the sessions made with the old one."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response

from clusterai_runner.usecases import users
from clusterai_runner.web.extensions import store
from clusterai_runner.web.policy import fingerprint, viewer_may_post

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    """Only a path of this app: never another site (an open redirect)."""
    if not target:
        return url_for("overview.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("overview.index")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str | tuple[str, int]:
    if request.method == "GET":
        return render_template("login.html", next=request.args.get("next", ""))
    name = request.form.get("name", "").strip()
    password = request.form.get("password", "")
    result = users.login(store.current, name, password, request.remote_addr or "")
    if result.user is None:
        flash(result.reason, "error")
        return render_template("login.html", next=request.form.get("next", ""), name=name), 401
    session.clear()
    session.permanent = True
    session["user"] = result.user.name
    session["since"] = time.time()
    session["auth"] = fingerprint(result.user.password_hash)
    return redirect(_safe_next(request.form.get("next")))


@bp.route("/logout", methods=["POST"])
@viewer_may_post
def logout() -> Response:
    session.clear()
    return redirect(url_for("auth.login"))
