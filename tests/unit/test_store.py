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
