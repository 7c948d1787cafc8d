"""The ollama role on sandbox hosts, from an archive served over local HTTP.

Ollama's release cannot be downloaded here. The test builds an archive laid out like the
release (``bin/ollama``, ``lib/ollama/``) whose ``bin/ollama`` is the test fixture
tests/fixtures/fake_ollama.py, computes its SHA-256, serves it from a loopback HTTP server
and lets the role do the rest for real: download on the controller, checksum, unpack on
the host, user, environment file, hardened unit, listener, and models through the
``ollama_model`` module.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import REPO, ansible_playbook, booted_sandbox, run_cli, serve_folder, ssh

pytestmark = pytest.mark.sandbox

PLAYBOOK = REPO / "tests" / "integration" / "ollama_role.yml"


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The archive, served on loopback: its URL and SHA-256."""
    folder = tmp_path_factory.mktemp("ollama-release")
    path = folder / "ollama-linux-amd64.tgz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(REPO / "tests" / "fixtures" / "fake_ollama.py", "bin/ollama", filter=_executable)
        readme = folder / "README.txt"
        readme.write_text("test fixture standing in for Ollama's libraries\n")
        tar.add(readme, "lib/ollama/README.txt")
    with serve_folder(folder) as base:
        yield {
            "url": f"{base}/ollama-linux-ARCH.tgz",
            "path": str(path),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }


def _executable(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mode = 0o755
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


@pytest.fixture(scope="module")
def sandbox(state_dir: Path) -> Iterator[dict[str, Any]]:
    with booted_sandbox("ollama", 2) as status:
        yield status


def run_role(
    sandbox: dict[str, Any], archive: dict[str, str], cache: Path, **variables: Any
) -> tuple[int, str]:
    extra = {
        "ollama_archive_url": archive["url"],
        "ollama_archive_sha256": archive["sha256"],
        "ollama_controller_cache": str(cache),
        **variables,
    }
    run = ansible_playbook(sandbox["inventory"], PLAYBOOK, "-e", json.dumps(extra))
    return run.returncode, run.stdout


def worker(sandbox: dict[str, Any]) -> str:
    return str(next(h["address"] for h in sandbox["hosts"] if h["name"] == "worker1"))


def recap(stdout: str, host: str) -> dict[str, int]:
    line = re.search(rf"^{host}\s+: (.*)$", stdout[stdout.rindex("PLAY RECAP") :], re.M)
    assert line, stdout[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line.group(1))}


def tags(sandbox: dict[str, Any]) -> list[str]:
    url = f"http://{worker(sandbox)}:11434/api/tags"
    with urllib.request.urlopen(url, timeout=10) as response:
        return sorted(m["name"] for m in json.load(response)["models"])


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ollama-cache")


def test_a_checksum_mismatch_stops_before_anything_changes(
    sandbox: dict[str, Any], archive: dict[str, str], cache: Path
) -> None:
    wrong = "0" * 64
    code, out = run_role(sandbox, archive, cache, ollama_archive_sha256=wrong)
    assert code != 0
    url = archive["url"].replace("ARCH", "amd64")
    assert (
        f"ollama: {url} has SHA-256 {archive['sha256']}, not the pinned {wrong} (nothing was"
        " installed; check ollama_archive_url and ollama_archive_sha256"
    ) in out, out[-3000:]
    assert not list(cache.rglob("*.tgz"))
    host = worker(sandbox)
    assert ssh(sandbox, host, "test -e /opt/clusterai/ollama").returncode == 1
    assert ssh(sandbox, host, "getent passwd ollama").returncode == 2
    unit = "/etc/systemd/system/clusterai-ollama.service"
    assert ssh(sandbox, host, f"test -e {unit}").returncode == 1


def test_a_supplied_archive_that_does_not_match_is_refused(
    sandbox: dict[str, Any], archive: dict[str, str], cache: Path
) -> None:
    wrong = "f" * 64
    code, out = run_role(
        sandbox,
        archive,
        cache,
        ollama_archive_url="",
        ollama_archive_path=archive["path"],
        ollama_archive_sha256=wrong,
    )
    assert code != 0
    assert (
        f"ollama: {archive['path']} has SHA-256 {archive['sha256']}, not {wrong} (nothing was"
        " installed; check ollama_archive_url and ollama_archive_sha256, ollama_archive_path"
    ) in out, out[-3000:]
    assert ssh(sandbox, worker(sandbox), "test -e /opt/clusterai/ollama").returncode == 1


@pytest.fixture(scope="module")
def converged(
    sandbox: dict[str, Any], archive: dict[str, str], cache: Path
) -> list[tuple[int, str]]:
    models = {"ollama_models": ["smollm2:135m", "nomic-embed-text"]}
    return [run_role(sandbox, archive, cache, **models) for _ in range(2)]


def test_the_role_installs_and_a_second_run_changes_nothing(
    sandbox: dict[str, Any], converged: list[tuple[int, str]], cache: Path
) -> None:
    (first_code, first), (second_code, second) = converged
    assert first_code == 0, first[-3000:]
    assert "pulled smollm2:135m, nomic-embed-text:latest, removed nothing" in first
    assert second_code == 0, second[-3000:]
    assert recap(second, "worker1")["changed"] == 0
    assert len(list(cache.rglob("ollama-linux-amd64.tgz"))) == 1


def test_the_server_holds_the_listed_models(sandbox: dict[str, Any], converged: object) -> None:
    assert tags(sandbox) == ["nomic-embed-text:latest", "smollm2:135m"]
    log = ssh(sandbox, worker(sandbox), "cat /var/lib/ollama/models/requests.log").stdout
    assert log.count("POST /api/pull") == 2


def test_the_server_runs_hardened_as_its_own_user_on_the_hosts_address(
    sandbox: dict[str, Any], converged: object
) -> None:
    host = worker(sandbox)
    show = ssh(
        sandbox,
        host,
        "systemctl show -p ActiveState,User,ProtectSystem,NoNewPrivileges,ProtectHome,"
        "PrivateDevices,ReadWritePaths clusterai-ollama",
    )
    assert dict(line.split("=", 1) for line in show.stdout.split()) == {
        "ActiveState": "active",
        "User": "ollama",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "ProtectHome": "yes",
        "PrivateDevices": "yes",
        "ReadWritePaths": "/var/lib/ollama",
    }
    assert ssh(sandbox, host, "getent passwd ollama").stdout.strip().endswith(":/usr/sbin/nologin")
    sockets = ssh(sandbox, host, "ss -Hltn 'sport = :11434'").stdout.split()
    assert f"{host}:11434" in sockets
    assert not {"0.0.0.0:11434", "*:11434", "[::]:11434"} & set(sockets)
    env = ssh(sandbox, host, "stat -c '%a %U %G' /etc/clusterai/ollama.env").stdout.strip()
    assert env == "640 root ollama"
    version = ssh(sandbox, host, "ollama --version").stdout
    assert "0.7.0" in version


def test_unlisted_models_are_removed_only_when_pruning(
    sandbox: dict[str, Any], archive: dict[str, str], cache: Path, converged: object
) -> None:
    code, out = run_role(sandbox, archive, cache, ollama_models=["smollm2:135m"])
    assert code == 0 and recap(out, "worker1")["changed"] == 0
    assert tags(sandbox) == ["nomic-embed-text:latest", "smollm2:135m"]
    code, out = run_role(
        sandbox, archive, cache, ollama_models=["smollm2:135m"], ollama_models_prune=True
    )
    assert code == 0, out[-3000:]
    assert "pulled nothing, removed nomic-embed-text:latest" in out
    assert tags(sandbox) == ["smollm2:135m"]


def ollama_inventory(sandbox: dict[str, Any], folder: Path) -> Path:
    """The sandbox's inventory with worker1 an Ollama worker that should hold both models."""
    inventory = yaml.safe_load(Path(sandbox["inventory"]).read_text())
    worker1 = inventory["all"]["children"]["workers"]["hosts"]["worker1"]
    worker1.update(clusterai_inference_backend="ollama",
                   ollama_models=["smollm2:135m", "nomic-embed-text"])  # fmt: skip
    edited = folder / "inventory.yml"
    edited.write_text(yaml.safe_dump(inventory))
    edited.chmod(0o600)
    return edited


def test_a_model_the_inventory_lists_is_pulled_by_clusterai_models_pull(
    sandbox: dict[str, Any], converged: object, tmp_path: Path
) -> None:
    """`clusterai models pull` (the use case the web app's job runs) through models.yml:
    after the pruning test worker1 holds smollm2 only; its inventory lists both models."""
    edited = ollama_inventory(sandbox, tmp_path)
    listed = run_cli("models", "status", "-i", str(edited), "--json")
    hosts = {h["name"]: h for h in json.loads(listed.stdout)["hosts"]}
    assert listed.code == 1 and hosts["worker1"]["missing"] == ["nomic-embed-text:latest"]
    refused = run_cli("models", "pull", "llama3", "-i", str(edited), "--host", "worker1")
    assert refused.code == 2 and "is not in worker1's models" in refused.stderr
    pulled = run_cli("models", "pull", "nomic-embed-text", "-i", str(edited))
    assert pulled.code == 0, pulled.stdout[-3000:] + pulled.stderr
    assert re.search(r"^worker1 .*changed=1", pulled.stdout, re.M), pulled.stdout[-3000:]
    assert tags(sandbox) == ["nomic-embed-text:latest", "smollm2:135m"]
    listed = run_cli("models", "status", "-i", str(edited), "--json")
    assert json.loads(listed.stdout)["hosts"][0]["missing"] == []


def test_a_model_removed_by_hand_is_drift_in_models_status_and_models_sync_repairs_it(
    sandbox: dict[str, Any], converged: object, tmp_path: Path
) -> None:
    edited = ollama_inventory(sandbox, tmp_path)
    synced = run_cli("models", "sync", "-i", str(edited))  # whatever earlier tests left
    assert synced.code == 0, synced.stdout[-3000:] + synced.stderr
    removed = urllib.request.Request(
        f"http://{worker(sandbox)}:11434/api/delete", method="DELETE",
        data=json.dumps({"model": "smollm2:135m"}).encode(),
    )  # fmt: skip
    with urllib.request.urlopen(removed, timeout=10) as response:
        assert response.status == 200
    drifted = run_cli("models", "status", "-i", str(edited), "--json")
    assert drifted.code == 1, drifted.stderr
    report = json.loads(drifted.stdout)
    (host,) = report["hosts"]
    assert report["drift"] and host["drift"] and host["missing"] == ["smollm2:135m"]
    (held,) = host["models"]
    assert (held["name"], held["loaded"], held["desired"]) == ("nomic-embed-text:latest",
                                                              False, True)  # fmt: skip
    assert re.fullmatch(r"[0-9a-f]{64}", held["digest"]) and held["size"] > 0, held
    assert "models sync" in drifted.stderr

    repaired = run_cli("models", "sync", "-i", str(edited))
    assert repaired.code == 0, repaired.stdout[-3000:] + repaired.stderr
    assert "syncing worker1" in repaired.stdout
    assert re.search(r"^worker1 .*changed=1", repaired.stdout, re.M), repaired.stdout[-3000:]
    assert tags(sandbox) == ["nomic-embed-text:latest", "smollm2:135m"]
    after = run_cli("models", "status", "-i", str(edited), "--json")
    assert after.code == 0 and json.loads(after.stdout)["drift"] is False, after.stdout
    again = run_cli("models", "sync", "-i", str(edited))
    assert (again.code, again.stdout) == (0, "every worker holds the models its inventory"
                                             " lists: nothing to sync\n")  # fmt: skip
    wrong = run_cli("models", "sync", "-i", str(edited), "--host", "nope")
    assert (wrong.code, wrong.stderr.splitlines()[0]) == (
        2, "error: host 'nope': is not a worker of the inventory (one of: worker1)")  # fmt: skip
