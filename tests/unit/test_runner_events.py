"""Ansible's events, as ansible-runner hands them over, become task events and a recap."""

from __future__ import annotations

from clusterai_runner.adapters.ansible import TaskEvent, recap_of, translate
from clusterai_runner.cli.display import recap_lines


def event(name: str, **data: object) -> dict[str, object]:
    return {"event": name, "event_data": {"host": "w1", "task": "Install it", **data}}


def test_results_become_task_events() -> None:
    assert translate(event("runner_on_start")) == TaskEvent("w1", "Install it", "started")
    assert translate(event("runner_on_ok", res={"changed": False})) == TaskEvent(
        "w1", "Install it", "ok"
    )
    assert translate(event("runner_on_ok", res={"changed": True})).status == "changed"  # type: ignore[union-attr]
    failed = translate(
        event("runner_on_failed", res={"msg": "No package\n matching 'x'"}, ignore_errors=True)
    )
    assert failed == TaskEvent("w1", "Install it", "failed", "No package matching 'x'", True)
    unreachable = translate(event("runner_on_unreachable", res={"msg": "ssh: timed out"}))
    assert unreachable == TaskEvent("w1", "Install it", "unreachable", "ssh: timed out")
    assert translate(event("playbook_on_task_start")) is None
    assert translate({"event": "verbose", "stdout": "x"}) is None


def test_stats_become_the_recap_in_ansibles_shape() -> None:
    recap = recap_of(
        {"ok": {"w1": 5, "w2": 3}, "changed": {"w1": 2}, "failures": {"w2": 1}, "dark": {}}
    )
    assert recap["w2"] == {
        "ok": 3,
        "changed": 0,
        "unreachable": 0,
        "failed": 1,
        "skipped": 0,
        "rescued": 0,
        "ignored": 0,
    }
    assert recap_lines(recap) == [
        "w1                         : ok=5    changed=2    unreachable=0    failed=0    "
        "skipped=0    rescued=0    ignored=0   ",
        "w2                         : ok=3    changed=0    unreachable=0    failed=1    "
        "skipped=0    rescued=0    ignored=0   ",
    ]
