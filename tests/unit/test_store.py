"""The state store: runs and events round-trip; the schema is versioned and guarded."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from clusterai_runner.store import SCHEMA_VERSION, Store, StoreError


def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


def test_a_run_its_events_and_recap_round_trip(tmp_path: Path) -> None:
    store = Store.open(url(tmp_path))
    run_id = store.start_run("site.yml", "/inv/hosts.yml", "workers")
    store.add_event(run_id, "w1", "Install the package", "changed", "")
    store.add_event(run_id, "w2", "Install the package", "failed", "No package matching 'x'")
    store.finish_run(run_id, "failed", 2, {"w1": {"ok": 3, "changed": 1}, "w2": {"failed": 1}})

    run = store.run(run_id)
    assert run is not None
    assert (run.playbook, run.limit, run.status, run.rc) == ("site.yml", "workers", "failed", 2)
    assert run.recap["w1"]["changed"] == 1 and run.recap["w2"]["failed"] == 1
    assert run.recap["w2"]["ok"] == 0
    assert [(e.host, e.status) for e in store.events(run_id)] == [
        ("w1", "changed"),
        ("w2", "failed"),
    ]
    assert [e.message for e in store.events(run_id, "w2")] == ["No package matching 'x'"]
    assert [r.id for r in store.runs()] == [run_id]
    assert store.run(run_id + 1) is None


def test_hosts_are_put_and_removed(tmp_path: Path) -> None:
    store = Store.open(url(tmp_path))
    store.put_host("gpu3", "192.0.2.23", ["workers", "bare_metal"])
    store.put_host("gpu3", "192.0.2.33", ["workers"])
    assert [(h.name, h.address, h.groups) for h in store.hosts()] == [
        ("gpu3", "192.0.2.33", ["workers"])
    ]
    assert store.remove_host("gpu3") is True
    assert store.remove_host("gpu3") is False


def test_host_variables_round_trip(tmp_path: Path) -> None:
    store = Store.open(url(tmp_path))
    store.put_host("gpu3", "192.0.2.23", ["workers"], {"ansible_user": "ops", "ansible_port": 2222})
    (host,) = store.hosts()
    assert host.variables == {"ansible_port": 2222, "ansible_user": "ops"}
    assert host.to_json()["vars"] == host.variables


def test_a_version_1_store_is_migrated_keeping_its_hosts(tmp_path: Path) -> None:
    # The version 1 schema of the hosts table, as clusterai 0.1 wrote it.
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("create table schema_version (version integer not null)")
        db.execute("insert into schema_version values (1)")
        db.execute(
            "create table hosts (name varchar(255) primary key, address varchar(255) not null,"
            " groups text not null, added_at varchar(32) not null)"
        )
        db.execute("insert into hosts values ('gpu3', '192.0.2.23', '[\"workers\"]', 'then')")
        for table in ("runs (id integer primary key, playbook text not null, inventory text"
                      " not null, limit_pattern text not null, started_at text not null,"
                      " finished_at text, status text not null, rc integer)",
                      "run_hosts (run_id integer, host text, ok integer, changed integer,"
                      " unreachable integer, failed integer, skipped integer, rescued integer,"
                      " ignored integer, primary key (run_id, host))",
                      "events (id integer primary key, run_id integer not null, host text not"
                      " null, task text not null, status text not null, message text not null,"
                      " at text not null)"):  # fmt: skip
            db.execute(f"create table {table}")
    store = Store.open(url(tmp_path))
    (host,) = store.hosts()
    assert (host.name, host.groups, host.variables) == ("gpu3", ["workers"], {})
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("select version from schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_last_results_hold_each_hosts_latest_run(tmp_path: Path) -> None:
    store = Store.open(url(tmp_path))
    first = store.start_run("site.yml", "inv")
    store.finish_run(first, "successful", 0, {"w1": {"ok": 3}, "w2": {"ok": 3}})
    second = store.start_run("scale_out.yml", "inv")
    store.finish_run(second, "failed", 2, {"w2": {"ok": 1, "unreachable": 1}})
    results = store.last_results()
    assert results["w1"][:2] == (first, "site.yml")
    assert results["w2"][:2] == (second, "scale_out.yml")
    assert results["w2"][2]["unreachable"] == 1


def test_opening_twice_keeps_the_data_and_the_version(tmp_path: Path) -> None:
    Store.open(url(tmp_path)).start_run("site.yml", "inv")
    again = Store.open(url(tmp_path))
    assert len(again.runs()) == 1
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("select version from schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert db.execute("pragma journal_mode").fetchone() == ("wal",)


def test_a_store_from_a_newer_clusterai_is_refused_untouched(tmp_path: Path) -> None:
    Store.open(url(tmp_path))
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("update schema_version set version = ?", (SCHEMA_VERSION + 1,))
    before = (tmp_path / "state.db").read_bytes()
    with pytest.raises(StoreError) as raised:
        Store.open(url(tmp_path))
    assert str(raised.value) == (
        f"state store {url(tmp_path)}: schema version {SCHEMA_VERSION + 1} was written by a"
        f" newer clusterai (this one knows up to {SCHEMA_VERSION}) (upgrade clusterai; the"
        " store was left untouched)"
    )
    assert (tmp_path / "state.db").read_bytes() == before


def test_a_foreign_database_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("create table accounts (id integer)")
    with pytest.raises(StoreError, match="it holds tables but no schema version"):
        Store.open(url(tmp_path))


def test_a_bad_url_is_a_clear_error() -> None:
    with pytest.raises(StoreError, match="is not a usable database URL"):
        Store.open("nosuchdb://x")


def test_api_keys_are_kept_hashed_and_revoked_by_name(tmp_path: Path) -> None:
    store = Store.open(url(tmp_path))
    store.add_key("app", "ab12cd34", "f" * 64, False, 60, None)
    with pytest.raises(StoreError, match="a key of that name exists"):
        store.add_key("app", "00000000", "e" * 64, False, None, None)
    (key,) = store.list_keys()
    assert (key.name, key.prefix, key.hash, key.rpm, key.tpm) == (
        "app",
        "ab12cd34",
        "f" * 64,
        60,
        None,
    )
    assert "hash" not in key.to_json()
    assert store.revoke_key("app") is True
    assert store.revoke_key("app") is False
    assert store.list_keys(include_revoked=False) == []


def test_usage_records_round_trip(tmp_path: Path) -> None:
    store = Store.open(url(tmp_path))
    store.add_usage([
        {"at": "t1", "key_id": 1, "route": "/v1/chat/completions", "model": "m", "backend": "b",
         "status": 200, "prompt_tokens": 3, "completion_tokens": 5, "latency_ms": 12.5,
         "ttft_ms": None, "cache_hit": False},
        {"at": "t2", "key_id": None, "route": "/api/chat", "model": "m", "backend": "",
         "status": 200, "prompt_tokens": 0, "completion_tokens": 0, "latency_ms": 0.4,
         "ttft_ms": None, "cache_hit": True},
    ])  # fmt: skip
    newest, oldest = store.usage()
    assert (newest["route"], newest["cache_hit"], oldest["completion_tokens"]) == (
        "/api/chat", True, 5,
    )  # fmt: skip
