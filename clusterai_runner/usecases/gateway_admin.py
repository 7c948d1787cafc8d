"""The gateway's backends through its admin API: their state, and a drain or undrain."""

from __future__ import annotations

import re
from typing import Any

from clusterai_runner.adapters.http import JsonApi
from clusterai_runner.errors import UsageError

BACKEND_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def backends(api: JsonApi) -> dict[str, Any]:
    """``{"backends": [{name, url, api, healthy, draining, outstanding, models, loaded,
    requests, failures, last_error, ...}], "waiting", "cache", ...}``."""
    answer: dict[str, Any] = api.get("/admin/backends") or {}
    return answer


def drain(api: JsonApi, name: str, wait_s: float = 30.0) -> dict[str, Any]:
    """Send ``name`` no new request; answer when its requests in flight are done (``idle``)
    or ``wait_s`` has passed."""
    _check(name)
    answer: dict[str, Any] = api.post(f"/admin/backends/{name}/drain", {"wait_s": wait_s}) or {}
    return answer


def undrain(api: JsonApi, name: str) -> dict[str, Any]:
    _check(name)
    answer: dict[str, Any] = api.post(f"/admin/backends/{name}/undrain", {}) or {}
    return answer


def _check(name: str) -> None:
    if not BACKEND_NAME.fullmatch(name):
        raise UsageError(f"backend {name!r}", "is not a backend name", "see the gateway page")
