"""The internal controller_download role: one archive per architecture the hosts that run
the caller need, checked by SHA-256, fetched once; a mismatch or a missing file is one
line naming the download and what to check. Archives are read from file:// URLs, so the
test opens no socket; four local hosts stand in for a mixed cluster."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import yaml

from tests.helpers import ansible_playbook

# worker3 does not run the caller (a host without the backend): its architecture is not
# fetched. worker1 and worker2 share one.
HOSTS = {"worker1": "amd64", "worker2": "amd64", "worker3": "riscv64", "worker4": "arm64"}
RUNS = ["worker1", "worker2", "worker4"]


def setup(tmp_path: Path) -> dict[str, str]:
    release = tmp_path / "release"
    release.mkdir()
    checksums = {}
    for arch in sorted(set(HOSTS.values())):
        archive = release / f"tool-linux-{arch}.tgz"
        archive.write_bytes(f"release for {arch}\n".encode())
        checksums[arch] = hashlib.sha256(archive.read_bytes()).hexdigest()
    inventory = {
        "all": {
            "hosts": {
                name: {"test_arch": arch, "ansible_connection": "local"}
                for name, arch in HOSTS.items()
            },
            "vars": {"ansible_python_interpreter": sys.executable},
        }
    }
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    play = [
        {
            "name": "Fetch an archive as a service role does",
            "hosts": "all",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Fetch it for the hosts that run the role",
                    "ansible.builtin.include_role": {"name": "controller_download"},
                    "when": "inventory_hostname in test_runs",
                    "vars": {
                        "controller_download_name": "tool",
                        "controller_download_arch": "{{ test_arch }}",
                        "controller_download_url": f"file://{release}/tool-linux-ARCH.tgz",
                        "controller_download_dest": f"{tmp_path}/cache/tool/tool-linux-ARCH.tgz",
                        "controller_download_checksums": "{{ test_checksums }}",
                        "controller_download_sha256": "{{ test_sha256 | default('') }}",
                        "controller_download_path": "{{ test_path | default('') }}",
                        "controller_download_fix": "check tool_archive_sha256",
                    },
                }
            ],
        }
    ]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    return checksums


def run(tmp_path: Path, **variables: object) -> tuple[int, str]:
    extra = {"test_runs": RUNS, **variables}
    done = ansible_playbook(
        str(tmp_path / "inventory.yml"), tmp_path / "play.yml", "-e", json.dumps(extra)
    )
    return done.returncode, done.stdout


def cached(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "cache" / "tool").glob("*"))


def test_one_archive_per_architecture_the_hosts_need_then_nothing(tmp_path: Path) -> None:
    checksums = setup(tmp_path)
    code, out = run(tmp_path, test_checksums=checksums)
    assert code == 0, out[-3000:]
    assert cached(tmp_path) == ["tool-linux-amd64.tgz", "tool-linux-arm64.tgz"]
    assert out.count("changed: [worker1 -> localhost] => (item=") == 2, out[-3000:]
    code, again = run(tmp_path, test_checksums=checksums)
    assert code == 0, again[-3000:]
    assert "changed=0" in again[again.rindex("PLAY RECAP") :]
    assert " changed=1" not in again[again.rindex("PLAY RECAP") :]


def test_a_download_that_is_not_the_pinned_one_stops_with_one_line(tmp_path: Path) -> None:
    checksums = setup(tmp_path)
    code, out = run(tmp_path, test_checksums={**checksums, "arm64": "0" * 64})
    assert code != 0
    line = next(x for x in out.splitlines() if "Action failed: tool: " in x)
    assert line.endswith(
        f"/release/tool-linux-arm64.tgz has SHA-256 {checksums['arm64']}, not the pinned "
        f"{'0' * 64} (nothing was installed; check tool_archive_sha256)"
    ), line
    assert "tool-linux-arm64.tgz" not in cached(tmp_path)
    (tmp_path / "release" / "tool-linux-arm64.tgz").unlink()
    code, out = run(tmp_path, test_checksums=checksums)
    assert code != 0
    line = next(x for x in out.splitlines() if "Action failed: tool: " in x)
    assert "/release/tool-linux-arm64.tgz " in line and "check tool_archive_sha256)" in line


def test_a_supplied_archive_is_checked_and_never_downloaded(tmp_path: Path) -> None:
    checksums = setup(tmp_path)
    supplied = tmp_path / "release" / "tool-linux-amd64.tgz"
    code, out = run(
        tmp_path, test_checksums={}, test_path=str(supplied), test_sha256=checksums["amd64"]
    )
    assert code == 0, out[-3000:]
    assert not (tmp_path / "cache").exists()
    code, out = run(tmp_path, test_checksums={}, test_path=str(supplied), test_sha256="1" * 64)
    assert code != 0
    assert f"tool: {supplied} has SHA-256 {checksums['amd64']}, not {'1' * 64}" in out, out[-3000:]
    code, out = run(
        tmp_path, test_checksums={}, test_path=str(tmp_path / "gone.tgz"), test_sha256="1" * 64
    )
    assert code != 0
    assert f"tool: {tmp_path / 'gone.tgz'} does not exist (nothing was installed;" in out
