"""The boilerplate play stops bad inventories before contacting any host.

These run the real ansible-playbook on playbooks/boilerplate.yml; the checks need no
facts and no SSH, so the addresses in these inventories are never connected to.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, ansible_playbook


def run_boilerplate(
    tmp_path: Path, inventory: dict[str, object]
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory))
    return ansible_playbook(path, "boilerplate.yml", timeout=300)


KEY = "k" * 24  # clusterai_backend_api_key: llama.cpp's servers require one


def host(address: object = "127.0.0.2", backend: str = "llamacpp") -> dict[str, object]:
    return {
        "ansible_host": "127.0.0.2",
        "clusterai_address": address,
        "clusterai_inference_backend": backend,
        "clusterai_backend_api_key": KEY,
        "clusterai_monitoring_password": "m" * 24,
    }


def inventory(control: dict[str, object], workers: dict[str, object]) -> dict[str, object]:
    return {"all": {"children": {"control": {"hosts": control}, "workers": {"hosts": workers}}}}


def test_a_good_inventory_passes(tmp_path: Path) -> None:
    typed = {"ollama_models": ["a", "b:7b"], "ollama_port": 11434, "ollama_models_prune": True}
    good = inventory(
        {"ctl1": host("127.0.0.2")}, {"w1": {**host("127.0.0.3"), **typed}, "w2": host("::1")}
    )
    result = run_boilerplate(tmp_path, good)
    assert result.returncode == 0, result.stdout


# Problems of the inventory as a whole: each stops the run before any host's own checks.
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            {"all": {"children": {"control": {"hosts": {"ctl1": host()}}}}},
            "inventory: group 'workers' is missing or has no hosts",
        ),
        (
            inventory({"c1": host(), "c2": host()}, {"w1": host()}),
            "inventory: group 'control' holds 2 hosts (c1, c2), it must hold 1",
        ),
        (
            inventory({"both": host()}, {"both": host(), "w1": host()}),
            "inventory: both in both 'control' and 'workers'",
        ),
        (
            inventory(
                {"ctl1": host()},
                {"w1": host(), "w2": {**host(), "clusterai_backend_api_key": "x" * 20}},
            ),
            "inventory: clusterai_backend_api_key differs between workers (w1, w2)",
        ),
    ],
)
def test_a_bad_inventory_stops_with_the_reason(
    tmp_path: Path, bad: dict[str, object], message: str
) -> None:
    result = run_boilerplate(tmp_path, bad)
    assert result.returncode != 0
    assert message in " ".join(result.stdout.split()), result.stdout
    # Facts-free: no task ever tried to reach a host.
    assert "UNREACHABLE" not in result.stdout


# A host's own problems (one task checks each host: plugins/action/clusterai_inventory_check.py):
# (the worker's variables, the message that names it). All of them are workers of one
# inventory, so one ansible-playbook run shows every host stopped with its own reason.
HOST_CASES: list[tuple[dict[str, object], str]] = [
    ({"ansible_host": "127.0.0.3"}, "clusterai_address is not set (set it to"),
    (host("300.1.2.3"), "clusterai_address 300.1.2.3 is not an IP address"),
    (host("gpu-node"), "clusterai_address gpu-node is not an IP address"),
    (host(backend="vllm"), "clusterai_inference_backend vllm is not one of llamacpp, ollama"),
    (
        {"ansible_host": "x", "clusterai_address": "::1"},
        "clusterai_inference_backend is not set (set it to one of llamacpp, ollama",
    ),
    (
        {**host(), "ollama_host": "0.0.0.0"},
        "ollama_host is not read by Cluster AI (set ollama_listen_address and ollama_port instead)",
    ),
    ({**host(), "ollama_models": "llama3"}, 'ollama_models is "llama3", not a list'),
    ({**host(), "ollama_port": "eleven"}, 'ollama_port is "eleven", not an int'),
    ({**host(), "ollama_models_prune": "yes"}, 'ollama_models_prune is "yes", not a bool'),
    ({**host(), "firewall_allow": "127.0.0.1"}, 'firewall_allow is "127.0.0.1", not a list'),
    (
        {**host(), "clusterai_backend_api_key": ""},
        "its llamacpp server requires a key and clusterai_backend_api_key is not set (set"
        ' clusterai_backend_api_key: "{{ vault_clusterai_backend_api_key }}" in group_vars/all',
    ),
    (
        {**host(), "clusterai_backend_api_key": "short"},
        "its llamacpp server requires a key and clusterai_backend_api_key is shorter than 16"
        " characters",
    ),
    (
        {**host(), "clusterai_monitoring_password": "x" * 80},
        "clusterai_monitoring_password is longer than 72 characters",
    ),
    ({**host(), "clusterai_loopback_address": "lo"}, "clusterai_loopback_address lo is not an IP"),
]


def test_each_bad_host_stops_with_its_own_reason(tmp_path: Path) -> None:
    workers = {f"w{i}": variables for i, (variables, _) in enumerate(HOST_CASES, 1)}
    control = {"ctl1": {**host(), "clusterai_monitoring_password": ""}}
    result = run_boilerplate(tmp_path, inventory(control, workers))
    assert result.returncode != 0
    flat = " ".join(result.stdout.split())
    # Each host's message is its task's msg (the first of the problems it lists).
    for i, (_, message) in enumerate(HOST_CASES, 1):
        assert f"msg: 'inventory: host w{i}: {message}" in flat, (i, message, result.stdout)
    assert (
        "msg: 'inventory: host ctl1: clusterai_monitoring_password is not set: Prometheus,"
        " Alertmanager and the exporters require a login" in flat
    ), result.stdout
    assert "UNREACHABLE" not in result.stdout


def test_the_sample_inventory_passes_with_its_vault(tmp_path: Path) -> None:
    password = tmp_path / "vault-password"
    password.write_text("clusterai-sample\n")
    result = ansible_playbook(
        REPO / "inventories/sample/hosts.yml",
        "boilerplate.yml",
        "--vault-password-file",
        str(password),
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "UNREACHABLE" not in result.stdout
    vault = (REPO / "inventories/sample/group_vars/all/vault.yml").read_text()
    assert vault.startswith("$ANSIBLE_VAULT;1.1;AES256\n")


def test_every_problem_of_a_host_is_listed_and_the_first_is_the_message(tmp_path: Path) -> None:
    """One task checks a host's variables (plugins/action/clusterai_inventory_check.py):
    its message is the first problem, in the order the checks run, and the task's
    result lists the others too, so one run shows all of them."""
    w1 = {**host("300.1.2.3"), "gpu_count": 2, "ollama_port": "http", "firewall_allow": "x"}
    result = run_boilerplate(tmp_path, inventory({"ctl1": host()}, {"w1": w1}))
    assert result.returncode != 0
    flat = " ".join(result.stdout.split())
    expected = [
        "inventory: host w1: clusterai_address 300.1.2.3 is not an IP address",
        "inventory: host w1: gpu_count is not read by Cluster AI",
        'inventory: host w1: ollama_port is "http", not an int',
        'inventory: host w1: firewall_allow is "x", not a list',
    ]
    assert f"msg: '{expected[0]}" in flat, result.stdout
    listed = flat[flat.index("problems:") :]
    found = [listed.index(problem) for problem in expected]
    assert found == sorted(found), result.stdout
    assert re.search(
        r"^ctl1\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", result.stdout, re.M
    )
