"""Model rollouts and their steps, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from clusterai_runner.store import Store


def test_a_rollout_keeps_its_steps_in_order_and_how_it_ended(store_url: str) -> None:
    store = Store.open(store_url)
    first = store.start_rollout("chat", "smollm2:135m", "smollm2:360m", ["w1", "w2", "w3"])
    store.add_rollout_step(first, "drain", ["w1"], "succeeded")
    store.add_rollout_step(first, "pull", ["w1"], "succeeded", run_id=4)
    store.add_rollout_step(first, "evaluate", ["w1"], "failed", "capital: no 'Paris'")
    store.finish_rollout(first, "failed", "the evaluation failed on w1")
    second = store.start_rollout("chat", "smollm2:135m", "smollm2:1.7b", ["w1"])
    assert [r.id for r in store.rollouts()] == [second, first]
    done = store.rollout(first)
    assert done is not None and done.status == "failed"
    assert done.reason == "the evaluation failed on w1"
    assert done.hosts == ["w1", "w2", "w3"] and done.finished_at is not None
    steps = store.rollout_steps(first)
    assert [(s.step, s.hosts, s.outcome, s.run_id) for s in steps] == [
        ("drain", ["w1"], "succeeded", None),
        ("pull", ["w1"], "succeeded", 4),
        ("evaluate", ["w1"], "failed", None),
    ]
    assert steps[2].detail == "capital: no 'Paris'" and steps[2].to_json()["rollout_id"] == first
    running = store.rollout(second)
    assert running is not None and running.status == "running" and running.finished_at is None
    assert store.rollout(99999) is None and store.rollout_steps(second) == []
    with pytest.raises(ValueError, match="unknown outcome"):
        store.add_rollout_step(second, "pull", [], "maybe")
    with pytest.raises(ValueError, match="unknown status"):
        store.finish_rollout(second, "running")
