"""Error pages: what went wrong, in words, with the right status, inside the normal
layout so the rest of the app stays a click away."""

from __future__ import annotations

from flask import render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

MESSAGES = {
    400: "The request was not understood.",
    401: "Log in first.",
    403: "Your account may not do this: it needs the admin role.",
    404: "There is nothing here.",
    405: "This page does not take that method.",
    413: "The request is too large.",
    500: "Something failed on the server; the audit log and the service's journal say more.",
}


def page(error: HTTPException) -> tuple[str, int]:
    code = error.code or 500
    message = error.description if code == 404 and error.description else MESSAGES.get(code, "")
    if code == 404 and error.description and error.description.startswith("The requested URL"):
        message = MESSAGES[404]
    if request.headers.get("X-Requested-With") == "fetch":
        return message, code
    return render_template("error.html", code=code, message=message), code


def csrf_failed(error: CSRFError) -> tuple[str, int]:
    message = (
        f"The form's security token is missing or wrong ({error.description}). "
        "Reload the page and send it again."
    )
    return render_template("error.html", code=400, message=message), 400
