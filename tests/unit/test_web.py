"""The web app in-process (Flask's test client, a SQLite store in the test's directory):
its access rules over the whole URL map, escaping, the login and its lockout, the pages."""

from __future__ import annotations

import csv
import io
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from markupsafe import escape

from clusterai_runner.adapters.http import JsonApi, ServiceUnavailable
from clusterai_runner.config import Settings
from clusterai_runner.store import Store
from clusterai_runner.usecases import metrics as metrics_usecase
from clusterai_runner.usecases import users
from clusterai_runner.usecases.services import ClusterServices
from clusterai_runner.usecases.status import Gpu, HeldModel, HostStatus
from clusterai_runner.web import create_app, jobs, timeline
from clusterai_runner.web.policy import MUTATING

PASSWORD = "correct horse battery"
HOSTILE = '<script>alert("x")</script>\'"&' + "A" * 3000
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def hostile_hosts() -> list[HostStatus]:
    return [
        HostStatus(
            name=HOSTILE, kind="workers", address="192.0.2.7", reachable=True, inference="down",
            backend="llamacpp", models=[HOSTILE],
            gpus=[Gpu(HOSTILE, 0.5, 2**30, 2**31)],
            problems=[f"{HOSTILE} does not answer"],
        ),
        HostStatus("ctl1", "control", "192.0.2.6", True, "n/a", ""),
    ]  # fmt: skip


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2id with little memory and one pass: the same code, a faster suite."""
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(users, "_hasher", cheap)
    monkeypatch.setattr(users, "_DUMMY", cheap.hash("no such user"))


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    settings = Settings.from_env({"CLUSTERAI_STATE_DIR": str(tmp_path), "HOME": str(tmp_path)})
    made = create_app({
        "CLUSTERAI_SETTINGS": settings,
        "SECRET_KEY": "test-secret-key-" + "x" * 32,
        "CLUSTERAI_STATUS_SOURCE": hostile_hosts,
        "CLUSTERAI_STATUS_INTERVAL": 3600.0,
    })  # fmt: skip
    users.add(settings, "ada", "admin", PASSWORD, store(made))
    users.add(settings, "vic", "viewer", PASSWORD, store(made))
    yield made
    store(made).close()


def store(app: Flask) -> Store:
    found: Store = app.extensions["clusterai_store"]
    return found


def token(client: FlaskClient, path: str = "/login") -> str:
    match = TOKEN.search(client.get(path).text)
    assert match, path
    return match.group(1)


def log_in(client: FlaskClient, name: str, password: str = PASSWORD, **form: str) -> Any:
    """The answer to the login form, sent with the page's CSRF token."""
    data = {"name": name, "password": password, "csrf_token": token(client), **form}
    return client.post("/login", data=data)


def logged_in(app: Flask, name: str) -> tuple[FlaskClient, str]:
    client = app.test_client()
    answer = log_in(client, name)
    assert answer.status_code == 302, answer.text
    return client, token(client, "/account")


def example_path(app: Flask, rule: Any) -> str:
    """The rule's URL with each argument filled with something that exists."""
    values = {name: 1 if "id" in name else "k1" for name in rule.arguments}
    with app.test_request_context():
        from flask import url_for

        return url_for(rule.endpoint, **values)


def mutating_rules(app: Flask) -> list[Any]:
    return [r for r in app.url_map.iter_rules() if set(r.methods or ()) & MUTATING]


def test_every_mutating_route_refuses_no_session_no_csrf_and_a_viewer(app: Flask) -> None:
    rules = mutating_rules(app)
    assert len(rules) >= 7  # login, logout, keys, users, account
    store(app).add_key("k1", "p1", "h" * 64, False, None, None)
    keys_before = store(app).list_keys()
    admin, admin_token = logged_in(app, "ada")
    viewer, viewer_token = logged_in(app, "vic")
    for rule in rules:
        path = example_path(app, rule)
        view = app.view_functions[rule.endpoint]
        public = rule.endpoint == "auth.login"
        anonymous = app.test_client().post(path, data={})
        if public:
            assert anonymous.status_code == 400, path  # no CSRF token
        else:
            assert anonymous.status_code in (302, 401), path
        for sent in ({}, {"csrf_token": "wrong"}):
            assert admin.post(path, data=sent).status_code == 400, (path, sent)
        if not public and not getattr(view, "viewer_may_post", False):
            refused = viewer.post(path, data={"csrf_token": viewer_token, "name": "x"})
            assert refused.status_code == 403, path
    # Nothing changed: the key is still active and no user was added.
    assert store(app).list_keys() == keys_before
    assert {u.name for u in store(app).users()} == {"ada", "vic"}
    assert admin_token  # the admin's session still works
    assert admin.get("/keys/").status_code == 200


def test_every_page_needs_a_login(app: Flask) -> None:
    client = app.test_client()
    for rule in app.url_map.iter_rules():
        if "GET" not in (rule.methods or ()) or rule.endpoint in ("static", "auth.login"):
            continue
        answer = client.get(example_path(app, rule))
        assert answer.status_code == 302, rule.rule
        assert answer.headers["Location"].startswith("/login"), rule.rule
        fetched = client.get(example_path(app, rule), headers={"X-Requested-With": "fetch"})
        assert fetched.status_code == 401, rule.rule


def test_a_viewer_cannot_read_the_accounts_or_the_audit(app: Flask) -> None:
    viewer, _ = logged_in(app, "vic")
    assert viewer.get("/users").status_code == 403
    assert viewer.get("/audit").status_code == 403
    assert viewer.get("/keys/").status_code == 200
    assert "New key" not in viewer.get("/keys/").text


def add_hostile_run(app: Flask) -> int:
    s = store(app)
    run_id = s.start_run(HOSTILE, HOSTILE, HOSTILE)
    s.add_event(run_id, HOSTILE, HOSTILE, "failed", HOSTILE)
    s.add_event(run_id, "ctl1", "Install <b>things</b>", "ok", "")
    s.finish_run(run_id, "failed", 2, {HOSTILE: {"failed": 1}, "ctl1": {"ok": 1}})
    s.add_usage([{
        "at": "2999-01-01T00:00:00+00:00", "key_id": None, "route": HOSTILE[:64],
        "model": HOSTILE[:255], "backend": HOSTILE[:255], "status": 200, "prompt_tokens": 1,
        "completion_tokens": 2, "latency_ms": 5.0, "ttft_ms": 1.0, "cache_hit": False,
    }])  # fmt: skip
    s.add_audit(HOSTILE, HOSTILE, HOSTILE, "ok", HOSTILE, "")
    return run_id


def test_hostile_strings_render_escaped_everywhere(app: Flask) -> None:
    run_id = add_hostile_run(app)
    admin, _ = logged_in(app, "ada")
    pages = ["/", "/fragments/hosts", "/runs/", f"/runs/{run_id}",
             f"/runs/{run_id}/fragments/tail", "/usage/?window=30d&by=model",
             "/usage/?window=30d&by=route", "/audit"]  # fmt: skip
    # The usage record is dated in the future so that every window holds it.
    store(app).add_usage([{
        "at": "2000-01-01T00:00:00+00:00", "key_id": None, "route": "r", "model": "m",
        "backend": "b", "status": 200, "prompt_tokens": 1, "completion_tokens": 1,
        "latency_ms": 1.0, "ttft_ms": None, "cache_hit": False,
    }])  # fmt: skip
    for page in pages:
        answer = admin.get(page)
        assert answer.status_code == 200, page
        assert "<script>alert" not in answer.text, page
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&#39;&#34;&amp;" in answer.text, page
        assert "<b>things</b>" not in answer.text
        if answer.mimetype == "text/html":
            assert "script-src 'self'" in answer.headers["Content-Security-Policy"]
            assert "unsafe-inline" not in answer.headers["Content-Security-Policy"]
        # The only script a page loads is the app's own file.
        assert re.findall(r"<script[^>]*>", answer.text) in (
            [],
            ['<script src="/static/app.js" defer>'],
        ), page


def test_no_template_has_inline_script_or_style() -> None:
    templates = Path(__file__).parents[2] / "clusterai_runner/web/templates"
    for template in templates.glob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), template.name
        assert not re.search(r"\son[a-z]+=", text), template.name  # onclick=...
        assert " style=" not in text and "<style" not in text, template.name


def test_ten_wrong_passwords_lock_the_account_and_are_audited(app: Flask) -> None:
    client = app.test_client()
    csrf = token(client)
    for _ in range(users.LOCK_AFTER):
        wrong = client.post("/login", data={"name": "vic", "password": "nope" * 4,
                                            "csrf_token": csrf})  # fmt: skip
        assert wrong.status_code == 401
        assert "wrong user name or password" in wrong.text
    right = client.post("/login", data={"name": "vic", "password": PASSWORD, "csrf_token": csrf})
    assert right.status_code == 401
    assert "too many wrong passwords" in right.text
    user = store(app).user("vic")
    assert user is not None and user.locked_until
    logins = store(app).audit(user="vic", action="login")
    assert [e.outcome for e in logins] == ["refused"] * (users.LOCK_AFTER + 1)
    assert logins[0].detail == "locked"
    assert "locked until" in logins[1].detail
    # An admin's new password for the account ends the lock.
    users.set_password(app.config["CLUSTERAI_SETTINGS"], "vic", PASSWORD + "!", store(app))
    again = client.post(
        "/login", data={"name": "vic", "password": PASSWORD + "!", "csrf_token": csrf}
    )
    assert again.status_code == 302


def test_an_unknown_user_is_refused_like_a_wrong_password(app: Flask) -> None:
    client = app.test_client()
    answer = log_in(client, "nobody")
    assert answer.status_code == 401
    assert "wrong user name or password" in answer.text
    assert store(app).audit(user="nobody")[0].detail == "no such user"


def test_login_goes_back_to_a_page_of_this_app_only(app: Flask) -> None:
    for target, expected in (("/runs/?status=failed", "/runs/?status=failed"),
                             ("https://evil.example/", "/"), ("//evil.example/", "/")):  # fmt: skip
        client = app.test_client()
        answer = log_in(client, "ada", next=target)
        assert answer.headers["Location"] == expected


def test_the_session_cookie_is_httponly_and_strict_and_secure_under_tls(app: Flask) -> None:
    client = app.test_client()
    answer = log_in(client, "ada")
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    tls = create_app({**app.config, "CLUSTERAI_TLS": True})
    client = tls.test_client()
    answer = log_in(client, "ada")
    assert "Secure" in answer.headers["Set-Cookie"]


def test_a_changed_password_or_an_expired_session_ends_the_session(app: Flask) -> None:
    admin, _ = logged_in(app, "ada")
    assert admin.get("/").status_code == 200
    users.set_password(app.config["CLUSTERAI_SETTINGS"], "ada", PASSWORD + "2", store(app))
    assert admin.get("/").status_code == 302
    short = create_app({**app.config, "PERMANENT_SESSION_LIFETIME": timedelta(seconds=1)})
    client = short.test_client()
    log_in(client, "vic")
    assert client.get("/").status_code == 200
    time.sleep(1.2)
    assert client.get("/").status_code == 302


def test_a_key_is_created_shown_once_listed_and_revoked(app: Flask) -> None:
    admin, csrf = logged_in(app, "ada")
    made = admin.post("/keys/", data={"name": "team-a", "rpm": "60", "csrf_token": csrf})
    assert made.status_code == 201
    (key,) = re.findall(r'<pre id="new-key">(cai_[^<]+)</pre>', made.text)
    listed = admin.get("/keys/").text
    assert "team-a" in listed and key not in listed
    stored = store(app).list_keys()[0]
    assert stored.rpm == 60 and key not in str(stored)
    bad = admin.post("/keys/", data={"name": "x", "rpm": "-3", "csrf_token": csrf})
    assert bad.status_code == 400 and "not a positive whole number" in bad.text
    assert admin.post("/keys/team-a/revoke", data={"csrf_token": csrf}).status_code == 302
    assert store(app).list_keys()[0].revoked_at
    again = admin.post("/keys/team-a/revoke", data={"csrf_token": csrf})
    assert again.status_code == 404
    entries = [(e.action, e.target, e.outcome) for e in store(app).audit(user="ada")]
    assert ("keys.create", "team-a", "ok") in entries
    assert ("keys.revoke", "team-a", "refused") in entries


def test_users_are_added_and_removed_by_an_admin(app: Flask) -> None:
    admin, csrf = logged_in(app, "ada")
    short = admin.post("/users", data={"name": "bob", "role": "viewer", "password": "short",
                                       "csrf_token": csrf})  # fmt: skip
    assert short.status_code == 400 and "shorter than 12" in short.text
    added = admin.post("/users", data={"name": "bob", "role": "viewer", "password": PASSWORD,
                                       "csrf_token": csrf})  # fmt: skip
    assert added.status_code == 302
    assert admin.post("/users/ada/remove", data={"csrf_token": csrf}).status_code == 400
    assert admin.post("/users/bob/remove", data={"csrf_token": csrf}).status_code == 302
    assert admin.post("/users/bob/remove", data={"csrf_token": csrf}).status_code == 404
    assert {u.name for u in store(app).users()} == {"ada", "vic"}


def test_unknown_ids_and_bad_filters_are_pages_with_their_status(app: Flask) -> None:
    admin, _ = logged_in(app, "ada")
    missing = admin.get("/runs/424242")
    assert missing.status_code == 404 and "There is no run 424242" in missing.text
    assert admin.get("/runs/?status=exploded").status_code == 400
    assert admin.get("/usage/?window=1y").status_code == 400
    assert admin.get("/usage/?by=password").status_code == 400
    assert admin.get("/nowhere").status_code == 404


def test_the_overview_shows_every_host_and_the_totals(app: Flask) -> None:
    admin, _ = logged_in(app, "ada")
    app.extensions["clusterai_status"].look()
    page = admin.get("/fragments/hosts").text
    assert page.count('data-host="') == 2
    assert 'data-inference="down"' in page
    assert "<b>0</b>/1 inference servers up" in page
    assert "<b>1</b>/2 hosts healthy" in page
    assert "1.0/2.0 GiB used" in page


def test_the_overview_shows_the_autoscalers_last_actions(app: Flask) -> None:
    admin, _ = logged_in(app, "ada")
    assert "No action yet" in admin.get("/").text
    s = store(app)
    s.record_decision("hold", "load within the targets", {}, outcome="held")
    done = s.record_decision("scale-out", "queue wait p95 <3.1> s", {}, "standby", "s1")
    s.finish_decision(done, "succeeded", seconds=80.5)
    failed = s.record_decision("scale-out", "again", {}, "standby", "s2")
    s.finish_decision(failed, "failed", error="scale_out.yml failed on s2")
    page = admin.get("/").text
    assert page.count("data-decision=") == 2  # the hold is not an action
    assert f'data-decision="{failed}" class="bad"' in page
    assert "queue wait p95 &lt;3.1&gt; s" in page and "80.5 s" in page
    assert "(scale_out.yml failed on s2)" in page


def test_a_run_page_has_a_timeline_row_per_host_and_its_failed_task(app: Flask) -> None:
    run_id = add_hostile_run(app)
    admin, _ = logged_in(app, "ada")
    page = admin.get(f"/runs/{run_id}").text
    assert len(re.findall(r'<rect [^>]*class="bar failed"', page)) == 1
    assert len(re.findall(r'<rect [^>]*class="bar ok"', page)) == 1
    assert "Failed tasks" in page


def test_a_running_runs_tail_brings_only_what_is_new(app: Flask) -> None:
    s = store(app)
    run_id = s.start_run("site.yml", "inv")
    s.add_event(run_id, "w1", "first", "ok", "")
    admin, _ = logged_in(app, "ada")
    page = admin.get(f"/runs/{run_id}").text
    (after,) = re.findall(r'data-append="[^"]+" data-after="(\d+)"', page)
    s.add_event(run_id, "w1", "second", "changed", "")
    tail = admin.get(f"/runs/{run_id}/fragments/tail?after={after}").text
    assert "second" in tail and "first" not in tail and "data-done" not in tail
    s.finish_run(run_id, "successful", 0, {"w1": {"ok": 1, "changed": 1}})
    assert "data-done" in admin.get(f"/runs/{run_id}/fragments/tail?after={after}").text


def test_usage_is_summed_by_group_and_exported_as_csv(app: Flask) -> None:
    store(app).add_key("team-a", "p1", "h" * 64, False, None, None)
    key_id = store(app).list_keys()[0].id
    rows = [{
        "at": "2999-01-01T00:00:00+00:00", "key_id": key_id if i % 2 else None, "route": "r",
        "model": "=cmd|' /C calc'!A0" if i < 2 else "smollm2", "backend": "b",
        "status": 500 if i == 0 else 200, "prompt_tokens": 10, "completion_tokens": 20,
        "latency_ms": float(i), "ttft_ms": None, "cache_hit": i == 3,
    } for i in range(10)]  # fmt: skip
    store(app).add_usage(rows)
    admin, _ = logged_in(app, "ada")
    page = admin.get("/usage/?window=1h&by=key").text
    assert 'data-group="team-a"' in page and 'data-group="(no key)"' in page
    exported = admin.get("/usage/csv?window=1h&by=model")
    assert exported.mimetype == "text/csv"
    table = list(csv.DictReader(io.StringIO(exported.text)))
    assert {r["group"] for r in table} == {"'=cmd|' /C calc'!A0", "smollm2"}
    total = sum(int(r["requests"]) for r in table)
    assert total == 10
    assert sum(int(r["errors"]) for r in table) == 1


def test_a_timeline_bar_runs_from_the_hosts_previous_task_to_its_own_end() -> None:
    from clusterai_runner.store import Event, Run

    start, end = "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:10+00:00"
    run = Run(1, "site.yml", "inv", "", start, end, "successful", 0, {"a": {}, "b": {}, "c": {}})
    events = [
        Event("a", "one", "ok", "", "2026-01-01T00:00:02+00:00"),
        Event("b", "one", "changed", "", "2026-01-01T00:00:04+00:00"),
        Event("a", "two", "failed", "boom", "2026-01-01T00:00:05+00:00"),
    ]
    built = timeline.build(run, events)
    assert built.hosts == ["a", "b", "c"]
    assert built.duration_s == 10
    (first, second), (only,), () = (bars for _, bars in built.rows())
    assert (first.start_s, first.end_s, second.start_s, second.end_s) == (0, 2, 2, 5)
    assert (only.start_s, only.end_s) == (0, 4)
    assert second.x == pytest.approx(200) and second.width == pytest.approx(300)


class FakeApi(JsonApi):
    """A stand-in for one service that answers with what the real one sends (Alertmanager's
    API v2, Prometheus's query_range, the gateway's admin API), and records each call."""

    def __init__(self, name: str, answers: dict[tuple[str, str], Any], down: bool = False):
        super().__init__(name, "https://192.0.2.6:1")
        object.__setattr__(self, "answers", answers)
        object.__setattr__(self, "calls", [])
        object.__setattr__(self, "down", down)

    def _call(self, method: str, path: str, body: Any) -> Any:
        self.calls.append((method, path, body))  # type: ignore[attr-defined]
        if self.down:  # type: ignore[attr-defined]
            raise ServiceUnavailable(self.name, "does not answer at https://192.0.2.6:1 (refused)")
        return self.answers.get((method, path.split("?")[0]))  # type: ignore[attr-defined]


SILENCE = "6a4f9f8e-2b1c-4d3e-9f00-123456789abc"
ALERTMANAGER = {
    ("GET", "/api/v2/alerts"): [{
        "labels": {"alertname": "InferenceDown", "instance": HOSTILE, "severity": "critical"},
        "annotations": {"summary": HOSTILE}, "startsAt": "2026-12-06T00:00:00Z",
        "status": {"state": "active", "silencedBy": [], "inhibitedBy": []},
    }],
    ("GET", "/api/v2/silences"): [{
        "id": SILENCE, "status": {"state": "active"}, "createdBy": "ada", "comment": HOSTILE,
        "startsAt": "2026-12-06T00:00:00Z", "endsAt": "2026-12-06T02:00:00Z",
        "matchers": [{"name": "alertname", "value": "InferenceDown", "isRegex": False,
                      "isEqual": True}],
    }],
    ("POST", "/api/v2/silences"): {"silenceID": SILENCE},
}  # fmt: skip
GATEWAY = {
    ("GET", "/admin/backends"): {"backends": [{
        "name": "worker1", "url": "http://192.0.2.7:8080", "api": "openai", "healthy": True,
        "draining": False, "outstanding": 0, "max_concurrency": 4, "models": [HOSTILE],
        "loaded": [], "requests": 12, "failures": 0, "last_error": HOSTILE, "fallback": False,
    }], "waiting": 0, "cache": {"hits": 3, "misses": 9}, "usage_records_written": 12,
        "usage_records_spooled": 0},
    ("POST", "/admin/backends/worker1/drain"): {"idle": True},
    ("POST", "/admin/backends/worker1/undrain"): {},
}  # fmt: skip
PROMETHEUS = {
    ("GET", "/api/v1/query_range"): {"status": "success", "data": {"resultType": "matrix",
        "result": [{"metric": {"instance": "worker1"},
                    "values": [[1000, "10"], [1015, "20"], [5000, "30"]]}]}},
}  # fmt: skip


def with_services(app: Flask, down: bool = False) -> ClusterServices:
    made = ClusterServices(FakeApi("Prometheus", PROMETHEUS, down),
                           FakeApi("Alertmanager", ALERTMANAGER, down),
                           FakeApi("the gateway", GATEWAY, down), "ctl1")  # fmt: skip
    app.extensions["clusterai_services"].source = lambda: made
    app.extensions["clusterai_services"].value = None
    return made


def test_alerts_are_listed_silenced_and_a_silence_expired(app: Flask) -> None:
    made = with_services(app)
    admin, csrf = logged_in(app, "ada")
    page = admin.get("/alerts/").text
    assert 'data-alert="InferenceDown" data-state="active"' in page
    assert f'data-silence="{SILENCE}" data-state="active"' in page
    assert "alertname=InferenceDown" in page
    assert "<script>alert" not in page
    form = {"alertname": "InferenceDown", "instance": "worker1", "hours": "2",
            "comment": "maintenance", "csrf_token": csrf}  # fmt: skip
    assert admin.post("/alerts/silences", data=form).status_code == 302
    method, path, body = made.alertmanager.calls[-1]  # type: ignore[attr-defined]
    assert (method, path, body["createdBy"], body["comment"]) == (
        "POST", "/api/v2/silences", "ada", "maintenance")  # fmt: skip
    assert {m["name"]: m["value"] for m in body["matchers"]} == {
        "alertname": "InferenceDown", "instance": "worker1"}  # fmt: skip
    no_reason = admin.post("/alerts/silences", data={**form, "comment": " "})
    assert no_reason.status_code == 400 and "say why" in no_reason.text
    too_long = admin.post("/alerts/silences", data={**form, "hours": "9999"})
    assert too_long.status_code == 400
    assert (
        admin.post(f"/alerts/silences/{SILENCE}/expire", data={"csrf_token": csrf}).status_code
        == 302
    )
    assert made.alertmanager.calls[-1][:2] == ("DELETE", f"/api/v2/silence/{SILENCE}")  # type: ignore[attr-defined]
    bad = admin.post("/alerts/silences/..%2Fstatus/expire", data={"csrf_token": csrf})
    assert bad.status_code in (400, 404)
    entries = [(e.action, e.outcome) for e in store(app).audit(user="ada")]
    assert ("alerts.silence", "ok") in entries and ("alerts.expire", "ok") in entries


def test_a_dead_alertmanager_or_prometheus_blanks_its_panel_not_the_app(app: Flask) -> None:
    with_services(app, down=True)
    admin, csrf = logged_in(app, "ada")
    alerts = admin.get("/alerts/")
    assert alerts.status_code == 200
    assert "Alertmanager: does not answer" in alerts.text
    host = admin.get("/hosts/ctl1")
    assert host.status_code == 200 and "Charts: Prometheus: does not answer" in host.text
    assert admin.get("/gateway/").status_code == 200
    failed = admin.post("/alerts/silences", data={"alertname": "x", "hours": "1",
                                                  "comment": "c", "csrf_token": csrf})  # fmt: skip
    assert failed.status_code == 502
    assert admin.get("/").status_code == 200


def test_the_gateway_page_lists_backends_and_drains_one(app: Flask) -> None:
    made = with_services(app)
    admin, csrf = logged_in(app, "ada")
    page = admin.get("/gateway/").text
    assert 'data-backend="worker1"' in page and "<script>alert" not in page

    def act(path: str) -> int:
        return int(admin.post(f"/gateway/backends/{path}", data={"csrf_token": csrf}).status_code)

    assert act("worker1/drain") == 302
    calls = made.gateway.calls  # type: ignore[union-attr]
    assert calls[-1] == ("POST", "/admin/backends/worker1/drain", {"wait_s": 30.0})
    assert act("worker1/undrain") == 302
    assert act("worker1/explode") == 404
    assert act("bad!name/drain") == 400


def test_a_host_page_draws_its_charts_and_breaks_lines_at_gaps(app: Flask) -> None:
    with_services(app)
    admin, _ = logged_in(app, "ada")
    page = admin.get("/hosts/ctl1?window=1h").text
    assert page.count('data-chart="') == 5
    # Two points 15 s apart, then one an hour later: two pieces of line per chart.
    assert len(re.findall(r"<polyline ", page)) == 10
    assert admin.get("/hosts/ctl1?window=1y").status_code == 400


def test_without_an_inventory_the_monitoring_pages_say_so(app: Flask) -> None:
    admin, _ = logged_in(app, "ada")
    page = admin.get("/alerts/").text
    assert "no inventory is configured" in page


def test_passwords_are_stored_as_argon2id_with_the_default_cost(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.undo()  # the real hasher
    users.add(app.config["CLUSTERAI_SETTINGS"], "eve", "viewer", PASSWORD, store(app))
    user = store(app).user("eve")
    assert user is not None and PASSWORD not in user.password_hash
    assert user.password_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")


def test_jobs_refuse_bad_input_and_a_second_change_while_one_runs(
    app: Flask, tmp_path: Path
) -> None:
    admin, csrf = logged_in(app, "ada")
    no_inventory = admin.post("/jobs/scale-out", data={"name": "gpu3", "csrf_token": csrf})
    assert no_inventory.status_code == 400 and "no inventory is configured" in no_inventory.text
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("workers:\n  hosts: {}\n")
    app.config["CLUSTERAI_INVENTORY"] = inventory
    bad_name = admin.post("/jobs/scale-out", data={"name": "gpu 3!", "csrf_token": csrf})
    assert bad_name.status_code == 400 and "not a valid inventory host name" in bad_name.text
    bad_port = admin.post("/jobs/scale-out", data={"name": "gpu3", "port": "70000",
                                                   "csrf_token": csrf})  # fmt: skip
    assert bad_port.status_code == 400 and "is not a port" in bad_port.text
    no_hosts = admin.post("/jobs/scale-in", data={"names": " ", "csrf_token": csrf})
    assert no_hosts.status_code == 400 and "no host named" in no_hosts.text
    assert inventory.read_text() == "workers:\n  hosts: {}\n"

    release = threading.Event()

    def work(job: jobs.Job) -> str:
        job.say("step one")
        release.wait(10)
        return "canceled" if job.cancel.canceled else "successful"

    running = app.extensions["clusterai_jobs"].start("scale-in", "w9", "ada", work)
    busy = admin.post("/jobs/scale-out", data={"name": "gpu3", "csrf_token": csrf})
    assert busy.status_code == 409 and "is still running" in busy.text
    page = admin.get(f"/jobs/{running.id}").text
    assert "step one" in page and 'data-append="/jobs/' in page
    assert admin.post(f"/jobs/{running.id}/cancel", data={"csrf_token": csrf}).status_code == 302
    assert running.cancel.canceled
    release.set()
    deadline = time.monotonic() + 10
    while running.status == "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    tail = admin.get(f"/jobs/{running.id}/fragments/log?after=1").text
    assert "step one" not in tail and "cancel asked by ada" in tail
    assert "data-done" in tail and "ended: canceled" in tail
    assert admin.get("/jobs/999").status_code == 404
    audited = [(e.action, e.outcome) for e in store(app).audit(user="ada")]
    assert ("job.scale-in", "canceled") in audited


def test_under_https_a_post_needs_a_referer_of_this_site(app: Flask) -> None:
    tls = create_app({**app.config, "CLUSTERAI_TLS": True})
    client = tls.test_client()
    page = client.get("/login", base_url="https://ctl.example")
    assert page.headers["Referrer-Policy"] == "same-origin"  # so browsers send it
    csrf = TOKEN.search(page.text).group(1)  # type: ignore[union-attr]
    form = {"name": "ada", "password": PASSWORD, "csrf_token": csrf}
    bare = client.post("/login", data=form, base_url="https://ctl.example")
    assert bare.status_code == 400 and "referrer header is missing" in bare.text
    elsewhere = client.post("/login", data=form, base_url="https://ctl.example",
                            headers={"Referer": "https://evil.example/"})  # fmt: skip
    assert elsewhere.status_code == 400
    same = client.post("/login", data=form, base_url="https://ctl.example",
                       headers={"Referer": "https://ctl.example/login"})  # fmt: skip
    assert same.status_code == 302


def test_on_the_control_host_the_app_imports_only_what_the_web_role_installs() -> None:
    import subprocess
    import sys

    role = Path(__file__).parents[2] / "roles/web/files/requirements.txt"
    pinned = {
        line.split("==")[0].lower().replace("-", "_")
        for line in role.read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    # Import names of the pinned distributions that differ from them.
    names = {"pyyaml": "yaml", "flask_wtf": "flask_wtf", "argon2_cffi": "argon2",
             "argon2_cffi_bindings": "_argon2_cffi_bindings"}  # fmt: skip
    allowed = {names.get(p, p) for p in pinned} | {"clusterai_runner", "_cffi_backend"}
    code = (
        "import sys, clusterai_runner.web, clusterai_runner.web.__main__,"
        " clusterai_runner.web.server, clusterai_runner.usecases.users;"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules}"
        " - set(sys.stdlib_module_names))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)  # fmt: skip
    imported = {m.lower() for m in done.stdout.split() if not m.startswith("_") or m in allowed}
    assert imported - {a.lower() for a in allowed} - {"cython_runtime"} == set()


def test_the_hosts_as_the_control_hosts_prometheus_sees_them() -> None:
    from clusterai_runner.usecases.status import from_prometheus

    def vector(*rows: tuple[dict[str, str], str]) -> dict[str, Any]:
        return {"data": {"result": [{"metric": m, "value": [0, v]} for m, v in rows]}}

    answers = {
        'up{job="node"}': vector(
            ({"instance": "ctl1", "role": "control", "address": "192.0.2.6"}, "1"),
            ({"instance": "worker1", "role": "worker", "address": "192.0.2.7"}, "1"),
            ({"instance": "worker2", "role": "worker", "address": "192.0.2.8"}, "0"),
        ),
        'probe_success{job="inference"}': vector(
            ({"instance": "worker1", "backend": "llamacpp"}, "1"),
            ({"instance": "worker2", "backend": "llamacpp"}, "0"),
        ),
        "nvidia_smi_utilization_gpu_ratio": vector(({"instance": "worker1", "uuid": "u1"}, "0.5")),
        "nvidia_smi_gpu_info": vector(({"instance": "worker1", "uuid": "u1", "name": "L4"}, "1")),
    }

    class Prometheus(FakeApi):
        def _call(self, method: str, path: str, body: Any) -> Any:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)["query"][0]
            return answers.get(query, vector())

    gateway = FakeApi("the gateway", GATEWAY)
    hosts = from_prometheus(Prometheus("Prometheus", {}), gateway)
    assert [(h.name, h.kind, h.reachable, h.inference) for h in hosts] == [
        ("ctl1", "control", True, "n/a"),
        ("worker1", "workers", True, "up"),
        ("worker2", "workers", False, "down"),
    ]
    worker1 = hosts[1]
    assert worker1.address == "192.0.2.7" and worker1.models == [HOSTILE]
    assert [(g.name, g.utilization) for g in worker1.gpus] == [("L4", 0.5)]
    assert hosts[0].healthy and worker1.healthy and len(hosts[2].problems) == 2
    down = from_prometheus(Prometheus("Prometheus", {}), FakeApi("the gateway", {}, down=True))
    assert down[1].models == []  # a dead gateway leaves the models out, not the hosts


def test_the_overview_shows_alerts_firing_the_gateways_rates_and_gpu_temperatures(
    app: Flask,
) -> None:
    made = with_services(app)
    rates = {"requests_per_s": "2.5", "tokens_per_s": "120", "queue": "3", "cache_hit_rate": "0.25"}

    class Prometheus(FakeApi):
        def _call(self, method: str, path: str, body: Any) -> Any:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)["query"][0]
            name = next(k for k, q in metrics_usecase.GATEWAY_RATES.items() if q == query)
            return {"data": {"result": [{"metric": {}, "value": [0, rates[name]]}]}}

    both = ClusterServices(Prometheus("Prometheus", {}), made.alertmanager, made.gateway, "ctl1")
    app.extensions["clusterai_services"].source = lambda: both
    hot = [HostStatus("w1", "workers", "192.0.2.7", True, "up", "llamacpp",
                      gpus=[Gpu("L4", 0.5, 2**30, 2**31, 71.0)])]  # fmt: skip
    app.extensions["clusterai_status"].source = lambda: hot
    app.extensions["clusterai_status"].look()
    admin, _ = logged_in(app, "ada")
    page = admin.get("/fragments/hosts").text
    assert "<b>1</b> alerts firing" in page and 'data-firing="InferenceDown"' in page
    assert "<b>2.50</b> requests/s, <b>120.0</b> tokens/s, <b>3</b> waiting" in page
    assert "cache hit rate <b>25%</b>" in page
    assert "71 °C" in page
    # Alertmanager and Prometheus down: the hosts stay, the panel says why.
    with_services(app, down=True)
    app.extensions["clusterai_status"].look()
    page = admin.get("/fragments/hosts").text
    assert 'data-host="w1"' in page and "Alertmanager: does not answer" in page


def test_the_models_page_compares_what_each_group_wants_and_pulls_what_is_missing(
    app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "control:\n  hosts:\n    ctl1:\n      ansible_host: 192.0.2.6\n"
        "workers:\n  children:\n"
        "    gpu:\n      hosts:\n"
        "        w1:\n          ansible_host: 192.0.2.7\n"
        "          clusterai_inference_backend: ollama\n"
        "          ollama_models: [llama3.2, 'qwen2.5:7b']\n"
        "    desktop:\n      hosts:\n"
        "        w2:\n          ansible_host: 192.0.2.8\n"
        "          clusterai_inference_backend: llamacpp\n"
    )
    app.config["CLUSTERAI_INVENTORY"] = inventory
    serving = [
        HostStatus("w1", "workers", "192.0.2.7", True, "up", "ollama",
                   models=["llama3.2:latest"], held=["llama3.2:latest", "mistral:latest"],
                   held_models=[HeldModel("llama3.2:latest", "a80c4f17acd5" + "0" * 52,
                                          2_019_393_189, True),
                                HeldModel("mistral:latest", None, None, False)]),
        HostStatus("w2", "workers", "192.0.2.8", True, "down", "llamacpp"),
    ]  # fmt: skip
    app.extensions["clusterai_status"].source = lambda: serving
    app.extensions["clusterai_status"].look()
    admin, _ = logged_in(app, "ada")
    page = admin.get("/models/").text
    w1 = page[page.index('data-models-host="w1"') :].split("</tr>")[0]
    assert "missing: qwen2.5:7b" in w1 and "not wanted: mistral:latest" in w1
    # Each held model's digest (short), size and whether it is loaded, where known.
    held = w1[w1.index('data-model="llama3.2:latest"') :].split("</div>")[0]
    assert "a80c4f17acd5" in held and "2019.4 MB" in held and "loaded" in held
    other = w1[w1.index('data-model="mistral:latest"') :].split("</div>")[0]
    assert "digest unknown" in other and "loaded" not in other
    w2 = page[page.index('data-models-host="w2"') :].split("</tr>")[0]
    assert "smollm2" in w2 and "unknown (its server does not answer)" in w2  # the role's default
    assert page.index("<h2>desktop</h2>") < page.index("<h2>gpu</h2>")
    # The missing model has a pull button (admins only); a pull of a model the inventory
    # does not list for the worker is refused and starts nothing.
    assert 'data-pull="qwen2.5:7b"' in w1 and "data-pull" not in w2
    viewer_page = logged_in(app, "vic")[0].get("/models/").text
    assert "data-pull" not in viewer_page
    admin, csrf = logged_in(app, "ada")
    for form, said in (
        ({"model": "mistral", "hosts": "w1"}, "is not in w1's models (llama3.2, qwen2.5:7b)"),
        ({"model": "qwen2.5:7b", "hosts": "w9"}, "'w9': is not a worker of"),
        ({"model": "llama3 ; rm -rf /"}, "is not a model name"),
        ({"model": "gemma"}, "no worker in"),
    ):
        refused = admin.post("/jobs/pull", data={**form, "csrf_token": csrf})
        assert refused.status_code == 400 and str(escape(said)) in refused.text, refused.text
    assert app.extensions["clusterai_jobs"].newest() == []
    # A good one runs the models use case in a job, for the worker named, and links its run.
    from clusterai_runner.usecases import models as models_usecase
    from clusterai_runner.usecases.converge import RunOutcome, RunRecord

    asked: list[tuple[str, list[str] | None]] = []

    def pull(settings: Settings, inventory: Path, model: str, hosts: list[str] | None,
             **_: Any) -> RunRecord:  # fmt: skip
        asked.append((model, hosts))
        return RunRecord(7, RunOutcome("successful", 0, {}, ""))

    monkeypatch.setattr(models_usecase, "pull", pull)
    started = admin.post("/jobs/pull", data={"model": "qwen2.5:7b", "hosts": "w1",
                                             "csrf_token": csrf})  # fmt: skip
    assert started.status_code == 302
    (job,) = app.extensions["clusterai_jobs"].newest()
    deadline = time.monotonic() + 10
    while job.status == "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert asked == [("qwen2.5:7b", ["w1"])] and job.status == "successful" and job.run_id == 7
    assert job.kind == "pull" and job.target == "qwen2.5:7b on w1"


def test_usage_over_time_counts_each_hour_and_breaks_latency_where_none_was_asked(
    app: Flask,
) -> None:
    from datetime import UTC, datetime

    from clusterai_runner.web import usage

    now = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)

    def record(hours_ago: int, latency: float, status: int = 200) -> dict[str, Any]:
        at = (now - timedelta(hours=hours_ago)).isoformat()
        return {"at": at, "key_id": None, "route": "r", "model": "m", "backend": "b",
                "status": status, "prompt_tokens": 1, "completion_tokens": 1,
                "latency_ms": latency, "ttft_ms": None, "cache_hit": False}  # fmt: skip

    store(app).add_usage([record(5, 100.0), record(5, 100.0, 500), record(0, 40.0)])
    with app.test_request_context():
        requests, latency = usage.over_time("24h", now)
    points = dict(requests.series[0].points)
    assert len(points) == 25  # every hour of the window, the current one too
    assert points[(now - timedelta(hours=5)).replace(minute=0).timestamp()] == 2
    assert sum(points.values()) == 3 and sum(dict(requests.series[1].points).values()) == 1
    # Latency only where there were requests; the drawn line breaks between them.
    assert [t for t, _ in latency.series[0].points] == sorted(
        (now - timedelta(hours=h)).replace(minute=0).timestamp() for h in (5, 0)
    )
    from clusterai_runner.web.charts import draw

    assert len(draw(latency, 3600 * 1.5).lines[0][2]) == 2
    page = logged_in(app, "ada")[0].get("/usage/?window=30d").text
    assert 'data-chart="requests"' in page and "Requests per day" in page


def test_the_models_page_shows_each_rollout_with_its_steps(app: Flask) -> None:
    """What `clusterai models rollout` recorded in the store, escaped like anything else."""
    opened = app.extensions["clusterai_store"]
    assert "No rollout yet" in logged_in(app, "vic")[0].get("/models/").text
    done = opened.start_rollout("chat", "smollm2:135m", "smollm2:360m", ["w1", "w2"])
    opened.add_rollout_step(done, "drain", ["w1"], "succeeded")
    opened.add_rollout_step(done, "pull", ["w1"], "succeeded", run_id=3)
    opened.finish_rollout(done, "succeeded", "chat -> smollm2:360m")
    failed = opened.start_rollout("chat", "smollm2:360m", HOSTILE, ["w1"])
    opened.add_rollout_step(failed, "evaluate", ["w1"], "failed", f"{HOSTILE} fails")
    opened.finish_rollout(failed, "failed", "the evaluation gate failed on w1")
    page = logged_in(app, "vic")[0].get("/models/").text
    newest = page[page.index(f'data-rollout="{failed}"') :].split("</details>")[0]
    assert "the evaluation gate failed on w1" in newest and 'class="bad"' in newest
    assert HOSTILE not in page and str(escape(HOSTILE)) in newest
    older = page[page.index(f'data-rollout="{done}"') :].split("</details>")[0]
    assert 'data-step="drain"' in older and 'href="/runs/3"' in older
    assert page.index(f'data-rollout="{failed}"') < page.index(f'data-rollout="{done}"')
