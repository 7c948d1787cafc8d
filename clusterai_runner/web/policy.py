"""Who may do what, checked for every request in one place, so a new route cannot slip
through: the login first (no session: a GET goes to the login page, anything else gets
401), then the CSRF token on every POST (400), then the role (403). A view is open to
viewers for GET unless marked ``admin_only``; a POST needs the admin role unless the view
is marked ``viewer_may_post``.
Every POST is written to the audit table with its outcome. Security headers go on every
answer: a Content-Security-Policy that allows no inline script, no framing, no sniffing.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import (
    Flask,
    abort,
    current_app,
    g,
    redirect,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFError
from werkzeug.wrappers import Response

from clusterai_runner.web.extensions import csrf, store

F = TypeVar("F", bound=Callable[..., Any])

PUBLIC = {"static", "auth.login"}
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def viewer_may_post(view: F) -> F:
    """Mark a view whose POST a viewer may send (their own logout, their password)."""
    view.viewer_may_post = True  # type: ignore[attr-defined]
    return view


def admin_only(view: F) -> F:
    """Mark a view that only admins may even read (accounts, the audit trail)."""
    view.admin_only = True  # type: ignore[attr-defined]
    return view


def public(view: F) -> F:
    view.public = True  # type: ignore[attr-defined]
    return view


def _view() -> Any:
    return current_app.view_functions.get(request.endpoint or "")


def fingerprint(password_hash: str) -> str:
    """What a session keeps of its user's password hash: an HMAC of it under the app's
    secret key, so a password change ends old sessions and the cookie shows nothing of
    the hash."""
    key = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(key, password_hash.encode(), hashlib.sha256).hexdigest()[:32]


def _load_user() -> None:
    g.user = None
    name = session.get("user")
    if not name:
        return
    lifetime = current_app.permanent_session_lifetime.total_seconds()
    if time.time() - float(session.get("since", 0)) > lifetime:
        session.clear()  # expired, whatever the browser kept
        return
    user = store.current.user(name)
    # A changed password (or a removed user) ends every session made with the old one.
    if user is None or not hmac.compare_digest(
        str(session.get("auth", "")), fingerprint(user.password_hash)
    ):
        session.clear()
        return
    g.user = user


def check() -> Response | None:
    g.started = time.perf_counter()
    _load_user()
    view = _view()
    if request.endpoint in PUBLIC or getattr(view, "public", False) or view is None:
        if request.method in MUTATING:
            csrf.protect()
        return None
    if g.user is None:
        if request.method in MUTATING or request.headers.get("X-Requested-With") == "fetch":
            abort(401)
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    if request.method in MUTATING:
        csrf.protect()
        if g.user.role != "admin" and not getattr(view, "viewer_may_post", False):
            abort(403)
    elif g.user.role != "admin" and getattr(view, "admin_only", False):
        abort(403)
    return None


def audit(response: Response) -> Response:
    if request.method not in MUTATING or request.endpoint == "auth.login":
        return response
    status = response.status_code
    outcome = "ok" if status < 400 else "refused" if status < 500 else "failed"
    user = g.get("user")
    target = g.get("audit_target") or ", ".join(
        f"{k}={v}" for k, v in (request.view_args or {}).items()
    )
    store.current.add_audit(
        user.name if user else "(anonymous)",
        request.endpoint or request.path[:64],
        target=str(target)[:500],
        outcome=outcome,
        detail=str(g.get("audit_detail") or (f"HTTP {status}" if status >= 400 else ""))[:500],
        address=request.remote_addr or "",
    )
    return response


def headers(response: Response) -> Response:
    started = g.get("started")
    if started is not None:  # the server's own time, for the browser's tools and bench/web
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    # same-origin: the CSRF check wants a Referer of this site on POSTs under HTTPS.
    response.headers["Referrer-Policy"] = "same-origin"
    if response.mimetype == "text/html":
        response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    app.before_request(check)
    app.after_request(audit)
    app.after_request(headers)
    from clusterai_runner.web import errors

    app.register_error_handler(CSRFError, errors.csrf_failed)
    for code in (400, 401, 403, 404, 405, 413, 500, 502, 503):
        app.register_error_handler(code, errors.page)
