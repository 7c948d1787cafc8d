"""The gateway's API keys: listed, created (the key is shown once, on the answer to the
form, and never stored in the clear), revoked."""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from clusterai_runner.errors import ClusterAIError
from clusterai_runner.usecases import keys as keys_usecase
from clusterai_runner.web.extensions import settings, store

bp = Blueprint("keys", __name__, url_prefix="/keys")


def _page(status: int = 200, **extra: object) -> tuple[str, int]:
    found = keys_usecase.list_keys(settings(), store.current)
    return render_template("keys.html", keys=found, **extra), status


def _limit(field: str) -> int | None:
    value = request.form.get(field, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ClusterAIError(
            field, f"{value!r} is not a positive whole number", "or leave it empty"
        )
    return int(value)


@bp.get("/")
def index() -> tuple[str, int]:
    return _page()


@bp.post("/")
def create() -> tuple[str, int]:
    name = request.form.get("name", "").strip()
    g.audit_target = name
    try:
        key = keys_usecase.create(
            settings(), name, admin=request.form.get("admin") == "on",
            rpm=_limit("rpm"), tpm=_limit("tpm"), store=store.current,
        )  # fmt: skip
    except ClusterAIError as error:
        g.audit_detail = str(error)
        return _page(400, error=str(error), form=request.form)
    return _page(201, created={"name": name, "key": key})


@bp.post("/<name>/revoke")
def revoke(name: str) -> Response | tuple[str, int]:
    g.audit_target = name
    try:
        keys_usecase.revoke(settings(), name, store.current)
    except ClusterAIError as error:
        g.audit_detail = str(error)
        return _page(404, error=str(error))
    flash(f"Key {name} is revoked; the gateway refuses it from its next key refresh.", "ok")
    return redirect(url_for("keys.index"))
