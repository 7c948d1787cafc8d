"""The clusterai_state inventory plugin shows Ansible the hosts the CLI recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from clusterai_runner.store import Store
from tests.helpers import REPO

ANSIBLE_INVENTORY = Path(sys.executable).parent / "ansible-inventory"

HOSTS = """\
all:
  vars:
    clusterai_inference_backend: llamacpp
  children:
    control:
      hosts:
        ctl1:
          ansible_host: 127.0.99.1
          clusterai_address: 127.0.99.1
"""


def inventory(state: Path, *sources: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "CLUSTERAI_STATE_DIR": str(state),
    }
    args = [a for source in sources for a in ("-i", str(source))]
    completed = subprocess.run(
        [str(ANSIBLE_INVENTORY), *args, "--list"],
        capture_output=True, text=True, env=env, check=True, timeout=120,
    )  # fmt: skip
    return dict(json.loads(completed.stdout))


def plain(value: Any) -> Any:
    return value.get("__ansible_unsafe", value) if isinstance(value, dict) else value


def test_recorded_hosts_appear_with_their_groups_and_variables(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'state.db'}")
    store.put_host("gpu3", "127.0.99.3", ["workers", "bare_metal"], {"ansible_user": "ops"})
    store.put_host("gpu4", "127.0.99.4", ["workers"])
    config = tmp_path / "clusterai_state.yml"
    config.write_text("plugin: clusterai_state\ngroups:\n  recorded: true\n")

    found = inventory(tmp_path, config)
    assert sorted(found["workers"]["hosts"]) == ["gpu3", "gpu4"]
    assert found["bare_metal"]["hosts"] == ["gpu3"]
    assert sorted(found["recorded"]["hosts"]) == ["gpu3", "gpu4"]  # constructed groups work
    # Ansible marks what an inventory plugin sets as unsafe (never templated).
    gpu3 = {k: plain(v) for k, v in found["_meta"]["hostvars"]["gpu3"].items()}
    assert gpu3 == {
        "ansible_host": "127.0.99.3",
        "clusterai_address": "127.0.99.3",
        "ansible_user": "ops",
    }

    # Beside a static inventory, recorded hosts join its groups and get its variables.
    static = tmp_path / "hosts.yml"
    static.write_text(HOSTS)
    both = inventory(tmp_path, static, config)
    assert both["control"]["hosts"] == ["ctl1"]
    assert sorted(both["workers"]["hosts"]) == ["gpu3", "gpu4"]

    store.remove_host("gpu4")
    assert inventory(tmp_path, config)["workers"]["hosts"] == ["gpu3"]


def test_a_missing_store_gives_no_hosts_and_is_not_created(tmp_path: Path) -> None:
    config = tmp_path / "clusterai_state.yml"
    config.write_text("plugin: clusterai_state\n")
    found = inventory(tmp_path, config)
    assert found["all"].get("children", []) == ["ungrouped"]
    assert not (tmp_path / "state.db").exists()


def test_a_recorded_worker_is_parked_in_the_store_and_ansible_sees_the_group(
    tmp_path: Path,
) -> None:
    from clusterai_runner.usecases.scale import _Placement

    store = Store.open(f"sqlite:///{tmp_path / 'state.db'}")
    store.put_host("gpu3", "127.0.99.3", ["workers", "standby"], {"ansible_user": "ops"})
    config = tmp_path / "clusterai_state.yml"
    config.write_text("plugin: clusterai_state\n")
    placement = _Placement(config, store)
    undo = placement.set_parked("gpu3", True)
    assert inventory(tmp_path, config)["parked"]["hosts"] == ["gpu3"]
    (recorded,) = store.hosts()
    assert recorded.groups == ["workers", "standby", "parked"]
    assert recorded.variables == {"ansible_user": "ops"}  # kept
    undo()  # a failed park puts it back
    assert store.hosts()[0].groups == ["workers", "standby"]
    placement.set_parked("gpu3", True)
    placement.set_parked("gpu3", False)  # started again
    assert "parked" not in inventory(tmp_path, config)
    assert store.hosts()[0].groups == ["workers", "standby"]
