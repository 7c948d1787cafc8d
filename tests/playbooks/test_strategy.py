"""The shipped strategy (Ansible's linear through Mitogen) leaves the placement of its
processes to the kernel: Mitogen's own policy pins, on a machine of 2 or 3 CPUs, every
task worker and the commands it starts to the CPUs it does not keep for its connection
multiplexer (on 2 CPUs: one), and runs beside each other then share that one."""

from __future__ import annotations

import ast
import os
import re
import sys
from pathlib import Path

import pytest

from tests.helpers import ansible_playbook

PLAY = """\
- name: Say where a task's processes may run
  hosts: localhost
  gather_facts: false
  vars:
    probe: python3 -c 'import os; print(sorted(os.sched_getaffinity(0)))'
  tasks:
    - name: Read the CPUs of a command the task runs
      ansible.builtin.command: "{{ probe }}"
      register: command_cpus
      changed_when: false

    - name: Read the CPUs of the task's worker (a lookup runs in it)
      ansible.builtin.debug:
        msg: "worker={{ lookup('ansible.builtin.pipe', probe) }} command={{ command_cpus.stdout }}"
"""


def test_task_workers_and_their_commands_may_use_every_cpu(tmp_path: Path) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("one CPU: nothing to pin to")
    (tmp_path / "play.yml").write_text(PLAY)
    done = ansible_playbook(
        "localhost,", tmp_path / "play.yml",
        "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    found = re.search(r"worker=(\[[\d, ]*\]) command=(\[[\d, ]*\])", done.stdout)
    assert found, done.stdout[-3000:]
    assert [ast.literal_eval(cpus) for cpus in found.groups()] == [allowed, allowed], found[0]
