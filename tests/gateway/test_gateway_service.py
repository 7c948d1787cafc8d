"""The gateway as a service, on the process the CLI starts (what the gateway role's unit
runs) over the stand-in backend: systemd's notify protocol and watchdog, and usage
records that survive a ``kill -9`` and a locked store."""

from __future__ import annotations

import json
import socket
import sqlite3
import time
import urllib.request
from pathlib import Path

from clusterai_runner.gateway.keys import create_key
from clusterai_runner.store import Store
from tests.gateway.conftest import Gateway, start_gateway, start_stand_in, stop
from tests.helpers import wait_for

BODY = b'{"model": "stand-in", "messages": [{"role": "user", "content": "hi"}]}'


def chat(gateway: Gateway, key: str) -> int:
    request = urllib.request.Request(
        gateway.url + "/v1/chat/completions", data=BODY,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                 "Cache-Control": "no-cache"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as answer:
        return int(answer.status)


def keyed_state(directory: Path) -> tuple[Path, str]:
    state = directory / "state"
    state.mkdir()
    store = Store.open(f"sqlite:///{state / 'state.db'}")
    key = create_key(store, "app")
    store.close()
    return state, key


def stored(state: Path) -> list[dict[str, object]]:
    store = Store.open(f"sqlite:///{state / 'state.db'}")
    try:
        return store.usage(limit=100_000)
    finally:
        store.close()


def test_it_tells_systemd_when_it_is_ready_and_feeds_the_watchdog(tmp_path: Path) -> None:
    """As systemd runs a Type=notify unit with WatchdogSec=: READY=1 once it listens,
    then WATCHDOG=1 every half of WATCHDOG_USEC (here 0.4 s, so every 0.2 s)."""
    notify = tmp_path / "notify"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify))
    listener.settimeout(20)
    backend = start_stand_in(tmp_path)
    gateway = start_gateway(
        [backend], tmp_path, env={"NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "400000"}
    )
    try:
        assert listener.recv(4096) == b"READY=1"
        started, pings = time.monotonic(), 0
        while pings < 5:
            assert listener.recv(4096) == b"WATCHDOG=1"
            pings += 1
        assert time.monotonic() - started < 5
    finally:
        stop(gateway.process)
        stop(backend.process)
        listener.close()


def test_a_kill_9_right_after_50_answers_loses_none_of_their_usage_records(
    tmp_path: Path,
) -> None:
    state, key = keyed_state(tmp_path)
    backend = start_stand_in(tmp_path)
    try:
        auth = {"enabled": True, "refresh_s": 0.5}
        gateway = start_gateway([backend], tmp_path, state, auth=auth)
        try:
            assert [chat(gateway, key) for _ in range(50)] == [200] * 50
        finally:
            gateway.process.kill()  # SIGKILL: no flush, no cleanup
            gateway.process.wait(timeout=20)
        again = start_gateway([backend], tmp_path, state, auth=auth)
        try:
            wait_for(lambda: len(stored(state)) >= 50, 20, "the spooled records to be stored")
            assert again.admin("GET", "/admin/backends")["usage_records_spooled"] == 0
        finally:
            stop(again.process)
    finally:
        stop(backend.process)
    records = stored(state)
    assert len(records) == 50 and len({r["record_id"] for r in records}) == 50
    assert {(r["route"], r["status"], r["model"]) for r in records} == {
        ("/v1/chat/completions", 200, "stand-in")
    }


def test_a_store_locked_for_10_s_loses_no_usage_record(tmp_path: Path) -> None:
    """The store refuses the gateway's writes for 10 s (another program holds SQLite's
    write lock): the records wait in the spool and are stored when the lock goes."""
    state, key = keyed_state(tmp_path)
    backend = start_stand_in(tmp_path)
    gateway = start_gateway([backend], tmp_path, state, auth={"enabled": True})
    try:
        assert chat(gateway, key) == 200
        wait_for(lambda: len(stored(state)) == 1, 20, "the first record to be stored")
        locker = sqlite3.connect(state / "state.db", isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        locked = time.monotonic()
        try:
            assert [chat(gateway, key) for _ in range(20)] == [200] * 20
            time.sleep(7)  # past the store's 5 s busy timeout: at least one write failed
            assert gateway.admin("GET", "/admin/backends")["usage_records_spooled"] == 20
            time.sleep(max(0.0, 10 - (time.monotonic() - locked)))
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        wait_for(lambda: len(stored(state)) == 21, 30, "the spooled records to be stored")
    finally:
        stop(gateway.process)
        stop(backend.process)
    log = gateway.log.read_text()
    assert "writing usage records to the store failed" in log and "retried every" in log
    assert "reach the store again" in log and "dropped" not in log
    assert json.dumps(stored(state)).count('"status": 200') == 21
