"""The gateway as a service: key sync from a list (what the gateway role sends) and the
entry point that imports neither Ansible nor click."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from clusterai_runner.gateway.keys import KeyRing, UsageWriter, digest, new_key, sync_keys
from clusterai_runner.store import Store

REPO = Path(__file__).resolve().parents[2]


def test_sync_keys_creates_updates_and_revokes_and_is_quiet_when_nothing_changes(
    tmp_path: Path,
) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'state.db'}")
    app, ops = new_key()[0], new_key()[0]
    wanted = [{"name": "app", "key": app, "rpm": 60}, {"name": "ops", "key": ops, "admin": True}]
    assert sync_keys(store, wanted) == ["set app", "set ops"]
    assert sync_keys(store, wanted) == []
    ring = KeyRing(store)
    asyncio.run(ring.reload())
    found = ring.find(app)
    assert found is not None and (found.name, found.rpm, found.admin) == ("app", 60, False)
    assert found.hash == digest(app) and app not in json.dumps(
        [k.to_json() for k in store.list_keys()]
    )
    rotated = new_key()[0]
    assert sync_keys(store, [{"name": "app", "key": rotated, "rpm": 60}]) == ["set app"]
    asyncio.run(ring.reload())
    assert ring.find(app) is None and ring.find(rotated) is not None
    assert sync_keys(store, [{"name": "ops", "state": "absent"}]) == ["revoked ops"]
    assert sync_keys(store, [{"name": "ops", "state": "absent"}]) == []
    assert sync_keys(store, [{"name": "ops", "key": ops, "admin": True}]) == ["set ops"]
    tenant = [{"name": "ops", "key": ops, "admin": True, "tenant": True}]
    assert sync_keys(store, tenant) == ["set ops"]
    assert [(k.name, k.tenant) for k in store.list_keys(include_revoked=False)] == [
        ("app", False), ("ops", True),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([{"name": "bad name", "key": "x"}], "needs a name"),
        ([{"name": "app", "key": "sk-123"}], "not in the form cai_"),
        ([{"name": "app"}], "the key is missing"),
        ([{"name": "app", "key": "K", "state": "gone"}], "use present or absent"),
        ([{"name": "app", "key": "K", "rpm": "60"}], "rpm must be a whole number"),
        ([{"name": "app", "key": "K", "rpm": 0}], "rpm must be a whole number"),
        ([{"name": "app", "key": "K", "admin": "yes"}], "admin must be true or false"),
        ([{"name": "app", "key": "K", "tenant": 1}], "tenant must be true or false"),
        ([{"name": "app", "key": "K", "owner": "me"}], "unknown field(s) owner"),
        ([{"name": "app", "key": "K"}, {"name": "app", "key": "K2"}], "appears twice"),
        ([{"name": "a", "key": "K"}, {"name": "b", "key": "K"}], "share a prefix"),
        (["app"], "entry 1: needs a name"),
    ],
)
def test_bad_key_lists_change_nothing_and_never_show_a_key(
    tmp_path: Path, entries: list[object], expected: str
) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'state.db'}")
    key, other = new_key()[0], new_key()[0]
    for entry in entries:
        if isinstance(entry, dict) and entry.get("key") in ("K", "K2"):
            entry["key"] = key if entry["key"] == "K" else other
    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")) as err:
        sync_keys(store, entries)  # type: ignore[arg-type]
    assert key not in str(err.value)
    assert store.list_keys() == []


def test_a_prefix_held_by_another_name_is_refused_before_any_change(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'state.db'}")
    key = new_key()[0]
    sync_keys(store, [{"name": "app", "key": key}])
    other = new_key()[0]
    with pytest.raises(ValueError, match="already used by key 'app'"):
        sync_keys(store, [{"name": "new", "key": other}, {"name": "web", "key": key}])
    assert [k.name for k in store.list_keys()] == ["app"]


def run_service(*args: str, stdin: str = "", state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLUSTERAI_STATE_DIR": str(state)}
    env.pop("CLUSTERAI_STATE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "clusterai_runner.gateway", *args],
        input=stdin, capture_output=True, text=True, env=env, cwd=REPO, check=False,
    )  # fmt: skip


def test_the_service_entry_syncs_keys_and_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    key = new_key()[0]
    done = run_service("sync-keys", stdin=json.dumps([{"name": "app", "key": key}]), state=tmp_path)
    assert (done.returncode, json.loads(done.stdout)) == (0, {"changed": ["set app"]})
    again = run_service(
        "sync-keys", stdin=json.dumps([{"name": "app", "key": key}]), state=tmp_path
    )
    assert json.loads(again.stdout) == {"changed": []}
    for stdin, message in (
        ("{", "error: standard input: not JSON"),
        ('{"name": "app"}', "error: standard input: not a JSON list"),
        ('[{"name": "app", "key": "nope"}]', "error: gateway keys: key 'app': the key is missing"),
    ):
        bad = run_service("sync-keys", stdin=stdin, state=tmp_path)
        assert bad.returncode == 2 and bad.stderr.startswith(message), bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    missing = run_service("serve", "--config", str(tmp_path / "nope.yml"), state=tmp_path)
    assert missing.returncode == 2 and "nope.yml" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_the_service_imports_neither_ansible_nor_click() -> None:
    code = (
        "import sys, clusterai_runner.gateway.__main__, clusterai_runner.gateway.service;"
        "print(sorted({m.split('.')[0] for m in sys.modules}"
        " & {'ansible', 'ansible_runner', 'click', 'ruamel', 'mitogen'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.stdout.strip() == "[]", done.stderr


def test_the_roles_pins_match_the_packages() -> None:
    def pins(path: Path) -> dict[str, str]:
        found = {}
        for line in path.read_text().splitlines():
            name, sep, version = line.partition("==")
            if sep and not line.startswith("#"):
                found[name.strip().lower().replace("_", "-")] = version.split()[0].strip()
        return found

    package = pins(REPO / "requirements.txt")
    locked = pins(REPO / "constraints.txt")
    role = pins(REPO / "roles/gateway/files/requirements.txt")
    for name in ("aiohttp", "pyyaml", "sqlalchemy", "redis"):
        assert role[name] == package[name], name
    # What the gateway pulls in runs the same versions on the control host as in the tests.
    drift = {name: (role[name], locked[name]) for name in role.keys() & locked.keys()}
    assert {name: pair for name, pair in drift.items() if pair[0] != pair[1]} == {}


def test_systemd_hears_ready_on_its_notify_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from clusterai_runner.systemd import notify_systemd

    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        notify_systemd("READY=1")
        assert listener.recv(64) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    notify_systemd("READY=1")  # outside systemd: nothing to tell, no error


def test_records_spooled_while_a_slow_write_is_canceled_all_reach_the_store_once(
    tmp_path: Path,
) -> None:
    """The gateway stops (its writer task is canceled) while a write to the store waits on
    a slow commit, as on a busy disk, and a record came in after that write began: the
    last flush stores the newer record, and the slow write's records are stored once."""
    store = Store.open(f"sqlite:///{tmp_path / 'state.db'}")
    committing = threading.Event()

    def slow_commit(_connection: object) -> None:
        committing.set()
        time.sleep(0.5)

    def record(n: int) -> dict[str, object]:
        return {"model": "m", "backend": "b", "prompt_tokens": 1, "completion_tokens": 1,
                "ttft_ms": None, "cache_hit": False, "key_id": None,
                "route": "/v1/chat/completions", "status": 200, "latency_ms": n}  # fmt: skip

    async def stop_mid_write() -> UsageWriter:
        writer = UsageWriter(store, tmp_path / "spool", every=0.05)
        writer.add(record(1))
        task = asyncio.create_task(writer.run())
        assert await asyncio.to_thread(committing.wait, 10)
        writer.add(record(2))
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return writer

    sa.event.listen(sa.engine.Engine, "commit", slow_commit)
    try:
        writer = asyncio.run(stop_mid_write())
    finally:
        sa.event.remove(sa.engine.Engine, "commit", slow_commit)
    assert sorted(r["latency_ms"] for r in store.usage()) == [1, 2]
    assert writer.pending() == 0
