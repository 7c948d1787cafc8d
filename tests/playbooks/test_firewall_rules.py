"""The firewall role's rules, loaded for real into a network namespace this test creates.

The shipped template is rendered with the role's own defaults and vars for a worker and
for the control host (a facts-free play), loaded with nft into a fresh namespace, and
probed from inside it: each connection comes from a chosen loopback address (the control
host, the host itself, an address in firewall_allow, a stranger) to a listener the probe
opened. Nothing leaves the namespace, which is deleted afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
import yaml

from tests.helpers import REPO, ansible_playbook

SELF, CONTROL, ALLOWED, STRANGER, OTHER_HOST = (
    "127.0.0.2", "127.0.0.3", "127.0.0.9", "127.0.0.4", "127.0.0.5",
)  # fmt: skip

# Listens on every (address, port) given, then connects to each from its source address;
# prints which connections were accepted. Runs inside the namespace.
PROBE = """
import json, socket, sys
spec = json.loads(sys.argv[1])
servers = []
for address, port in spec["listen"]:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, port)); s.listen(16); servers.append(s)
results = []
for source, address, port in spec["connect"]:
    c = socket.socket(); c.settimeout(0.5); c.bind((source, 0))
    try:
        c.connect((address, port)); results.append(True)
    except OSError:
        results.append(False)
    c.close()
print(json.dumps(results))
"""

PLAY = """\
- name: Render the firewall's rules as the role does
  hosts: all
  gather_facts: false
  vars_files:
    - {role}/defaults/main.yml
    - {role}/vars/main.yml
  tasks:
    - name: Render the rules
      ansible.builtin.template:
        src: {role}/templates/firewall.nft.j2
        dest: "{{{{ out_dir }}}}/{{{{ inventory_hostname }}}}.nft"
        mode: "0644"
      delegate_to: localhost
"""


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Each host's rendered rule file: w1 (a llama.cpp worker) and ctl1 (control)."""
    out = tmp_path_factory.mktemp("firewall")
    inventory = {
        "all": {
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                "clusterai_inference_backend": "llamacpp",
            },
            "children": {
                "control": {"hosts": {"ctl1": {"clusterai_address": CONTROL,
                                               "clusterai_loopback_address": CONTROL}}},
                "workers": {"hosts": {"w1": {"clusterai_address": SELF}}},
            },
        }
    }  # fmt: skip
    (out / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (out / "play.yml").write_text(PLAY.format(role=REPO / "roles" / "firewall"))
    # As extra variables: the play reads the role's defaults as vars_files, above inventory.
    settings = {"out_dir": str(out), "firewall_allow": [ALLOWED], "firewall_ssh_port": 2222,
                "clusterai_model_store": True}  # fmt: skip
    done = ansible_playbook(out / "hosts.yml", out / "play.yml", "-e", json.dumps(settings))
    assert done.returncode == 0, done.stdout[-3000:]
    return {host: (out / f"{host}.nft").read_text() for host in ("w1", "ctl1")}


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"cai-fw-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)


def load(namespace: str, text: str) -> None:
    done = subprocess.run(
        ["ip", "netns", "exec", namespace, "nft", "-f", "-"],
        input=text, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def reachable(namespace: str, listen: list[tuple[str, int]],
              connect: list[tuple[str, str, int]]) -> dict[tuple[str, str, int], bool]:  # fmt: skip
    done = subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", PROBE,
         json.dumps({"listen": listen, "connect": connect})],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dict(zip(connect, json.loads(done.stdout), strict=True))


def test_a_workers_services_answer_only_the_control_host_and_the_allowed(
    rules: dict[str, str], namespace: str
) -> None:
    load(namespace, rules["w1"])
    services = [(SELF, 8080), (SELF, 9100)]
    listen = [*services, (SELF, 2222), (SELF, 5555), (OTHER_HOST, 8080)]
    connect = [
        (source, SELF, port)
        for source in (CONTROL, ALLOWED, SELF, STRANGER)
        for port in (8080, 9100, 2222, 5555)
    ] + [(STRANGER, OTHER_HOST, 8080)]
    got = reachable(namespace, listen, connect)
    for port in (8080, 9100):  # the inference server (backend catalogue), node exporter
        assert got[(CONTROL, SELF, port)] and got[(ALLOWED, SELF, port)] and got[(SELF, SELF, port)]
        assert not got[(STRANGER, SELF, port)], port
    assert all(got[(source, SELF, 2222)] for source in (CONTROL, ALLOWED, SELF, STRANGER))
    # A port no role of this host opens: dropped, from the control host too.
    assert not any(got[(source, SELF, 5555)] for source in (CONTROL, ALLOWED, STRANGER))
    # Only traffic to the host's own address is looked at.
    assert got[(STRANGER, OTHER_HOST, 8080)]


def test_the_control_host_serves_clients_and_keeps_its_monitoring_and_blackbox_close(
    rules: dict[str, str], namespace: str
) -> None:
    load(namespace, rules["ctl1"])
    ports = (8000, 8443, 9090, 9093, 9100, 9115, 2222, 8095)
    got = reachable(
        namespace,
        [(CONTROL, port) for port in ports],
        [(source, CONTROL, port) for source in (CONTROL, ALLOWED, STRANGER, SELF)
         for port in ports],
    )  # fmt: skip
    for port in (8000, 8443):  # the gateway, the web app
        assert all(got[(source, CONTROL, port)] for source in (CONTROL, ALLOWED, STRANGER))
    for port in (9090, 9093, 9100):  # Prometheus, Alertmanager, node exporter
        assert got[(CONTROL, CONTROL, port)] and got[(ALLOWED, CONTROL, port)]
        assert not got[(STRANGER, CONTROL, port)], port
    for port in (9090, 9093, 9100):  # nor a worker (SELF is w1's address)
        assert not got[(SELF, CONTROL, port)], port
    # The model store: the workers too, not strangers.
    assert got[(SELF, CONTROL, 8095)] and got[(CONTROL, CONTROL, 8095)]
    assert got[(ALLOWED, CONTROL, 8095)] and not got[(STRANGER, CONTROL, 8095)]
    # The blackbox exporter (on the host's address, its loopback being shared): itself only.
    assert got[(CONTROL, CONTROL, 9115)]
    assert not got[(ALLOWED, CONTROL, 9115)] and not got[(STRANGER, CONTROL, 9115)]


def test_a_reload_replaces_the_table_and_stopping_deletes_it(
    rules: dict[str, str], namespace: str
) -> None:
    load(namespace, rules["w1"])
    load(namespace, rules["w1"])  # what `systemctl reload` runs: no duplicate rules
    table = "clusterai_fw_127_0_0_2"
    listed = subprocess.run(
        ["ip", "netns", "exec", namespace, "nft", "list", "table", "inet", table],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert listed.count("counter packets") == 1
    subprocess.run(["ip", "netns", "exec", namespace, "nft", "delete", "table", "inet", table],
                   check=True)  # fmt: skip
    assert table not in subprocess.run(
        ["ip", "netns", "exec", namespace, "nft", "list", "tables"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
