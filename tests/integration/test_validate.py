"""playbooks/validate.yml: per-host preflight with facts, changing nothing.

A fresh 2-host sandbox passes; each check, made to fail for real (a unit or a process
outside the host holding a port, limits above what the host has, an OS list without
Debian), stops the host with one line naming it and the fix.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import address, ansible_playbook, booted_sandbox, ssh, wait_for

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def sandbox(state_dir: Path) -> Iterator[dict[str, Any]]:
    with booted_sandbox("preflight", 2) as status:
        yield status


def worker(sandbox: dict[str, Any]) -> str:
    return address(sandbox, "worker1")


def validate(sandbox: dict[str, Any], *extra: str) -> tuple[int, list[str], str]:
    """Run validate.yml; return its exit code, the messages of failed checks and stdout."""
    run = ansible_playbook(sandbox["inventory"], "validate.yml", *extra, timeout=300)
    errors = re.findall(
        r"^\[ERROR\]: Task failed: Action failed: (.*)$", run.stdout + run.stderr, re.M
    )
    return run.returncode, errors, run.stdout


def test_fresh_hosts_pass_and_nothing_changes(sandbox: dict[str, Any]) -> None:
    code, errors, out = validate(sandbox)
    assert code == 0 and errors == [], out[-3000:]
    recap = out[out.rindex("PLAY RECAP") :]
    assert re.findall(r"changed=(\d+)", recap) == ["0", "0", "0"]


def test_a_port_held_by_another_unit_names_it(sandbox: dict[str, Any]) -> None:
    host = worker(sandbox)
    start = ssh(
        sandbox,
        host,
        f"systemd-run --unit=squatter python3 -m http.server --bind {host} 8080",
    )
    assert start.returncode == 0, start.stderr
    try:
        wait_for(
            lambda: ssh(sandbox, host, "ss -Hltn 'sport = :8080'").stdout.strip(), 30, "squatter"
        )
        code, errors, _ = validate(sandbox)
        assert code == 2
        assert errors == [
            f"worker1: port 8080 on {host} is held by unit squatter, but clusterai-llamacpp"
            " needs it (stop that program or move it)"
        ]
    finally:
        ssh(sandbox, host, "systemctl stop squatter")


def test_a_port_held_outside_the_host_is_found_too(sandbox: dict[str, Any]) -> None:
    # The sandbox shares this machine's network: a listener started here, on the
    # worker's address, is in the worker's way although no process of it owns it.
    host = worker(sandbox)
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", host, "9100"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: ssh(sandbox, host, "ss -Hltn 'sport = :9100'").stdout.strip(), 30, "listener"
        )
        code, errors, _ = validate(sandbox)
        assert code == 2
        assert errors == [
            f"worker1: port 9100 on {host} is held by a process outside this host, but"
            " prometheus-node-exporter needs it (stop that program or move it)"
        ]
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_too_little_memory_or_disk_is_refused(sandbox: dict[str, Any]) -> None:
    code, errors, _ = validate(sandbox, "-e", "preflight_min_memory_mb_workers=99999999")
    assert code == 2
    assert len(errors) == 1
    assert re.fullmatch(
        r"worker1 has \d+ MiB of memory, below preflight_min_memory_mb_workers \(99999999 MiB\)"
        r" \(add memory or lower that variable\)",
        errors[0],
    )
    code, errors, _ = validate(sandbox, "-e", "preflight_min_free_disk_gb_control=999999")
    assert code == 2
    assert len(errors) == 1
    assert re.fullmatch(
        r"ctl1: /var/lib has [\d.]+ GiB free, below preflight_min_free_disk_gb_control"
        r" \(999999 GiB\) \(free some space or lower that variable\)",
        errors[0],
    )


def test_an_unsupported_os_is_refused(sandbox: dict[str, Any]) -> None:
    code, errors, _ = validate(sandbox, "-e", '{"preflight_supported_os": {"Ubuntu": ["24"]}}')
    assert code == 2
    assert sorted(re.sub(r"12\.\d+", "12.x", e) for e in errors) == [
        "ctl1 runs Debian 12.x; supported: Ubuntu 24",
        "worker1 runs Debian 12.x; supported: Ubuntu 24",
    ]
