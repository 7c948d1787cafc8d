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
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures import fake_ollama, fake_registry
from tests.helpers import (
    REPO,
    ChatLoad,
    address,
    ansible_playbook,
    booted_sandbox,
    run_cli,
    serve_folder,
    ssh,
    wait_for,
)

pytestmark = pytest.mark.sandbox

PLAYBOOK = REPO / "tests" / "integration" / "ollama_role.yml"
GATEWAY_KEYS = REPO / "tests" / "integration" / "gateway_keys.yml"
LOAD_KEY = "cai_4c0ad000_itloadkeyitloadkeyitloadkeyitloadkey"  # gateway_keys.yml's it-load


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The archive, served on loopback: its URL and SHA-256."""
    folder = tmp_path_factory.mktemp("ollama-release")
    path = fake_ollama.release_archive(folder)
    with serve_folder(folder) as base:
        yield {
            "url": f"{base}/ollama-linux-ARCH.tgz",
            "path": str(path),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }


@pytest.fixture(scope="module")
def sandbox(state_dir: Path) -> Iterator[dict[str, Any]]:
    # A control host (the model store's) and two workers.
    with booted_sandbox("ollama", 3) as status:
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
    return address(sandbox, "worker1")


def recap(stdout: str, host: str) -> dict[str, int]:
    line = re.search(rf"^{host}\s+: (.*)$", stdout[stdout.rindex("PLAY RECAP") :], re.M)
    assert line, stdout[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line.group(1))}


def tags(sandbox: dict[str, Any]) -> list[str]:
    return tags_of(worker(sandbox))


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
    workers = inventory["all"]["children"]["workers"]["hosts"]
    workers["worker1"].update(clusterai_inference_backend="ollama",
                              ollama_models=["smollm2:135m", "nomic-embed-text"])  # fmt: skip
    del workers["worker2"]  # the model store's test has it
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
    delete_model(worker(sandbox), "smollm2:135m")
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


@pytest.fixture(scope="module")
def model_store(
    sandbox: dict[str, Any], converged: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The model store role on ctl1 (converged twice), its upstream a stand-in registry on
    this machine's loopback that records what crossed the outside link, and an inventory
    that turns the store on and makes both workers Ollama workers."""
    registry = fake_registry.Registry()
    registry.add("library/smollm2", "360m", 4 << 20)
    with fake_registry.in_thread(registry) as upstream:
        inventory = yaml.safe_load(Path(sandbox["inventory"]).read_text())
        inventory["all"]["vars"].update(clusterai_model_store=True, model_store_upstream=upstream)
        for worker in inventory["all"]["children"]["workers"]["hosts"].values():
            worker.update(clusterai_inference_backend="ollama", ollama_models=["smollm2:360m"])
        edited = tmp_path_factory.mktemp("model-store") / "inventory.yml"
        edited.write_text(yaml.safe_dump(inventory))
        edited.chmod(0o600)
        playbook = REPO / "tests" / "integration" / "model_store_role.yml"
        runs = [ansible_playbook(edited, playbook) for _ in range(2)]
        yield {"registry": registry, "inventory": edited, "runs": runs,
               "control": next(h["address"] for h in sandbox["hosts"]
                               if h["group"] == "control")}  # fmt: skip


def test_the_model_store_role_converges_and_a_second_run_changes_nothing(
    model_store: dict[str, Any],
) -> None:
    first, second = model_store["runs"]
    assert first.returncode == 0, first.stdout[-3000:]
    assert second.returncode == 0 and recap(second.stdout, "ctl1")["changed"] == 0


def test_two_workers_get_a_model_through_the_control_hosts_store_downloaded_once(
    sandbox: dict[str, Any], model_store: dict[str, Any]
) -> None:
    """Both workers' models through the store (`clusterai models sync`). Then a blob in the
    store is corrupted and worker2's model removed: the next sync refuses the bad blob and
    the store fetches it again."""
    registry: fake_registry.Registry = model_store["registry"]
    edited, control = model_store["inventory"], model_store["control"]
    weights = json.loads(registry.manifests["library/smollm2:360m"])["layers"][0]["digest"]
    hosts = {h["name"]: h["address"] for h in sandbox["hosts"]}
    synced = run_cli("models", "sync", "-i", str(edited))
    assert synced.code == 0, synced.stdout[-3000:] + synced.stderr
    for name in ("worker1", "worker2"):
        assert re.search(rf"^{name} .*changed=1", synced.stdout, re.M), synced.stdout[-3000:]
        log = ssh(sandbox, hosts[name], "cat /var/lib/ollama/models/requests.log").stdout
        assert f"POST /api/blobs/{weights}" in log and "POST /api/create smollm2:360m" in log
        assert "POST /api/pull smollm2:360m" not in log  # the worker asked no registry
    # One outside download of each blob, by the store; the workers fetched from it.
    assert sorted(h.path.rsplit("/", 1)[1] for h in registry.gets("/blobs/")) == sorted(
        registry.blobs
    )
    assert {h.agent.split("/")[0] for h in registry.hits} == {"clusterai-model-store"}
    journal = ssh(sandbox, control, "journalctl -u clusterai-model-store -o cat --no-pager")
    for name in ("worker1", "worker2"):
        hostname = ssh(sandbox, hosts[name], "hostname").stdout.strip()
        assert re.search(rf'"GET /v2/library/smollm2/blobs/{weights}" 200 {4 << 20} '
                         rf'"clusterai-ollama-model \({hostname}\)"', journal.stdout), (
            journal.stdout[-3000:])  # fmt: skip
    status = run_cli("models", "status", "-i", str(edited), "--json")
    assert status.code == 0, status.stdout

    # A byte of the store's copy flipped; worker2 loses the model (and its blobs).
    store_blob = f"/var/lib/clusterai/model-store/blobs/{weights.replace(':', '-')}"
    flip = (f"python3 -c \"import sys; f=open('{store_blob}','r+b'); f.seek(1000); "
            f"b=f.read(1); f.seek(1000); f.write(bytes([b[0]^255])); f.close()\"")  # fmt: skip
    assert ssh(sandbox, control, flip).returncode == 0
    delete_model(hosts["worker2"], "smollm2:360m")
    repaired = run_cli("models", "sync", "-i", str(edited))
    assert repaired.code == 0, repaired.stdout[-3000:] + repaired.stderr
    # The run's record (the store of runs) says so, and the store's journal.
    run_id = re.search(r"^run (\d+): successful", repaired.stdout, re.M)
    assert run_id, repaired.stdout
    shown = run_cli("runs", "show", run_id.group(1), "--json")
    messages = [e["message"] for e in json.loads(shown.stdout)["events"]]
    assert any(f"refused {weights} from the model store" in m for m in messages), messages
    journal = ssh(sandbox, control, "journalctl -u clusterai-model-store -o cat --no-pager")
    assert '"POST /clusterai/v1/verify" 200' in journal.stdout
    assert len([h for h in registry.gets("/blobs/") if weights in h.path]) == 2
    stored = ssh(sandbox, control, f"sha256sum {store_blob}").stdout.split()[0]
    assert f"sha256:{stored}" == weights
    assert "smollm2:360m" in tags_of(hosts["worker2"])


def delete_model(address: str, model: str) -> None:
    """Remove a model by hand, through the worker's Ollama API."""
    removed = urllib.request.Request(f"http://{address}:11434/api/delete", method="DELETE",
                                     data=json.dumps({"model": model}).encode())  # fmt: skip
    with urllib.request.urlopen(removed, timeout=10) as response:
        assert response.status == 200


def tags_of(address: str) -> list[str]:
    with urllib.request.urlopen(f"http://{address}:11434/api/tags", timeout=10) as response:
        return sorted(m["name"] for m in json.load(response)["models"])


def store_models(model_store: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What the control host's store holds, asked with the inventory's backend key."""
    inventory = yaml.safe_load(Path(model_store["inventory"]).read_text())
    key = inventory["all"]["vars"]["clusterai_backend_api_key"]
    request = urllib.request.Request(f"http://{model_store['control']}:8095/clusterai/v1/models",
                                     headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        return {m["name"]: m for m in json.load(response)["models"]}


def test_models_import_seeds_the_store_for_a_site_the_registry_cannot_reach(
    sandbox: dict[str, Any], model_store: dict[str, Any], tmp_path: Path
) -> None:
    """An Ollama models directory (as a USB disk would carry it) and a GGUF file through
    `clusterai models import`; worker1 then gets the directory's model from the store with
    the registry never asked for it. A directory with a bad blob is refused, nothing
    written."""
    carried = fake_registry.Registry()
    carried.add("library/airgap", "1b", 1 << 20)
    disk = carried.models_dir(tmp_path / "usb" / "models")
    edited = model_store["inventory"]
    imported = run_cli("models", "import", str(disk), "-i", str(edited))
    assert imported.code == 0, imported.stdout[-3000:] + imported.stderr
    assert re.search(r"^ctl1 .*changed=[1-9]", imported.stdout, re.M), imported.stdout
    again = run_cli("models", "import", str(disk), "-i", str(edited))
    assert again.code == 0 and re.search(r"^ctl1 .*changed=0", again.stdout, re.M), again.stdout
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + bytes(2048))
    named = run_cli("models", "import", str(gguf), "--name", "tiny:q4", "-i", str(edited))
    assert named.code == 0, named.stdout[-3000:] + named.stderr
    held = store_models(model_store)
    assert held["airgap:1b"]["complete"] and held["tiny:q4"]["complete"], held

    inventory = yaml.safe_load(edited.read_text())
    workers = inventory["all"]["children"]["workers"]["hosts"]
    workers["worker1"]["ollama_models"] = ["airgap:1b"]
    del workers["worker2"]
    only = tmp_path / "inventory.yml"
    only.write_text(yaml.safe_dump(inventory))
    only.chmod(0o600)
    synced = run_cli("models", "sync", "-i", str(only))
    assert synced.code == 0, synced.stdout[-3000:] + synced.stderr
    assert "airgap:1b" in tags_of(worker(sandbox))
    registry: fake_registry.Registry = model_store["registry"]
    assert not [h for h in registry.hits if "airgap" in h.path]

    # A blob whose bytes are not its name: the control host refuses it, writes nothing.
    bad = fake_registry.Registry()
    bad.add("library/broken", "1b", 4096)
    bad.models_dir(disk)
    rotten = json.loads(bad.manifests["library/broken:1b"])["layers"][0]["digest"]
    (disk / "blobs" / rotten.replace(":", "-")).write_bytes(b"rotten")
    refused = run_cli("models", "import", str(disk), "-i", str(edited))  # hashed here first
    assert refused.code == 2 and "its SHA-256 is sha256:" in refused.stderr, refused.stderr
    played = ansible_playbook(
        edited, "models_import.yml", "-e", f"model_store_import_path={disk}"
    )  # the control host's check
    said = " ".join(played.stdout.split())  # Ansible folds long messages
    assert played.returncode != 0 and f"{disk}/blobs/sha256-" in said, played.stdout[-3000:]
    assert "its SHA-256 is sha256:" in said and "(nothing was imported)" in said
    assert "broken:1b" not in store_models(model_store)
    missing = run_cli("models", "import", str(tmp_path / "nowhere"), "-i", str(edited))
    assert (missing.code, missing.stderr.count("\n")) == (2, 1), missing.stderr
    assert "no such file or directory" in missing.stderr
    off = run_cli("models", "import", str(disk), "-i", sandbox["inventory"])
    assert off.code == 2 and "runs no model store" in off.stderr, off.stderr


ROLLOUT_ADMIN_KEY = "it-rollout-admin-key-0123456789abcdef"


@pytest.fixture(scope="module")
def rollout_cluster(
    sandbox: dict[str, Any], converged: object, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """An inventory directory whose workers are both Ollama workers holding smollm2:135m,
    the gateway's alias ``chat`` naming it (in group_vars, where a rollout edits it), and
    the gateway on ctl1 over them."""
    folder = tmp_path_factory.mktemp("rollout") / "inventory"
    (folder / "group_vars" / "all").mkdir(parents=True)
    inventory = yaml.safe_load(Path(sandbox["inventory"]).read_text())
    for host in inventory["all"]["children"]["workers"]["hosts"].values():
        host.update(clusterai_inference_backend="ollama", ollama_models=["smollm2:135m"])
    (folder / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (folder / "group_vars" / "all" / "gateway.yml").write_text(
        "# The alias clients ask for, and the model behind it.\n"
        f"gateway_admin_key: {ROLLOUT_ADMIN_KEY}\n"
        "gateway_aliases:\n"
        "  chat:\n"
        "    - smollm2:135m  # rolled out by the tests\n"
    )
    shutil.copy(GATEWAY_KEYS, folder / "group_vars" / "all" / "keys.yml")
    for path in folder.rglob("*.yml"):
        path.chmod(0o600)
    synced = run_cli("models", "sync", "-i", str(folder))
    assert synced.code == 0, synced.stdout[-3000:] + synced.stderr
    converged_gateway = ansible_playbook(folder, REPO / "tests/integration/gateway_role.yml")
    assert converged_gateway.returncode == 0, converged_gateway.stdout[-3000:]
    control = next(h["address"] for h in sandbox["hosts"] if h["group"] == "control")
    return {"inventory": folder, "control": control,
            "hosts": {h["name"]: h["address"] for h in sandbox["hosts"]}}  # fmt: skip


def rollout(cluster: dict[str, Any], *args: str) -> tuple[int, dict[str, Any], str]:
    """`clusterai models rollout chat ARGS --json` while 20 clients chat with ``chat``
    through the gateway; (exit code, the rollout's JSON, stderr). Every client request
    must succeed."""
    url = f"http://{cluster['control']}:8000/v1"

    def answered() -> bool:  # the gateway reloads its keys every few seconds
        body = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
        request = urllib.request.Request(url + "/chat/completions", data=body.encode(),
                                         headers={"Authorization": f"Bearer {LOAD_KEY}",
                                                  "Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    wait_for(answered, 60, "the gateway to answer the load's key")
    # A second between a client's chats: about 20 requests a second through the drains
    # and restarts. A tenth of a second (up to 200 a second) cost the clients' threads and
    # the gateway 27 CPU-seconds more over the two rollout tests (112 against 85).
    with ChatLoad(url, LOAD_KEY, 20, pause_s=1.0, max_tokens=8, model="chat",
                  stream=False) as load:  # fmt: skip
        time.sleep(2)  # every client under way
        done = run_cli("models", "rollout", "chat", *args, "-i", str(cluster["inventory"]),
                       "--json")  # fmt: skip
        time.sleep(2)
    assert load.failures == [], load.failures[:5]
    assert load.done > 40, load.done
    return done.code, json.loads(done.stdout) if done.stdout.strip() else {}, done.stderr


def test_a_rollout_that_passes_its_gate_moves_every_worker_and_the_alias_without_a_failure(
    sandbox: dict[str, Any], rollout_cluster: dict[str, Any]
) -> None:
    code, report, stderr = rollout(rollout_cluster, "--to", "360m")
    assert code == 0, stderr[-3000:]
    assert (report["status"], report["from_model"], report["to_model"]) == (
        "succeeded", "smollm2:135m", "smollm2:360m")  # fmt: skip
    steps = [(s["step"], s["hosts"], s["outcome"]) for s in report["steps"]]
    assert steps == [
        ("drain", ["worker1"], "succeeded"), ("pull", ["worker1"], "succeeded"),
        ("evaluate", ["worker1"], "succeeded"), ("undrain", ["worker1"], "succeeded"),
        ("drain", ["worker2"], "succeeded"), ("pull", ["worker2"], "succeeded"),
        ("undrain", ["worker2"], "succeeded"), ("inventory", [], "succeeded"),
        ("alias", ["ctl1"], "succeeded"),
    ], steps  # fmt: skip
    assert "smollm2:360m passed 2 of 2 cases" in report["steps"][2]["detail"]
    hosts = rollout_cluster["hosts"]
    for name in ("worker1", "worker2"):
        assert "smollm2:360m" in tags_of(hosts[name])
    folder: Path = rollout_cluster["inventory"]
    aliases = (folder / "group_vars/all/gateway.yml").read_text()
    assert "    - smollm2:360m  # rolled out by the tests\n" in aliases  # a line edit
    assert yaml.safe_load((folder / "hosts.yml").read_text())["all"]["children"]["workers"][
        "hosts"]["worker1"]["ollama_models"] == ["smollm2:360m"]  # fmt: skip
    # The gateway sends chat to the new model now.
    load = ChatLoad(f"http://{rollout_cluster['control']}:8000/v1", LOAD_KEY, 1,
                    max_tokens=8, model="chat", stream=False)  # fmt: skip
    with load:
        wait_for(lambda: load.done >= 2, 30, "two chats through the gateway")
    assert load.failures == []
    logs = "".join(ssh(sandbox, hosts[n], "cat /var/lib/ollama/models/requests.log").stdout
                   for n in ("worker1", "worker2"))  # fmt: skip
    assert "POST /v1/chat/completions smollm2:360m" in logs
    listed = run_cli("models", "rollouts", "--json")
    assert json.loads(listed.stdout)["rollouts"][0]["id"] == report["id"]


def test_a_rollout_whose_gate_fails_leaves_every_worker_on_its_model_without_a_failure(
    sandbox: dict[str, Any], rollout_cluster: dict[str, Any]
) -> None:
    """The new model answers badly (the fake Ollama's `broken` models): the canary's
    gate fails, the model is deleted from it, it is put back, and nothing else moves."""
    folder: Path = rollout_cluster["inventory"]
    before = {p: p.read_text() for p in folder.rglob("*.yml")}
    hosts = rollout_cluster["hosts"]
    held = {n: tags_of(hosts[n]) for n in ("worker1", "worker2")}
    code, report, stderr = rollout(rollout_cluster, "--to", "smollm2-broken:1b")
    assert code == 1, stderr[-3000:]
    assert report["status"] == "failed"
    assert report["reason"].startswith("the evaluation gate failed on worker1: smollm2-broken:1b"
                                       " fails what "), report["reason"]  # fmt: skip
    assert "capital (no 'Paris')" in report["reason"] and "json (not JSON)" in report["reason"]
    steps = [(s["step"], s["hosts"], s["outcome"]) for s in report["steps"]]
    assert steps == [
        ("drain", ["worker1"], "succeeded"), ("pull", ["worker1"], "succeeded"),
        ("evaluate", ["worker1"], "failed"), ("roll back", ["worker1"], "succeeded"),
    ], steps  # fmt: skip
    assert {n: tags_of(hosts[n]) for n in ("worker1", "worker2")} == held
    assert {p: p.read_text() for p in folder.rglob("*.yml")} == before
    admin = {"Authorization": f"Bearer {ROLLOUT_ADMIN_KEY}"}
    request = urllib.request.Request(f"http://{rollout_cluster['control']}:8000/admin/backends",
                                     headers=admin)  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        backends = {b["name"]: b for b in json.load(response)["backends"]}
    assert not backends["worker1"]["draining"] and not backends["worker2"]["draining"]
