"""The state store on SQLite and on PostgreSQL: records round-trip, the schema is
versioned, migrated from every earlier version and guarded, and one store serves
several threads and an asyncio loop at once."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from clusterai_runner.errors import ClusterAIError
from clusterai_runner.store import MIGRATIONS, SCHEMA_VERSION, Store, StoreError, metadata
from tests.helpers import in_threads


def raw(url: str) -> sa.Engine:
    """A plain engine on the same database, to look under the store or damage it."""
    return sa.create_engine(url)


def columns(url: str) -> dict[str, list[str]]:
    inspector = sa.inspect(raw(url))
    return {
        t: sorted(c["name"] for c in inspector.get_columns(t)) for t in inspector.get_table_names()
    }


def test_a_run_its_events_and_recap_round_trip(store_url: str) -> None:
    store = Store.open(store_url)
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


def test_hosts_are_put_and_removed(store_url: str) -> None:
    store = Store.open(store_url)
    store.put_host("gpu3", "192.0.2.23", ["workers", "bare_metal"])
    store.put_host("gpu3", "192.0.2.33", ["workers"])
    assert [(h.name, h.address, h.groups) for h in store.hosts()] == [
        ("gpu3", "192.0.2.33", ["workers"])
    ]
    assert store.remove_host("gpu3") is True
    assert store.remove_host("gpu3") is False


def test_host_variables_round_trip(store_url: str) -> None:
    store = Store.open(store_url)
    store.put_host("gpu3", "192.0.2.23", ["workers"], {"ansible_user": "ops", "ansible_port": 2222})
    (host,) = store.hosts()
    assert host.variables == {"ansible_port": 2222, "ansible_user": "ops"}
    assert host.to_json()["vars"] == host.variables


def test_migrations_from_nothing_build_exactly_the_current_schema(store_url: str) -> None:
    Store.open(store_url)
    expected = {t.name: sorted(c.name for c in t.columns) for t in metadata.sorted_tables}
    assert columns(store_url) == expected


def test_version_1_is_frozen_as_clusterai_0_1_wrote_it(store_url: str) -> None:
    engine = raw(store_url)
    with engine.begin() as connection:
        MIGRATIONS[0](connection)
    assert columns(store_url) == {
        "events": ["at", "host", "id", "message", "run_id", "status", "task"],
        "hosts": ["added_at", "address", "groups", "name"],
        "run_hosts": sorted(
            [
                "run_id",
                "host",
                "ok",
                "changed",
                "unreachable",
                "failed",
                "skipped",
                "rescued",
                "ignored",
            ]
        ),
        "runs": sorted(
            [
                "id",
                "playbook",
                "inventory",
                "limit_pattern",
                "started_at",
                "finished_at",
                "status",
                "rc",
            ]
        ),
    }


def test_a_version_1_store_is_migrated_keeping_its_hosts(store_url: str) -> None:
    engine = raw(store_url)
    with engine.begin() as connection:
        connection.execute(sa.text("create table schema_version (version integer not null)"))
        connection.execute(sa.text("insert into schema_version values (1)"))
        MIGRATIONS[0](connection)
        connection.execute(
            sa.text("insert into hosts values ('gpu3', '192.0.2.23', '[\"workers\"]', 'then')")
        )
    store = Store.open(store_url)
    (host,) = store.hosts()
    assert (host.name, host.groups, host.variables) == ("gpu3", ["workers"], {})
    with engine.connect() as connection:
        assert connection.execute(sa.text("select version from schema_version")).all() == [
            (SCHEMA_VERSION,)
        ]
    assert store.list_keys() == []


def test_last_results_hold_each_hosts_latest_run(store_url: str) -> None:
    store = Store.open(store_url)
    first = store.start_run("site.yml", "inv")
    store.finish_run(first, "successful", 0, {"w1": {"ok": 3}, "w2": {"ok": 3}})
    second = store.start_run("scale_out.yml", "inv")
    store.finish_run(second, "failed", 2, {"w2": {"ok": 1, "unreachable": 1}})
    results = store.last_results()
    assert results["w1"][:2] == (first, "site.yml")
    assert results["w2"][:2] == (second, "scale_out.yml")
    assert results["w2"][2]["unreachable"] == 1


def test_opening_twice_keeps_the_data_and_the_version(store_url: str) -> None:
    Store.open(store_url).start_run("site.yml", "inv")
    again = Store.open(store_url)
    assert len(again.runs()) == 1
    with raw(store_url).connect() as connection:
        assert connection.execute(sa.text("select version from schema_version")).all() == [
            (SCHEMA_VERSION,)
        ]


def test_sqlite_stores_are_in_wal_mode(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    Store.open(url)
    with raw(url).connect() as connection:
        assert connection.execute(sa.text("pragma journal_mode")).all() == [("wal",)]


def test_a_store_from_a_newer_clusterai_is_refused_untouched(store_url: str) -> None:
    Store.open(store_url).start_run("site.yml", "inv")
    with raw(store_url).begin() as connection:
        connection.execute(sa.text(f"update schema_version set version = {SCHEMA_VERSION + 1}"))
    before = columns(store_url)
    with pytest.raises(StoreError) as raised:
        Store.open(store_url)
    shown = sa.engine.make_url(store_url).render_as_string(hide_password=True)
    assert str(raised.value) == (
        f"state store {shown}: schema version {SCHEMA_VERSION + 1} was written by a"
        f" newer clusterai (this one knows up to {SCHEMA_VERSION}) (upgrade clusterai; the"
        " store was left untouched)"
    )
    assert raised.value.exit_code == 2 and isinstance(raised.value, ClusterAIError)
    assert columns(store_url) == before
    with raw(store_url).connect() as connection:
        assert connection.execute(sa.text("select count(*) from runs")).scalar() == 1


def test_a_foreign_database_is_refused(store_url: str) -> None:
    with raw(store_url).begin() as connection:
        connection.execute(sa.text("create table accounts (id integer)"))
    with pytest.raises(StoreError, match="it holds tables but no schema version"):
        Store.open(store_url)
    assert list(columns(store_url)) == ["accounts"]


def test_a_bad_url_is_a_clear_error() -> None:
    with pytest.raises(StoreError, match="is not a usable database URL"):
        Store.open("nosuchdb://x")


def test_an_unreachable_server_is_one_store_error_without_the_password() -> None:
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    with pytest.raises(StoreError) as raised:
        Store.open("postgresql+psycopg://ops:s3cret@127.0.0.1:1/clusterai")
    message = str(raised.value)
    assert message.startswith("state store postgresql+psycopg://ops:***@127.0.0.1:1/clusterai: ")
    assert "s3cret" not in message and "\n" not in message
    assert raised.value.exit_code == 2


def test_api_keys_are_kept_hashed_and_revoked_by_name(store_url: str) -> None:
    store = Store.open(store_url)
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
    assert store.put_key("app", "ab12cd34", "f" * 64, False, 60, None) is False
    assert store.put_key("app", "ab12cd34", "f" * 64, True, 60, None) is True
    assert store.revoke_key("app") is True
    assert store.revoke_key("app") is False
    assert store.list_keys(include_revoked=False) == []


def test_usage_records_round_trip(store_url: str) -> None:
    store = Store.open(store_url)
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


def test_a_usage_record_sent_again_is_stored_once(store_url: str) -> None:
    """The gateway sends a batch again when it cannot know whether the store took it."""
    store = Store.open(store_url)
    record = {"at": "t1", "key_id": None, "route": "/v1/completions", "model": "m",
              "backend": "b", "status": 200, "prompt_tokens": 1, "completion_tokens": 1,
              "latency_ms": 1.0, "ttft_ms": None, "cache_hit": False}  # fmt: skip
    batch = [{**record, "record_id": f"{n:032x}"} for n in range(3)]
    assert store.add_usage(batch[:2]) == 2
    assert store.add_usage(batch) == 1
    assert store.add_usage([record, record]) == 2  # records without an id: each is new
    assert sorted(str(r["record_id"]) for r in store.usage()) == sorted(
        [f"{n:032x}" for n in range(3)] + ["None", "None"]
    )


def test_a_write_that_breaks_a_unique_record_is_refused_as_such_and_writes_nothing(
    store_url: str,
) -> None:
    """Not called damaged: the store is sound, and the whole batch is refused."""
    store = Store.open(store_url)
    record = {"at": "t1", "key_id": None, "route": "/v1/completions", "model": "m",
              "backend": "b", "status": 200, "prompt_tokens": 1, "completion_tokens": 1,
              "latency_ms": 1.0, "ttft_ms": None, "cache_hit": False,
              "record_id": "0" * 32}  # fmt: skip
    with pytest.raises(StoreError, match="refused a write that conflicts") as raised:
        store.add_usage([{**record, "record_id": "1" * 32}, record, record])
    assert "damaged" not in str(raised.value) and "retry" in str(raised.value)
    assert store.usage() == []
    assert store.add_usage([record]) == 1


def test_one_store_serves_many_threads_at_once(store_url: str) -> None:
    store = Store.open(store_url)
    run_id = store.start_run("site.yml", "inv")
    start = threading.Barrier(8)

    def work(number: int) -> None:
        start.wait()
        for step in range(25):
            store.add_event(run_id, f"w{number}", f"task {step}", "ok", "")
            store.events(run_id, f"w{number}")

    assert in_threads(work, 8) == []
    assert len(store.events(run_id)) == 8 * 25
    assert {len(store.events(run_id, f"w{n}")) for n in range(8)} == {25}


def test_an_asyncio_loop_calls_the_store_off_the_loop(store_url: str) -> None:
    store = Store.open(store_url)
    loop_threads: set[int] = set()

    async def main() -> list[int]:
        loop_threads.add(threading.get_ident())
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        beat = asyncio.create_task(ticker())
        ids = await asyncio.gather(
            *(store.offload(store.start_run, f"p{n}.yml", "inv") for n in range(20))
        )
        beat.cancel()
        assert ticks > 0  # the loop kept running while the store worked
        return list(ids)

    ids = asyncio.run(main())
    assert sorted(ids) == sorted(r.id for r in store.runs(100))


def usage_record(n: int, **changed: object) -> dict[str, object]:
    return {"at": f"2026-01-01T0{n % 2}:00:{n:02d}+00:00", "key_id": 1 if n < 10 else None,
            "route": "/v1/chat/completions", "model": "m", "backend": "b",
            "status": 503 if n == 0 else 200, "prompt_tokens": 2, "completion_tokens": 3,
            "latency_ms": 40.0 if n < 10 else 400.0, "ttft_ms": 12.0 if n % 2 else None,
            "cache_hit": n == 5, **changed}  # fmt: skip


def test_usage_is_summed_per_hour_with_percentiles_from_buckets(store_url: str) -> None:
    store = Store.open(store_url)
    store.add_key("team-a", "p1", "h" * 64, False, None, None)
    store.add_usage([usage_record(n) for n in range(20)])
    by_key = {r["group"]: r for r in store.usage_summary("2026-01-01", "key")}
    team = by_key["team-a"]
    assert (team["requests"], team["prompt_tokens"], team["completion_tokens"]) == (10, 20, 30)
    assert (team["errors"], team["cache_hits"]) == (1, 1)
    # Ten latencies of 40 ms, all in the bucket (35, 50]: p50 halfway through it, p95 near
    # its top. The five first-token times of 12 ms are in (10, 20].
    assert team["latency_p50_ms"] == pytest.approx(42.5)
    assert team["latency_p95_ms"] == pytest.approx(49.25)
    assert team["ttft_p50_ms"] == pytest.approx(15.0)
    others = by_key["(no key)"]
    assert others["requests"] == 10 and 300 < others["latency_p50_ms"] <= 500
    hours = store.usage_summary("2026-01-01", "hour")
    assert [(r["group"], r["requests"]) for r in hours] == [("2026-01-01T00", 10),
                                                           ("2026-01-01T01", 10)]  # fmt: skip
    assert store.usage_summary("2026-01-01T01:30:00+00:00", "model")[0]["requests"] == 10
    assert store.usage_summary("2027", "model") == []
    # A batch sent again is not counted again; records of a new batch add to the same hour.
    store.add_usage([usage_record(0, record_id="a" * 32)])
    store.add_usage([usage_record(0, record_id="a" * 32), usage_record(2, record_id="b" * 32)])
    assert store.usage_summary("2026-01-01", "day")[0]["requests"] == 22
    with pytest.raises(ValueError):
        store.usage_summary("2026", "password")


def test_the_hourly_sums_of_an_older_store_are_made_from_its_records(store_url: str) -> None:
    store = Store.open(store_url)
    store.add_usage([usage_record(n) for n in range(20)])
    expected = store.usage_summary("2026-01-01", "hour")
    engine = raw(store_url)
    with engine.begin() as db:
        db.execute(sa.text("DROP TABLE usage_hourly"))
        db.execute(sa.text("UPDATE schema_version SET version = 6"))
    assert Store.open(store_url).usage_summary("2026-01-01", "hour") == expected


def test_users_lockout_counting_and_the_audit_trail(store_url: str) -> None:
    store = Store.open(store_url)
    store.add_user("ada", "admin", "$argon2id$hash")
    with pytest.raises(StoreError, match="a user of that name exists"):
        store.add_user("ada", "viewer", "x")
    assert [store.failed_login("ada", 3, "2030-01-01T00:00:00+00:00") for _ in range(3)] == [
        1, 2, 3,
    ]  # fmt: skip
    locked = store.user("ada")
    assert locked is not None
    assert (locked.failed_logins, locked.locked_until) == (0, "2030-01-01T00:00:00+00:00")
    assert store.failed_login("nobody", 3, "x") == 0
    store.good_login("ada")
    user = store.user("ada")
    assert user is not None and user.locked_until is None and user.last_login_at
    assert store.set_password("ada", "$argon2id$new")
    assert not store.set_password("nobody", "x")
    store.add_audit("ada", "login", address="127.0.0.1")
    store.add_audit("ada", "keys.create", "team-a", "refused", "HTTP 400")
    newest, oldest = store.audit()
    assert (newest.action, newest.outcome, oldest.address) == (
        "keys.create",
        "refused",
        "127.0.0.1",
    )
    assert [e.action for e in store.audit(action="login")] == ["login"]
    assert store.remove_user("ada") and not store.remove_user("ada")
    assert store.users() == []
