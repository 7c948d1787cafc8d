"""A canceled run leaves no process behind: not ansible-playbook, not the task worker
running when the cancel came (Ansible starts each in a session of its own, out of the
process group ansible-runner kills), not the command that task started.

A real run through the ansible-runner adapter, on this machine (connection local): a task
that would sleep ten minutes, canceled once it has started."""

from __future__ import annotations

import sys
import threading
import uuid
from pathlib import Path

from clusterai_runner.adapters.ansible import CancelToken, TaskEvent, start_playbook
from tests.helpers import processes_mentioning, wait_for

PLAY = """\
- name: Wait a long time
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Sleep
      ansible.builtin.command:
        argv: ["{python}", "-c", "import time; time.sleep(600)", "{token}"]
      changed_when: false
"""


def test_a_canceled_run_leaves_no_process(tmp_path: Path) -> None:
    token = f"clusterai-cancel-test-{uuid.uuid4().hex}"
    play = tmp_path / "play.yml"
    play.write_text(PLAY.format(python=sys.executable, token=token))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n"
    )
    sleeping = threading.Event()

    def on_event(event: TaskEvent) -> None:
        if event.task == "Sleep" and event.status == "started":
            sleeping.set()

    cancel = CancelToken()
    run = start_playbook(str(play), inventory, tmp_path / "data", on_event=on_event,
                         cancel=cancel)  # fmt: skip
    try:
        assert sleeping.wait(120), "the task never started"
        wait_for(lambda: processes_mentioning(Path(token)) or None, 60, "the task's command")
    finally:
        cancel.cancel()
        outcome = run.wait()
    assert outcome.status == "canceled"
    assert processes_mentioning(play) == []  # ansible-playbook and its task workers
    assert processes_mentioning(Path(token)) == []  # the task's command
