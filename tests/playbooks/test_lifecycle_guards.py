"""Lifecycle playbooks refuse to start without explicit, known targets.

Real ansible-playbook runs; every check here happens on the controller, before any host
is contacted, so the inventory's addresses are never connected to.
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import ansible_playbook

HOST = {"ansible_host": "127.0.0.2", "clusterai_address": "127.0.0.2"}
INVENTORY = {
    "all": {
        "vars": {
            "clusterai_inference_backend": "llamacpp",
            "clusterai_backend_api_key": "lifecycle-test-key-0123",
            "clusterai_monitoring_password": "lifecycle-test-password",
        },
        "children": {
            "control": {"hosts": {"ctl1": HOST}},
            "workers": {"hosts": {"w1": HOST, "w2": HOST}},
        },
    }
}


def run(
    tmp_path: Path, playbook: str, *extra: str, inventory_data: dict[str, Any] = INVENTORY
) -> subprocess.CompletedProcess[str]:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump(inventory_data))
    return ansible_playbook(inventory, playbook, *extra, timeout=300)


@pytest.mark.parametrize(
    ("playbook", "extra", "message"),
    [
        ("scale_out.yml", [], "scale_out.yml needs the hosts to add, e.g. -e clusterai_targets="),
        ("scale_in.yml", [], "scale_in.yml needs the hosts to remove"),
        (
            "scale_in.yml",
            ["-e", "clusterai_targets=w1"],
            "scale_in.yml stops w1: add -e clusterai_confirm=true to go ahead",
        ),
        (
            "scale_in.yml",
            ["-e", "clusterai_targets=ctl1", "-e", "clusterai_confirm=true"],
            "includes the control host; scale_in.yml removes workers only",
        ),
        (
            "scale_out.yml",
            ["-e", "clusterai_targets=w1,gpu9"],
            "clusterai_targets: gpu9 not in the inventory",
        ),
        (
            "site.yml",
            ["-e", "clusterai_targets=nosuch"],
            "clusterai_targets: nosuch not in the inventory",
        ),
        (
            "reboot.yml",
            [],
            "reboot.yml reboots hosts that need it, one at a time: add -e clusterai_reboot=true",
        ),
        (
            "reset.yml",
            [],
            "reset.yml removes Cluster AI from every host: add -e clusterai_confirm=true",
        ),
        ("models.yml", ["-e", "clusterai_targets=gpu7"], "clusterai_targets: gpu7 not in"),
        ("upgrade.yml", ["-e", "clusterai_targets=gpu7"], "clusterai_targets: gpu7 not in"),
    ],
)
def test_refused_before_any_host_is_contacted(
    tmp_path: Path, playbook: str, extra: list[str], message: str
) -> None:
    result = run(tmp_path, playbook, *extra)
    assert result.returncode != 0
    assert message in " ".join(result.stdout.split()), result.stdout
    recap = result.stdout[result.stdout.rindex("PLAY RECAP") :]
    assert [line.split()[0] for line in recap.splitlines()[1:] if line.strip()] == ["localhost"]


@pytest.mark.parametrize("playbook", ["scale_out.yml", "site.yml", "upgrade.yml"])
def test_every_named_worker_is_in_the_workers_plays(tmp_path: Path, playbook: str) -> None:
    """Two targets at once: each is in every play that converges workers (with the
    pattern "w1,w2:&workers", Ansible read "w2:&workers" as one name and left w2 out)."""
    listed = run(tmp_path, playbook, "-e", "clusterai_targets=w1,w2", "--list-hosts")
    assert listed.returncode == 0, listed.stdout[-2000:] + listed.stderr[-2000:]
    plays = listed.stdout.split("play #")[1:]
    # (upgrade.yml also runs the plays on the control host alone: no worker there.)
    served = [p for p in plays if "Serve models on the workers" in p and "'control'" not in p]
    assert served, listed.stdout
    for play in served:
        hosts = play.split("hosts (", 1)[1].split("\n", 1)[1].split()
        assert {"w1", "w2"} <= set(hosts), play
    assert "Could not match supplied host pattern" not in listed.stderr


@pytest.mark.parametrize("playbook", ["site.yml", "models.yml"])
def test_a_parked_worker_is_prepared_but_serves_no_model(tmp_path: Path, playbook: str) -> None:
    parked = copy.deepcopy(INVENTORY)
    parked["all"]["children"]["parked"] = {"hosts": {"w2": None}}
    listed = run(tmp_path, playbook, "--list-hosts", inventory_data=parked)
    assert listed.returncode == 0, listed.stdout[-2000:] + listed.stderr[-2000:]
    # "N (pattern): Name\tTAGS: ...", then the hosts.
    plays = {
        p.split("): ", 1)[1].split("\t", 1)[0]: p.split("hosts (", 1)[1].split("\n", 1)[1].split()
        for p in listed.stdout.split("play #")[1:]
    }
    serving = [hosts for name, hosts in plays.items() if name.endswith("on the workers")]
    assert serving and all(hosts == ["w1"] for hosts in serving), plays
    if playbook == "site.yml":  # the base roles still prepare it
        assert "w2" in plays["Prepare the hosts and export their metrics"], plays
    assert "Could not match supplied host pattern" not in listed.stderr
