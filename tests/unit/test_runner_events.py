"""Ansible's events, as ansible-runner hands them over, become task events and a recap."""

from __future__ import annotations

import subprocess
import sys

from clusterai_runner.adapters.ansible import (
    RUN_MARK,
    TaskEvent,
    end_leftovers,
    recap_of,
    translate,
)
from clusterai_runner.cli.display import recap_lines
from tests.helpers import wait_for


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


def test_the_processes_a_run_leaves_behind_are_ended_and_no_other() -> None:
    """Ansible's task workers start sessions of their own: a kill of the run's process
    group misses them. Those carrying the run's mark are ended, by PID; others are not."""
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    left = subprocess.Popen(sleep, env={RUN_MARK: "run-a"}, start_new_session=True)
    other = subprocess.Popen(sleep, env={RUN_MARK: "run-b"}, start_new_session=True)
    try:
        # The environment is readable once the child has exec'd.
        wait_for(lambda: left.pid in end_leftovers("run-a") or None, 10, "the marked child")
        assert left.wait(10) == -9
        assert other.poll() is None
    finally:
        for process in (left, other):
            process.kill()
            process.wait()
