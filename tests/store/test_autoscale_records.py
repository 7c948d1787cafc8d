"""The autoscaler's decisions and memory, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from clusterai_runner.store import Store


def test_decisions_keep_inputs_outcome_and_the_pools_start_time(store_url: str) -> None:
    store = Store.open(store_url)
    inputs = {"signals": {"queue_wait_p95_s": 3.1, "waiting": 4}, "mins": {"standby": 0}}
    held = store.record_decision("hold", "load within the targets", inputs, outcome="held")
    first = store.record_decision("scale-out", "queue wait p95 3.10 s", inputs, "standby", "s1")
    store.finish_decision(first, "succeeded", run_id=7, seconds=80.0)
    second = store.record_decision("scale-out", "queue wait p95 3.10 s", inputs, "standby", "s2")
    store.finish_decision(second, "failed", error="scale_out.yml failed on s2", seconds=12.0)
    third = store.record_decision("scale-out", "again", inputs, "standby", "s1")
    store.finish_decision(third, "succeeded", seconds=100.0)
    found = store.decisions()
    assert [d.id for d in found] == [third, second, first, held]
    assert found[1].outcome == "failed" and found[1].error == "scale_out.yml failed on s2"
    assert found[2].run_id == 7 and found[2].inputs == inputs
    assert [d.id for d in store.decisions(acted=True, limit=2)] == [third, second]
    assert store.decision(second) == found[1] and store.decision(99999) is None
    assert store.start_seconds("standby") == pytest.approx(90.0)
    assert store.start_seconds("desktop") is None
    with pytest.raises(ValueError, match="unknown outcome"):
        store.finish_decision(first, "maybe")


def test_the_loops_memory_is_kept_and_replaced(store_url: str) -> None:
    store = Store.open(store_url)
    assert store.autoscale_memory() == {}
    store.save_autoscale_memory({"pressure_since": 10.0, "failures": {}})
    store.save_autoscale_memory({"pressure_since": None, "failures": {"s1": [1, 70.0]}})
    assert Store.open(store_url).autoscale_memory() == {
        "pressure_since": None,
        "failures": {"s1": [1, 70.0]},
    }
