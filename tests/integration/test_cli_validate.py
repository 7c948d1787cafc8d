"""``clusterai validate``: the SSH preflight of every host at once, on sandbox hosts.

Each failure is made for real: sshd stopped, a host key regenerated, a host key missing
from known_hosts, a disk threshold above what the host has.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import Result, address, booted_sandbox, run_cli, ssh

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def sandbox(state_dir: Path) -> Iterator[dict[str, Any]]:
    with booted_sandbox("val", 3) as status:
        yield status


def validate(inventory: str | Path, *extra: str) -> tuple[Result, dict[str, Any]]:
    result = run_cli("validate", "-i", str(inventory), "--json", *extra)
    return result, json.loads(result.stdout)


def failures(report: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    return {
        h["name"]: [(c["name"], c["detail"]) for c in h["checks"] if c["status"] == "fail"]
        for h in report["hosts"]
    }


def test_a_healthy_sandbox_passes_every_check(sandbox: dict[str, Any]) -> None:
    result, report = validate(sandbox["inventory"])
    assert result.code == 0, result.stderr
    assert report["summary"] == {"pass": 3, "warn": 0, "fail": 0}
    checks = {c["name"]: c["status"] for c in report["hosts"][1]["checks"]}
    assert checks == {
        "reach": "pass", "host_key": "pass", "auth": "pass", "sudo": "skip", "python": "pass",
        "os": "pass", "memory": "pass", "disk": "pass", "gpu": "pass", "ports": "pass",
        "clock": "pass",
    }  # fmt: skip
    table = run_cli("validate", "-i", sandbox["inventory"])
    assert table.code == 0
    assert table.stdout.splitlines()[0].split() == [
        "host", "reach", "host_key", "auth", "sudo", "python", "os", "memory", "disk", "gpu",
        "ports", "clock", "result",
    ]  # fmt: skip


def test_a_raised_disk_threshold_fails_that_host_only(
    sandbox: dict[str, Any], tmp_path: Path
) -> None:
    inventory = yaml.safe_load(Path(sandbox["inventory"]).read_text())
    worker2 = inventory["all"]["children"]["workers"]["hosts"]["worker2"]
    worker2["preflight_min_free_disk_gb_workers"] = 1000000
    raised = tmp_path / "hosts.yml"
    raised.write_text(yaml.safe_dump(inventory))
    result, report = validate(raised)
    assert result.code == 3
    found = failures(report)
    assert found["ctl1"] == [] and found["worker1"] == []
    ((name, detail),) = found["worker2"]
    assert name == "disk"
    assert "below preflight_min_free_disk_gb_workers (1000000 GiB)" in detail
    assert result.stderr == (
        "error: validate: 1 of 3 hosts failed: worker2 (fix what is listed above and run it"
        " again)\n"
    )


def test_an_unknown_host_key_fails_with_its_fingerprint_unless_accepted(
    sandbox: dict[str, Any], tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"
    worker1 = address(sandbox, "worker1")
    lines = Path(sandbox["known_hosts"]).read_text().splitlines()
    known.write_text("".join(f"{line}\n" for line in lines if not line.startswith(worker1 + " ")))
    text = Path(sandbox["inventory"]).read_text().replace(sandbox["known_hosts"], str(known))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(text)
    result, report = validate(inventory)
    assert result.code == 3
    ((name, detail),) = failures(report)["worker1"]
    assert name == "host_key"
    assert detail.startswith("unknown host key SHA256:") and detail.endswith("(ED25519)")
    accepted, report = validate(inventory, "--accept-new-host-keys")
    assert accepted.code == 0, accepted.stderr
    # Recorded (ssh may hash the name, so ask ssh-keygen).
    found = subprocess.run(
        ["ssh-keygen", "-F", worker1, "-f", str(known)], capture_output=True, check=False
    )
    assert found.returncode == 0


def test_a_stopped_sshd_and_a_changed_host_key_fail_those_hosts(
    sandbox: dict[str, Any],
) -> None:
    worker1, worker2 = address(sandbox, "worker1"), address(sandbox, "worker2")
    assert ssh(sandbox, worker1, "systemctl stop ssh").returncode == 0
    regenerate = "rm -f /etc/ssh/ssh_host_*; ssh-keygen -A >/dev/null; systemctl restart ssh"
    assert ssh(sandbox, worker2, regenerate).returncode == 0
    result, report = validate(sandbox["inventory"])
    assert result.code == 3
    found = failures(report)
    assert found["ctl1"] == []
    assert found["worker1"] == [("reach", f"{worker1}:22: Connection refused")]
    ((name, detail),) = found["worker2"]
    assert name == "host_key"
    assert detail.startswith("the host key CHANGED; it is now SHA256:")
    assert result.stderr == (
        "error: validate: 2 of 3 hosts failed: worker1, worker2 (fix what is listed above and"
        " run it again)\n"
    )
