"""The service_hardening role writes a unit's sandboxing from one baseline with the
service's exceptions, tells the caller's handler once, and is the only place any role
writes a sandboxing setting. The drop-in goes to a temporary directory here (its private
path variable given on the command line), so nothing under /etc is touched."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

from tests.helpers import REPO, ansible_playbook

PLAY = """\
- name: Harden a service as a role does
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Harden the demo service
      ansible.builtin.import_role:
        name: service_hardening
      vars:
        service_hardening_unit: "{{ unit }}"
        service_hardening_notify: [Restart demo]
        service_hardening_settings:
          PrivateDevices: false
          ReadWritePaths: /var/lib/demo
          MemoryDenyWriteExecute: null
  handlers:
    - name: Restart demo
      ansible.builtin.debug:
        msg: demo restarted
      listen: Restart demo
"""
BASELINE = yaml.safe_load((REPO / "roles/service_hardening/vars/main.yml").read_text())[
    "_service_hardening_baseline"
]


def run(tmp_path: Path, unit: str = "demo") -> tuple[int, str]:
    (tmp_path / "play.yml").write_text(PLAY)
    done = ansible_playbook(
        "localhost,", tmp_path / "play.yml",
        "-e", f"unit={unit}", "-e", f"_service_hardening_directory={tmp_path / 'demo.service.d'}",
        "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}",
    )  # fmt: skip
    return done.returncode, done.stdout


def test_the_drop_in_is_the_baseline_with_the_exceptions_and_notifies_once(
    tmp_path: Path,
) -> None:
    code, out = run(tmp_path)
    assert code == 0, out[-3000:]
    assert "demo restarted" in out
    written = (tmp_path / "demo.service.d/clusterai.conf").read_text()
    settings: dict[str, list[str]] = {}
    for key, value in re.findall(r"^(\w+)=(.*)$", written, re.M):
        settings.setdefault(key, []).append(value)
    expected = {
        key: [str(v).lower() if isinstance(v, bool) else v for v in values]
        for key, value in BASELINE.items()
        for values in [value if isinstance(value, list) else [value]]
    }
    expected.update(PrivateDevices=["false"], ReadWritePaths=["/var/lib/demo"])
    del expected["MemoryDenyWriteExecute"]
    assert settings == expected
    # A list is one line per item, in its order.
    assert settings["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert "\n[Service]\n" in written
    code, again = run(tmp_path)
    assert code == 0, again[-3000:]
    assert "changed=0" in again[again.rindex("PLAY RECAP") :]
    assert "demo restarted" not in again


def test_a_unit_named_with_its_suffix_is_refused(tmp_path: Path) -> None:
    code, out = run(tmp_path, "demo.service")
    assert code != 0
    assert "name the unit without .service" in out
    assert not (tmp_path / "demo.service.d").exists()


def test_no_role_writes_sandboxing_of_its_own_and_every_unit_is_hardened() -> None:
    roles = REPO / "roles"
    own = [
        f"{path.relative_to(roles)}: {key}"
        for path in roles.glob("*/*/*")
        if path.is_file() and not path.is_relative_to(roles / "service_hardening")
        and path.parent.name in ("templates", "files")
        for key in BASELINE
        if re.search(rf"^{key}=", path.read_text(errors="replace"), re.M)
    ]  # fmt: skip
    assert own == []
    for unit in roles.glob("*/templates/*.service.j2"):
        tasks = "".join(p.read_text() for p in (unit.parent.parent / "tasks").glob("*.yml"))
        assert f"service_hardening_unit: {unit.name.removesuffix('.service.j2')}\n" in tasks, unit
