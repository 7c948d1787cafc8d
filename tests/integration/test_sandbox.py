"""The sandbox boots real Debian hosts reachable over SSH with host key checking on.

On a 3-host sandbox of this module's own: these tests only boot, kill and restart hosts,
so under pytest-xdist they run on another worker than test_site.py's cluster, the run's
longest unit (tests/conftest.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from clusterai_runner.sandbox import host as sandbox_host
from tests.helpers import (
    CLUSTERAI,
    booted_sandbox,
    mounts_below,
    nspawn_command_lines,
    processes_mentioning,
    run_cli,
    ssh,
    wait_for,
)

pytestmark = pytest.mark.sandbox

NAME = "sbx"


@pytest.fixture(scope="module")
def cluster(state_dir: Path) -> Iterator[dict[str, Any]]:
    """ctl1, worker1 and worker2, booted (not converged)."""
    with booted_sandbox(NAME, 3) as status:
        yield status


def status_of(name: str) -> dict[str, Any]:
    result = run_cli("sandbox", "status", "--name", name, "--json")
    assert result.code == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_every_host_runs_systemd_behind_strict_ssh(cluster: dict[str, Any]) -> None:
    assert [(h["name"], h["group"], h["state"]) for h in cluster["hosts"]] == [
        ("ctl1", "control", "running"),
        ("worker1", "workers", "running"),
        ("worker2", "workers", "running"),
    ]
    for host in cluster["hosts"]:
        result = ssh(cluster, host["address"], "systemctl is-system-running; hostname")
        assert result.stdout.split() == ["running", host["name"]], result.stderr


def test_each_host_has_its_own_host_key(cluster: dict[str, Any]) -> None:
    recorded = {}
    for line in Path(cluster["known_hosts"]).read_text().splitlines():
        address, _kind, key = line.split()
        recorded[address] = key
    served = {}
    for host in cluster["hosts"]:
        scan = subprocess.run(
            ["ssh-keyscan", "-t", "ed25519", host["address"]],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        served[host["address"]] = scan.stdout.split()[2]
    assert served == recorded
    assert len(set(served.values())) == 3


def test_an_unknown_host_key_is_refused(cluster: dict[str, Any], tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    result = ssh({**cluster, "known_hosts": str(empty)}, cluster["hosts"][0]["address"], "true")
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr


def test_inventory_matches_the_hosts(cluster: dict[str, Any]) -> None:
    inventory = yaml.safe_load(Path(cluster["inventory"]).read_text())["all"]
    for group in ("control", "workers"):
        expected = {
            h["name"]: {
                "ansible_host": h["address"],
                "clusterai_address": h["address"],
                "clusterai_loopback_address": h["address"],
            }
            for h in cluster["hosts"]
            if h["group"] == group
        }
        assert inventory["children"][group]["hosts"] == expected
    assert inventory["vars"]["ansible_ssh_private_key_file"] == cluster["ssh_key"]


def test_up_again_keeps_running_hosts(cluster: dict[str, Any]) -> None:
    again = run_cli("sandbox", "up", "--hosts", "3", "--name", NAME, "--json")
    assert again.code == 0, again.stderr
    assert [h["pid"] for h in json.loads(again.stdout)["hosts"]] == [
        h["pid"] for h in status_of(NAME)["hosts"]
    ]
    assert "booting" not in again.stderr


def test_up_restarts_a_killed_host_and_keeps_the_others(cluster: dict[str, Any]) -> None:
    before = {h["name"]: h["pid"] for h in status_of(NAME)["hosts"]}
    # SIGKILL leaves the container's systemd running without its nspawn: an orphan.
    os.kill(before["worker2"], signal.SIGKILL)
    wait_for(
        lambda: {h["name"]: h["state"] for h in status_of(NAME)["hosts"]}["worker2"] == "orphaned",
        60,
        "worker2 to show as orphaned",
    )
    again = run_cli("sandbox", "up", "--hosts", "3", "--name", NAME, "--json")
    assert again.code == 0, again.stderr
    assert "clearing host worker2" in again.stderr
    after = {h["name"]: h for h in json.loads(again.stdout)["hosts"]}
    assert after["worker2"]["state"] == "running"
    assert after["worker2"]["pid"] != before["worker2"]
    assert {n: after[n]["pid"] for n in ("ctl1", "worker1")} == {
        n: before[n] for n in ("ctl1", "worker1")
    }
    # One nspawn and one init for the host: the orphan is gone.
    assert len(processes_mentioning(Path(cluster["directory"]) / "hosts/worker2/root")) == 2
    # Same directory, so the same host key: known_hosts still matches.
    assert ssh(cluster, after["worker2"]["address"], "true").returncode == 0


def nft_tables() -> set[str]:
    listed = subprocess.run(["nft", "--json", "list", "tables"], capture_output=True, text=True,
                            check=True)  # fmt: skip
    return {t["table"]["name"] for t in json.loads(listed.stdout)["nftables"] if "table" in t}


def test_a_second_sandbox_coexists_grows_and_goes_away_without_a_trace(
    cluster: dict[str, Any],
    state_dir: Path,
) -> None:
    first = run_cli("sandbox", "up", "--hosts", "1", "--name", "second", "--json")
    assert first.code == 0, first.stderr
    second = json.loads(first.stdout)
    ranges = {h["address"].rsplit(".", 1)[0] for h in second["hosts"]}
    assert ranges.isdisjoint({h["address"].rsplit(".", 1)[0] for h in cluster["hosts"]})
    assert all(h["state"] == "running" for h in status_of(NAME)["hosts"])

    grown = run_cli("sandbox", "up", "--hosts", "2", "--name", "second", "--json")
    assert grown.code == 0, grown.stderr
    hosts = json.loads(grown.stdout)["hosts"]
    assert [h["name"] for h in hosts] == ["ctl1", "worker1"]
    assert hosts[0]["pid"] == second["hosts"][0]["pid"]
    assert ssh(second, hosts[1]["address"], "systemctl is-system-running").stdout.strip() == (
        "running"
    )
    # The older host learned the new one's name.
    assert ssh(second, hosts[0]["address"], "getent hosts worker1").stdout.split() == [
        hosts[1]["address"],
        "worker1",
    ]

    # Each host's traffic leaves from its own address: a listener of this test's own, on a
    # loopback address of its own, sees worker1's connection come from worker1's address.
    with socket.socket() as listener:
        listener.bind(("127.0.99.7", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        connect = f"import socket; socket.create_connection(('127.0.99.7', {port}))"
        reached = ssh(second, hosts[1]["address"], f'python3 -c "{connect}"')
        assert reached.returncode == 0, reached.stderr
        accepted, peer = listener.accept()
        accepted.close()
        assert peer[0] == hosts[1]["address"]
    # A table named after worker1 in this machine's rule set (as the firewall role makes
    # one from inside the host): `down` takes it away with the host's source-address table.
    table = f"clusterai_fw_{hosts[1]['address'].replace('.', '_')}"
    subprocess.run(["nft", "add", "table", "inet", table], check=True)
    assert {f"clusterai_sandbox_{h['address'].replace('.', '_')}" for h in hosts} | {table} <= (
        nft_tables()
    )

    directory = Path(second["directory"])
    # An orphaned container (its nspawn killed) is found and stopped too.
    os.kill(hosts[1]["pid"], signal.SIGKILL)
    wait_for(lambda: status_of("second")["hosts"][1]["state"] == "orphaned", 60, "an orphan")
    down = run_cli("sandbox", "down", "--name", "second")
    assert down.code == 0, down.stderr
    assert not directory.exists()
    assert processes_mentioning(directory) == []
    assert mounts_below(directory) == []
    # Each host had cgroups of its own; none is left.
    roots = [directory / "hosts" / h["name"] / "root" for h in hosts]
    assert [c for root in roots for c in sandbox_host.cgroups(root) if c.exists()] == []
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert str(directory) not in ps.stdout
    suffixes = tuple(f"_{h['address'].replace('.', '_')}" for h in hosts)
    assert [t for t in nft_tables() if t.endswith(suffixes)] == []
    assert "second" not in run_cli("sandbox", "list").stdout
    # The first sandbox is untouched.
    assert all(h["state"] == "running" for h in status_of(NAME)["hosts"])

    again = run_cli("sandbox", "down", "--name", "second")
    assert (again.code, again.stdout) == (0, "sandbox second does not exist; nothing to do\n")


def start_up(name: str) -> tuple[subprocess.Popen[str], int]:
    """Start `sandbox up` in the background; return it and its host's nspawn PID."""
    up = subprocess.Popen(
        [str(CLUSTERAI), "sandbox", "up", "--hosts", "1", "--name", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C must reach it even when this suite was started with SIGINT ignored (a
        # background job of a non-interactive shell, nohup).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # This session's host only: another session may have a sandbox of the same name.
    fragment = f"{os.environ['CLUSTERAI_STATE_DIR']}/sandboxes/{name}/hosts/ctl1/root"

    def nspawn_pid() -> int | None:
        for line in nspawn_command_lines():
            if fragment in line:
                return int(line.split()[0])
        return None

    return up, wait_for(nspawn_pid, 60, f"{name}'s nspawn to start")


def sandboxes_in(state_dir: Path) -> set[str]:
    root = state_dir / "sandboxes"
    return set(os.listdir(root)) if root.exists() else set()


def assert_nothing_left(state_dir: Path, name: str, before: set[str]) -> None:
    assert sandboxes_in(state_dir) == before
    assert processes_mentioning(state_dir / "sandboxes" / name) == []


def test_a_host_that_dies_while_booting_is_undone(state_dir: Path) -> None:
    before = sandboxes_in(state_dir)
    up, pid = start_up("dying")
    os.kill(pid, signal.SIGKILL)
    _, stderr = up.communicate(timeout=120)
    assert up.returncode == 1
    assert stderr.splitlines()[-1].startswith(
        "error: sandbox host ctl1: systemd-nspawn exited while booting"
    )
    assert_nothing_left(state_dir, "dying", before)


def test_ctrl_c_during_up_undoes_it(state_dir: Path) -> None:
    before = sandboxes_in(state_dir)
    # A cached host boots in well under a second, so Ctrl-C sent when its nspawn appears
    # can land after `up` is done; such a try says nothing about Ctrl-C: the sandbox is
    # taken down and it is tried again, at most five times.
    for _attempt in range(5):
        up, _ = start_up("interrupted")
        up.send_signal(signal.SIGINT)
        _, stderr = up.communicate(timeout=120)
        if up.returncode != 0:
            break
        assert run_cli("sandbox", "down", "--name", "interrupted").code == 0
    assert up.returncode == 130, stderr
    assert stderr.splitlines()[-1] == "error: interrupted"
    assert_nothing_left(state_dir, "interrupted", before)
