"""Cloud workers' launch records, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from clusterai_runner.store import LIVE_STATES, Store


def test_an_intent_moves_through_its_states_and_keeps_its_times(store_url: str) -> None:
    store = Store.open(store_url)
    made = store.record_intent(
        "a1b2c3d4e5f60718",
        "cloud-a1b2c3d4",
        "g5.xlarge",
        True,
        1.006,
        host_key="ssh-ed25519 AAAAkey cloud-a1b2c3d4",
    )
    assert (made.state, made.instance_id, made.launched_at, made.spot) == (
        "intent",
        None,
        None,
        True,
    )
    store.update_cloud_instance(
        made.intent, "launched", instance_id="i-0abc", launched_at="2026-12-01T10:00:00+00:00"
    )
    store.update_cloud_instance(made.intent, "running", address="10.0.0.5")
    ended = store.update_cloud_instance(
        made.intent, "terminated", ended_at="2026-12-01T12:30:00+00:00"
    )
    assert (ended.instance_id, ended.address, ended.state) == ("i-0abc", "10.0.0.5", "terminated")
    assert (ended.launched_at, ended.ended_at) == (
        "2026-12-01T10:00:00+00:00",
        "2026-12-01T12:30:00+00:00",
    )
    assert ended.host_key == "ssh-ed25519 AAAAkey cloud-a1b2c3d4"
    assert ended.hourly_usd == pytest.approx(1.006)
    assert store.cloud_instances(LIVE_STATES) == []
    assert [r.intent for r in store.cloud_instances()] == ["a1b2c3d4e5f60718"]


def test_an_unknown_state_or_field_is_refused_and_changes_nothing(store_url: str) -> None:
    store = Store.open(store_url)
    store.record_intent("0000000000000001", "cloud-00000000", "t3.large", False, 0.0832)
    with pytest.raises(ValueError, match="unknown cloud state"):
        store.update_cloud_instance("0000000000000001", "exploded")
    with pytest.raises(ValueError, match="cannot set hourly_usd"):
        store.update_cloud_instance("0000000000000001", "running", hourly_usd=0.0)
    record = store.cloud_instance("0000000000000001")
    assert record is not None and (record.state, record.hourly_usd) == ("intent", 0.0832)
