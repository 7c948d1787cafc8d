"""The roles' package action, clusterai_apt: apt's answer, from dpkg's status when the task
would change nothing, from the apt module itself otherwise."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.helpers import REPO, ansible_playbook

spec = importlib.util.spec_from_file_location(
    "clusterai_apt", REPO / "plugins/action/clusterai_apt.py"
)
assert spec and spec.loader
action = importlib.util.module_from_spec(spec)
spec.loader.exec_module(action)

STATUS = (
    "openssl\tii \n"
    "libgomp1\tii \n"
    "nftables\trc \n"
    "half\tiF \n"
    "two-arch\tun \n"
    "two-arch\tii \n"
    f"{action.MARKER}\n"
    "Package: libgomp1\nArchitecture: amd64\nAuto-Installed: 1\n\n"
    "Package: openssl\nArchitecture: amd64\nAuto-Installed: 0\n"
)


@pytest.mark.parametrize(
    ("args", "names"),
    [
        ({"name": "openssl", "state": "present"}, ["openssl"]),
        ({"name": ["python3-venv", "libgomp1"], "install_recommends": False},
         ["python3-venv", "libgomp1"]),
        ({"pkg": "gpg,curl"}, ["gpg", "curl"]),
        ({"name": ["prometheus"], "state": "absent", "purge": True}, ["prometheus"]),
        # What the fast path does not read goes to the apt module.
        ({"name": "openssl", "update_cache": True}, None),
        ({"name": "openssl", "state": "latest"}, None),
        ({"name": "nvidia-driver=550.54"}, None),
        ({"name": "nvidia-*"}, None),
        ({"deb": "/tmp/x.deb"}, None),
        ({"name": []}, None),
        ({"name": "openssl; reboot"}, None),
    ],
)  # fmt: skip
def test_the_fast_path_reads_only_plain_names_and_states(
    args: dict[str, object], names: list[str] | None
) -> None:
    assert action.package_names(args) == names


@pytest.mark.parametrize(
    ("args", "names", "nothing_to_do"),
    [
        ({}, ["openssl"], True),
        ({}, ["openssl", "two-arch"], True),
        # apt would mark it installed by hand.
        ({}, ["libgomp1"], False),
        ({}, ["nftables"], False),  # removed, its configuration left
        ({}, ["half"], False),  # half-configured
        ({}, ["never-heard-of"], False),  # apt says it has no such package
        ({"state": "absent"}, ["nftables", "never-heard-of"], True),
        ({"state": "absent", "purge": True}, ["nftables"], False),
        ({"state": "absent", "purge": True}, ["never-heard-of"], True),
        ({"state": "absent"}, ["openssl"], False),
    ],
)  # fmt: skip
def test_nothing_to_do_is_what_apt_would_decide(
    args: dict[str, object], names: list[str], nothing_to_do: bool
) -> None:
    status, automatic = action.parse(STATUS)
    assert automatic == {"libgomp1"}
    assert action.settled(args, names, status, automatic) is nothing_to_do


PLAY = """\
- name: Ask for packages with clusterai_apt
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Packages every Debian host has
      clusterai_apt:
        name: [dpkg, coreutils]
        state: present
      register: installed

    - name: A package no host has, absent
      clusterai_apt:
        name: clusterai-no-such-package
        state: absent
        purge: true
      register: absent

    - name: A package no host has, present (the apt module answers, in check mode)
      clusterai_apt:
        name: clusterai-no-such-package
      check_mode: true
      ignore_errors: true
      register: missing

    - name: Write the results
      ansible.builtin.copy:
        content: "{{ {'installed': installed, 'absent': absent, 'missing': missing} | to_json }}"
        dest: "{{ results_file }}"
        mode: "0600"
"""


def test_installed_packages_are_answered_from_dpkg_and_the_rest_by_apt(tmp_path: Path) -> None:
    (tmp_path / "play.yml").write_text(PLAY)
    done = ansible_playbook(
        "localhost,", tmp_path / "play.yml",
        "-c", "local", "-e", "ansible_python_interpreter=/usr/bin/python3",
        "-e", f"results_file={tmp_path / 'results.json'}",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    for name in ("installed", "absent"):
        assert results[name]["changed"] is False, results[name]
        assert results[name]["clusterai_apt"] == "dpkg shows nothing to change"
    missing = results["missing"]
    assert "clusterai_apt" not in missing and missing["failed"] is True, missing
    assert "No package matching 'clusterai-no-such-package'" in missing["msg"], missing
