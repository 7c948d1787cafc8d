"""``clusterai up`` converges sandbox hosts through ansible-runner and stores the run;
``clusterai runs`` shows it again. The cluster is tests/integration/cli_cluster.py's, which
test_web_browser.py walks through next."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import CLUSTERAI, REPO, address, processes_mentioning, run_cli, ssh
from tests.integration.cli_cluster import CANARIES, SECRET_ENV, Vaulted, vaulted_inventory

pytestmark = pytest.mark.sandbox


RECAP = re.compile(r"^\S+\s+: ok=\d+ .*$", re.M)


def ansible_recap(state_dir: Path, run_id: int) -> list[str]:
    """The PLAY RECAP lines Ansible itself printed, from ansible-runner's artifacts."""
    (stdout,) = (state_dir / "runs" / str(run_id) / "artifacts").glob("*/stdout")
    text = stdout.read_text().replace("\r", "")
    return [line.rstrip() for line in RECAP.findall(text[text.rindex("PLAY RECAP") :])]


def controller_files(state_dir: Path) -> list[Path]:
    """Every file of the state directory but the sandbox hosts' own disks (a host keeps
    the gateway's admin key on purpose, in a root-only file)."""
    found = []
    for directory, subdirectories, files in os.walk(state_dir):
        here = Path(directory)
        if here.parent == state_dir / "sandboxes":
            subdirectories[:] = [d for d in subdirectories if d != "hosts"]
        found += [here / f for f in files if (here / f).is_file()]
    return found


def test_up_converges_and_a_second_run_changes_nothing(cli_converged: list[Any]) -> None:
    first, second = cli_converged
    assert first.code == 0, first.stderr[-3000:]
    assert second.code == 0, second.stderr[-3000:]
    assert re.search(r"^run \d+: successful", first.stdout, re.M)
    changed = re.findall(r"changed=(\d+)", second.stdout)
    assert changed and set(changed) == {"0"}
    # The live view named tasks as they ran.
    assert "Install the base packages" in first.stderr


def test_runs_show_prints_the_recap_ansible_printed(
    state_dir: Path, cli_converged: list[Any], vaulted: Vaulted
) -> None:
    runs = json.loads(run_cli("runs", "list", "--json").stdout)
    mine = [r for r in runs if r["inventory"] == str(vaulted.inventory)]
    assert [r["status"] for r in mine[:2]] == ["successful", "successful"]
    run_id = mine[0]["id"]
    shown = run_cli("runs", "show", str(run_id))
    assert shown.code == 0
    ours = [line.rstrip() for line in RECAP.findall(shown.stdout)]
    assert ours == ansible_recap(state_dir, run_id)
    assert {line.split()[0] for line in ours} >= {"ctl1", "worker1"}
    events = json.loads(run_cli("runs", "show", str(run_id), "--json").stdout)["events"]
    assert events and all(e["status"] in ("ok", "skipped") for e in events)


def test_a_missing_inventory_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_cli("up", "-i", str(tmp_path / "nope.yml"))
    assert result.code == 2
    assert result.stderr == (
        f"error: inventory {tmp_path / 'nope.yml'}: does not exist (give the path with -i)\n"
    )


def test_an_unknown_run_is_one_line_and_exit_2() -> None:
    result = run_cli("runs", "show", "999999")
    assert result.code == 2
    assert result.stderr == "error: run 999999: no such run (see `clusterai runs list`)\n"


def latest_run() -> dict[str, Any]:
    runs = json.loads(run_cli("runs", "list", "--json", "--last", "1").stdout)
    return dict(runs[0])


def test_status_shows_each_hosts_health_models_and_last_run(
    cli_sandbox: dict[str, Any], cli_converged: list[Any], vaulted: Vaulted
) -> None:
    # The vaulted inventory's backend key is the one the servers were given: with it,
    # status lists their models.
    vault = ("--vault-password-file", str(vaulted.password_file))
    result = run_cli("status", "-i", str(vaulted.inventory), "--json", *vault)
    assert result.code == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    hosts = {h["name"]: h for h in report["hosts"]}
    assert report["summary"] == {"healthy": 2, "unhealthy": 0}
    worker = hosts["worker1"]
    assert (worker["reachable"], worker["inference"], worker["exporter"]) == (True, "up", "up")
    assert worker["backend"] == "llamacpp"
    assert any("smollm2" in m.lower() for m in worker["models"]), worker["models"]
    assert worker["gpus"] == []  # no GPU exporter on a GPU-less host
    assert worker["last_run"]["result"] == "ok"
    assert hosts["ctl1"]["inference"] == "n/a"
    table = run_cli("status", "-i", cli_sandbox["inventory"])
    assert table.stdout.splitlines()[0].split()[:4] == ["host", "address", "ssh", "inference"]


def test_up_with_tags_finds_the_facts_of_earlier_runs(
    cli_converged: list[Any], vaulted: Vaulted
) -> None:
    """--tags skips gpu_facts, whose facts the GPU roles' conditions need: they come from
    the fact cache the earlier runs filled (ansible-runner kept it per run: every host
    failed on clusterai_gpu_count). The inventory of the converge: its monitoring password
    is the one the node exporter has."""
    result = run_cli("up", "-i", str(vaulted.inventory), "--tags", "node_exporter", "--limit",
                     "worker1", "--vault-password-file", str(vaulted.password_file),
                     timeout=600)  # fmt: skip
    assert result.code == 0, result.stdout + result.stderr[-3000:]
    recap = r"^worker1\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0\s"
    assert re.search(recap, result.stdout, re.M), result.stdout


def test_a_host_whose_key_changed_is_not_contacted(
    cli_sandbox: dict[str, Any], cli_converged: list[Any], tmp_path: Path
) -> None:
    """ansible-runner turns Ansible's host key checking off unless told: a host that
    answers with another key than known_hosts holds must fail, not be converged."""
    worker1 = address(cli_sandbox, "worker1")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True)  # fmt: skip
    public = (tmp_path / "k.pub").read_text().split()
    (tmp_path / "known_hosts").write_text(f"{worker1} {public[0]} {public[1]}\n")
    inventory = tmp_path / "hosts.yml"
    text = Path(cli_sandbox["inventory"]).read_text()
    assert cli_sandbox["known_hosts"] in text
    inventory.write_text(text.replace(cli_sandbox["known_hosts"], str(tmp_path / "known_hosts")))
    result = run_cli("up", "-i", str(inventory), "--limit", "worker1", "--tags", "gpu_facts")
    assert result.code == 1, result.stdout + result.stderr[-3000:]
    # Mitogen's words for OpenSSH's "Host key verification failed"; the facts-free
    # inventory checks before it count as ok, nothing reached the host.
    assert "mismatching host key" in result.stderr, result.stderr[-3000:]
    assert re.search(r"^worker1\s+: .*changed=0\s+unreachable=1\s", result.stdout, re.M)


def start_up(inventory: str, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(CLUSTERAI), "up", "-i", inventory, *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_task(process: subprocess.Popen[str], number: int) -> list[str]:
    """Read the live view until task ``number`` starts; the lines read so far."""
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if line.startswith(f"[{number}] "):
            return lines
    raise AssertionError(f"the run ended before task {number}: {''.join(lines)}")


def test_ctrl_c_cancels_the_run_and_stores_it_as_canceled(
    cli_sandbox: dict[str, Any], cli_converged: list[Any]
) -> None:
    process = start_up(cli_sandbox["inventory"])
    wait_for_task(process, 5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert stderr.splitlines()[-1].startswith("error: run ")
    assert "canceled by Ctrl-C" in stderr.splitlines()[-1]
    assert latest_run()["status"] == "canceled"
    # Nothing of the run is left: Ansible's task workers, in sessions of their own, were
    # not in the process group ansible-runner kills, and outlived it, waiting forever.
    assert processes_mentioning(Path(cli_sandbox["inventory"])) == []


def test_up_from_another_thread_through_the_use_case_is_canceled_and_stored_so(
    cli_sandbox: dict[str, Any], cli_converged: list[Any]
) -> None:
    """What the web app and the autoscaler do: the use case in a thread that is not the
    main thread (no signal handler can be installed there), canceled by a token."""
    from clusterai_runner.config import Settings, using_store
    from clusterai_runner.usecases.converge import CancelToken, RunRecord, TaskEvent, up

    settings = Settings.from_env()
    cancel = CancelToken()
    started: list[str] = []
    results: list[RunRecord | BaseException] = []

    def on_event(event: TaskEvent) -> None:
        if event.status == "started" and event.task not in started:
            started.append(event.task)
            if len(started) == 5:
                cancel.cancel()

    def work() -> None:
        try:
            results.append(
                up(settings, Path(cli_sandbox["inventory"]), on_event=on_event, cancel=cancel)
            )
        except BaseException as exc:  # handed to the test's thread below
            results.append(exc)

    thread = threading.Thread(target=work, name="not-main")
    thread.start()
    thread.join(timeout=300)
    assert not thread.is_alive()
    (record,) = results
    assert isinstance(record, RunRecord), record
    assert record.outcome.status == "canceled"
    with using_store(settings) as store:  # closed: no -wal file left behind
        stored = store.run(record.id)
    assert stored is not None and stored.status == "canceled"
    assert processes_mentioning(Path(cli_sandbox["inventory"])) == []


def kill_host(sandbox: dict[str, Any], name: str) -> None:
    """Power a host off: SIGKILL its nspawn and its init, ending every process it has."""
    root = Path(sandbox["directory"]) / "hosts" / name / "root"
    for pid in processes_mentioning(root):
        os.kill(pid, signal.SIGKILL)


def test_a_host_killed_mid_run_fails_alone_and_a_rerun_heals_it(
    cli_sandbox: dict[str, Any], cli_converged: list[Any], vaulted: Vaulted
) -> None:
    # The inventory and vault of the converge it is compared with.
    vault = ("--vault-password-file", str(vaulted.password_file))
    process = start_up(str(vaulted.inventory), *vault)
    wait_for_task(process, 8)
    kill_host(cli_sandbox, "worker1")
    _, stderr = process.communicate(timeout=900)
    assert process.returncode == 1, stderr[-3000:]
    assert "failed on worker1" in stderr.splitlines()[-1]
    run = latest_run()
    assert run["status"] == "failed"
    worker, control = run["recap"]["worker1"], run["recap"]["ctl1"]
    assert worker["unreachable"] + worker["failed"] > 0, run["recap"]
    assert control["unreachable"] == control["failed"] == 0, run["recap"]
    # The control host ran to the end of the playbook: as many tasks as a full converge.
    runs = json.loads(run_cli("runs", "list", "--last", "100", "--json").stdout)
    last_full = next(
        r for r in runs
        if r["id"] < run["id"] and r["playbook"] == "site.yml" and r["status"] == "successful"
        and r["inventory"] == run["inventory"] and "ctl1" in r["recap"]  # not a --limit run
    )  # fmt: skip
    full = last_full["recap"]
    assert control["ok"] == full["ctl1"]["ok"]

    restarted = run_cli("sandbox", "up", "--hosts", "2", "--name", "cliup")
    assert restarted.code == 0, restarted.stderr
    healed = run_cli("up", "-i", str(vaulted.inventory), *vault, timeout=1200)
    assert healed.code == 0, healed.stderr[-3000:]
    assert latest_run()["recap"]["worker1"]["failed"] == 0


COMMENTED = """\
# Hand-written notes that scale-out and scale-in must keep, byte for byte.
"""


def test_scale_out_then_scale_in_leaves_the_inventory_byte_identical(
    cli_sandbox: dict[str, Any], cli_converged: list[Any], tmp_path: Path
) -> None:
    # The operator's own copy of the inventory, with comments of its own.
    inventory = tmp_path / "hosts.yml"
    text = Path(cli_sandbox["inventory"]).read_text()
    text = text.replace("    workers:\n", "    # Inference servers.\n    workers:\n")
    inventory.write_text(COMMENTED + text + "# end of the inventory\n")
    original = inventory.read_bytes()
    grown = run_cli("sandbox", "up", "--hosts", "3", "--name", "cliup", "--json")
    assert grown.code == 0, grown.stderr
    address = next(
        h["address"] for h in json.loads(grown.stdout)["hosts"] if h["name"] == "worker2"
    )

    added = run_cli(
        "scale-out", "-i", str(inventory), "worker2", "--address", address, timeout=1200
    )
    assert added.code == 0, added.stdout + added.stderr[-3000:]
    # worker1 is not contacted (localhost runs the checks that need no host).
    assert set(latest_run()["recap"]) == {"localhost", "ctl1", "worker2"}
    assert "worker2:\n" in inventory.read_text()
    status = json.loads(run_cli("status", "-i", str(inventory), "--json").stdout)
    assert {h["name"]: h["inference"] for h in status["hosts"]}["worker2"] == "up"

    # A client holding a connection open: the drain waits for it, up to its timeout.
    with socket.create_connection((address, 8080)):
        removed = run_cli(
            "scale-in", "-i", str(inventory), "worker2", "--yes", "--drain-timeout", "3"
        )
    assert removed.code == 0, removed.stdout + removed.stderr[-3000:]
    assert removed.stdout.splitlines()[-1] == f"removed worker2 from {inventory}"
    run = json.loads(run_cli("runs", "show", str(latest_run()["id"]), "--json").stdout)
    messages = [e["message"] for e in run["events"] if e["host"] == "worker2"]
    assert "1 requests still open after 3 s; stopping the server anyway" in messages
    assert inventory.read_bytes() == original
    assert set(latest_run()["recap"]) == {"localhost", "ctl1", "worker2"}


def test_scale_out_into_the_state_store_then_in_again(
    cli_sandbox: dict[str, Any],
    cli_converged: list[Any],
    vaulted: Vaulted,
    state_dir: Path,
    tmp_path: Path,
) -> None:
    """Scale-out and scale-in over an inventory directory holding the static hosts, the
    vault file and the state plugin's config: scale-out records the new host in the store
    and leaves hosts.yml alone. At the end no secret of the vaulted runs is on the
    controller's disk (the state directory), in a host's journal or in ps."""
    # The sandbox's inventory without worker2 (an earlier test grew the sandbox).
    static = yaml.safe_load(Path(cli_sandbox["inventory"]).read_text())
    static["all"]["children"]["workers"]["hosts"].pop("worker2", None)
    inventory = vaulted_inventory(
        tmp_path / "inventory", yaml.safe_dump(static, sort_keys=False), vaulted.password_file
    )
    (inventory / "clusterai_state.yml").write_text("plugin: clusterai_state\n")
    vault = ("--vault-password-file", str(vaulted.password_file))
    watching = threading.Event()
    seen_in_ps: list[str] = []

    def watch_ps() -> None:
        while not watching.wait(0.2):
            listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True)
            seen_in_ps.extend(n for n, v in CANARIES.items() if v in listing.stdout)

    watcher = threading.Thread(target=watch_ps)
    watcher.start()
    before = (inventory / "hosts.yml").read_bytes()
    grown = run_cli("sandbox", "up", "--hosts", "3", "--name", "cliup", "--json")
    hosts = json.loads(grown.stdout)["hosts"]
    address = next(h["address"] for h in hosts if h["name"] == "worker2")

    added = run_cli("scale-out", "-i", str(inventory), "worker2", "--address", address, *vault,
                    env=SECRET_ENV, timeout=1200)  # fmt: skip
    assert added.code == 0, added.stdout + added.stderr[-3000:]
    assert (inventory / "hosts.yml").read_bytes() == before
    # Plain Ansible sees the recorded host through the plugin.
    listed = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(inventory),
         "--host", "worker2", *vault],
        capture_output=True, text=True, check=False,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")},
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert address in listed.stdout

    # An answered request leaves its connection in TIME_WAIT for a minute: that is not an
    # open request, and the drain (60 s by default) must not wait for it.
    asked = urllib.request.Request(
        f"http://{address}:8080/v1/models",
        headers={"Authorization": f"Bearer {CANARIES['backend_key']}"},
    )
    with urllib.request.urlopen(asked, timeout=10) as answer:
        assert answer.status == 200
    removed = run_cli("scale-in", "-i", str(inventory), "worker2", "--yes", *vault,
                      env=SECRET_ENV)  # fmt: skip
    watching.set()
    watcher.join()
    assert removed.code == 0, removed.stdout + removed.stderr[-3000:]
    assert removed.stdout.splitlines()[-1] == "removed worker2 from the state store"
    run = json.loads(run_cli("runs", "show", str(latest_run()["id"]), "--json").stdout)
    drained = [e for e in run["events"] if e["task"].startswith("Wait until no other request")]
    assert [(e["host"], e["status"], e["message"]) for e in drained] == [("worker2", "ok", "")]
    assert (inventory / "hosts.yml").read_bytes() == before
    again = run_cli("status", "-i", str(inventory), "--json", *vault)
    assert again.code == 0, again.stderr[-3000:]
    assert "worker2" not in {h["name"] for h in json.loads(again.stdout)["hosts"]}
    assert seen_in_ps == []
    files = controller_files(state_dir)
    on_disk = {
        n: [str(p) for p in files if v.encode() in p.read_bytes()] for n, v in CANARIES.items()
    }
    assert on_disk == {name: [] for name in CANARIES}
    for host in cli_sandbox["hosts"]:
        journal = ssh(cli_sandbox, host["address"], "journalctl -o cat --no-pager")
        assert journal.returncode == 0, journal.stderr
        assert [n for n, v in CANARIES.items() if v in journal.stdout] == [], host["name"]
