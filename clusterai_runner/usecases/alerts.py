"""Alerts and silences, through Alertmanager's API v2: what fires, what is silenced, a
new silence for a set of label matchers, and a silence expired."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from clusterai_runner.adapters.http import JsonApi
from clusterai_runner.errors import UsageError

SILENCE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
MAX_SILENCE = timedelta(days=30)


@dataclass(frozen=True)
class Alert:
    name: str
    state: str  # active, suppressed
    severity: str
    instance: str
    summary: str
    starts_at: str
    labels: dict[str, str]
    silenced_by: list[str]


@dataclass(frozen=True)
class Silence:
    id: str
    state: str  # active, pending, expired
    matchers: list[str]
    created_by: str
    comment: str
    starts_at: str
    ends_at: str


def alerts(api: JsonApi) -> list[Alert]:
    wanted = {"active": "true", "silenced": "true", "inhibited": "true", "unprocessed": "true"}
    found = api.get("/api/v2/alerts", wanted) or []
    result = []
    for raw in found:
        labels = {str(k): str(v) for k, v in (raw.get("labels") or {}).items()}
        annotations = raw.get("annotations") or {}
        status = raw.get("status") or {}
        result.append(Alert(
            labels.get("alertname", ""), str(status.get("state", "")),
            labels.get("severity", ""), labels.get("instance", ""),
            str(annotations.get("summary") or annotations.get("description") or ""),
            str(raw.get("startsAt", "")), labels, list(status.get("silencedBy") or []),
        ))  # fmt: skip
    return sorted(result, key=lambda a: (a.state != "active", a.name, a.instance))


def _operator(matcher: dict[str, Any]) -> str:
    equal = matcher.get("isEqual", True)
    if matcher.get("isRegex"):
        return "=~" if equal else "!~"
    return "=" if equal else "!="


def silences(api: JsonApi) -> list[Silence]:
    found = api.get("/api/v2/silences") or []
    result = []
    for raw in found:
        matchers = [f"{m.get('name')}{_operator(m)}{m.get('value')}"
                    for m in raw.get("matchers") or []]  # fmt: skip
        result.append(Silence(
            str(raw.get("id", "")), str((raw.get("status") or {}).get("state", "")), matchers,
            str(raw.get("createdBy", "")), str(raw.get("comment", "")),
            str(raw.get("startsAt", "")), str(raw.get("endsAt", "")),
        ))  # fmt: skip
    order = {"active": 0, "pending": 1, "expired": 2}
    return sorted(result, key=lambda s: (order.get(s.state, 3), s.ends_at))


def silence(
    api: JsonApi, matchers: dict[str, str], hours: float, created_by: str, comment: str
) -> str:
    """Silence the alerts whose labels equal ``matchers`` for ``hours``; the new id."""
    if not matchers:
        raise UsageError("silence", "has no matcher", "name at least one label, e.g. alertname")
    for name, value in matchers.items():
        if not LABEL_NAME.fullmatch(name):
            raise UsageError(f"label {name!r}", "is not a label name", "e.g. alertname")
        if not value:
            raise UsageError(f"label {name}", "has an empty value", "give the value to match")
    if not 0 < hours <= MAX_SILENCE.total_seconds() / 3600:
        raise UsageError(f"duration {hours:g} h", "is out of range", "from a minute to 30 days")
    if not comment.strip():
        raise UsageError("comment", "is empty", "say why the alert is silenced")
    now = datetime.now(UTC)
    body: dict[str, Any] = {
        "matchers": [{"name": n, "value": v, "isRegex": False, "isEqual": True}
                     for n, v in sorted(matchers.items())],
        "startsAt": now.isoformat().replace("+00:00", "Z"),
        "endsAt": (now + timedelta(hours=hours)).isoformat().replace("+00:00", "Z"),
        "createdBy": created_by,
        "comment": comment.strip()[:1000],
    }  # fmt: skip
    answer = api.post("/api/v2/silences", body) or {}
    return str(answer.get("silenceID", ""))


def expire(api: JsonApi, silence_id: str) -> None:
    if not SILENCE_ID.fullmatch(silence_id):
        raise UsageError(f"silence {silence_id!r}", "is not a silence id", "see the list")
    api.delete(f"/api/v2/silence/{silence_id}")
