"""The action clusterai_service_removal: the steps of a removal, in order, each the module
and arguments the service_removal role's own tasks ran. Its runs on real hosts are
test_site.py's (reset.yml twice, scale_in.yml with a wipe) and test_cli_up.py's."""

from __future__ import annotations

import importlib.util
from typing import Any

from tests.helpers import REPO

spec = importlib.util.spec_from_file_location(
    "clusterai_service_removal", REPO / "plugins/action/clusterai_service_removal.py"
)
assert spec and spec.loader
action = importlib.util.module_from_spec(spec)
spec.loader.exec_module(action)

OWNED: dict[str, Any] = {
    "units": ["prometheus"],
    "packages": ["prometheus"],
    "paths": ["/etc/prometheus", "/var/lib/prometheus"],
    "users": ["clusterai-web"],
}


def test_without_a_wipe_the_units_are_only_stopped_and_disabled() -> None:
    assert action.plan({**OWNED, "wipe": False}) == [
        ("stop prometheus", "ansible.builtin.systemd_service",
         {"name": "prometheus", "state": "stopped", "enabled": False}),
    ]  # fmt: skip


def test_a_wipe_stops_then_purges_deletes_removes_users_and_reloads_systemd() -> None:
    steps = action.plan({**OWNED, "wipe": True})
    assert [(name, module) for name, module, _ in steps] == [
        ("stop prometheus", "ansible.builtin.systemd_service"),
        ("purge prometheus", "clusterai_apt"),
        ("delete /etc/prometheus", "ansible.builtin.file"),
        ("delete /var/lib/prometheus", "ansible.builtin.file"),
        ("remove user clusterai-web", "ansible.builtin.user"),
        ("remove group clusterai-web", "ansible.builtin.group"),
        ("reload systemd", "ansible.builtin.systemd_service"),
    ]
    assert steps[1][2] == {"name": ["prometheus"], "state": "absent", "purge": True}
    assert steps[2][2] == {"path": "/etc/prometheus", "state": "absent"}
    assert steps[4][2] == steps[5][2] == {"name": "clusterai-web", "state": "absent"}
    assert steps[6][2] == {"daemon_reload": True}


def test_nothing_owned_is_a_reload_only_on_a_wipe() -> None:
    nothing = {"units": [], "packages": [], "paths": [], "users": []}
    assert action.plan({**nothing, "wipe": False}) == []
    assert [name for name, _, _ in action.plan({**nothing, "wipe": True})] == ["reload systemd"]


def test_its_arguments_are_the_roles_variables() -> None:
    import yaml

    role = yaml.safe_load((REPO / "roles/service_removal/meta/argument_specs.yml").read_text())
    options = role["argument_specs"]["main"]["options"]
    assert {f"service_removal_{name}" for name in action.SPEC} == set(options)
    for name, spec_ in action.SPEC.items():
        assert spec_["type"] == options[f"service_removal_{name}"]["type"], name
