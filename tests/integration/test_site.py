"""playbooks/site.yml turns sandbox hosts into a monitored cluster, idempotently."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import jinja2
import openai
import pytest
import yaml

from tests.helpers import (
    REPO,
    address,
    ansible_playbook,
    backend_headers,
    monitoring_get,
    run_cli,
    serve_folder,
    ssh,
    venv_path,
    wait_for,
)
from tests.integration.site_cluster import (
    GATEWAY_KEYS,
    LOAD_KEY,
    admin_key,
    converge,
    gateway_call,
    get_json,
)

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def converged(cluster: dict[str, Any]) -> list[dict[str, dict[str, int]]]:
    """The cluster after two site.yml runs, with both runs' recaps. worker1 serves
    embeddings too (llamacpp_server_embedding), worker2 does not."""
    host_vars = Path(cluster["inventory"]).parent / "host_vars"
    host_vars.mkdir(exist_ok=True)
    (host_vars / "worker1.yml").write_text("llamacpp_server_embedding: true\n")
    keys = f"@{GATEWAY_KEYS}"
    return [converge(cluster["inventory"], "site.yml", "-e", keys),
            converge(cluster["inventory"], "site.yml", "-e", keys)]  # fmt: skip


def test_a_second_converge_changes_nothing(converged: list[dict[str, dict[str, int]]]) -> None:
    first, second = converged
    assert set(second) == {"ctl1", "worker1", "worker2"}
    assert all(counters["failed"] == 0 for counters in first.values())
    assert {host: counters["changed"] for host, counters in second.items()} == {
        "ctl1": 0,
        "worker1": 0,
        "worker2": 0,
    }


def test_the_molecule_default_scenarios_checks_pass_on_this_cluster(
    cluster: dict[str, Any], converged: object
) -> None:
    """molecule/default's testinfra checks, which `make molecule` runs after converging
    site.yml on two hosts, run here on this module's cluster: the same site.yml, so the
    suite converges it once for both (tests/integration/test_molecule.py).

    Through the sandbox's inventory with a ControlPath added, as the Molecule scenarios
    have it: testinfra multiplexes its commands over one SSH connection per host only
    when there is one (a connection per command took 23 s in CI)."""
    inventory = yaml.safe_load(Path(cluster["inventory"]).read_text())
    with tempfile.TemporaryDirectory(prefix="cai-cm-") as sockets:  # short: a socket path
        inventory["all"]["vars"]["ansible_ssh_common_args"] += f" -o ControlPath={sockets}/%C"
        derived = Path(sockets) / "inventory.yml"
        derived.write_text(yaml.safe_dump(inventory))
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
             "--connection=ansible", f"--ansible-inventory={derived}", "molecule/default/tests"],
            cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
            env={**os.environ, "MOLECULE_INVENTORY_FILE": str(derived), "PATH": venv_path()},
        )  # fmt: skip
        for host in cluster["hosts"]:  # the masters wait 60 s for more otherwise
            subprocess.run(
                ["ssh", "-o", f"ControlPath={sockets}/%C", "-p", str(cluster["ssh_port"]),
                 "-O", "exit", f"root@{host['address']}"],
                capture_output=True, check=False,
            )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert re.search(r"^\d+ passed", done.stdout.splitlines()[-1]), done.stdout[-2000:]


def test_prometheus_reports_every_target_up(cluster: dict[str, Any], converged: object) -> None:
    url = f"https://{address(cluster, 'ctl1')}:9090/api/v1/query?query=up"

    def targets() -> dict[tuple[str, str], str] | None:
        result = get_json(cluster, url)["data"]["result"]
        values = {(r["metric"]["job"], r["metric"]["instance"]): r["value"][1] for r in result}
        return values if len(values) == 7 and set(values.values()) == {"1"} else None

    assert wait_for(targets, 90, "every target to be scraped and up") == {
        ("prometheus", "ctl1"): "1",
        ("gateway", "ctl1"): "1",
        ("node", "ctl1"): "1",
        ("node", "worker1"): "1",
        ("node", "worker2"): "1",
        ("inference", "worker1"): "1",
        ("inference", "worker2"): "1",
    }


def test_every_workers_inference_endpoint_is_probed_successfully(
    cluster: dict[str, Any], converged: object
) -> None:
    url = f"https://{address(cluster, 'ctl1')}:9090/api/v1/query?query=probe_success"

    def probes() -> dict[str, str] | None:
        result = get_json(cluster, url)["data"]["result"]
        values = {r["metric"]["instance"]: r["value"][1] for r in result}
        return values if values == {"worker1": "1", "worker2": "1"} else None

    assert wait_for(probes, 90, "both inference endpoints probed successfully")


def test_alertmanager_runs_and_prometheus_sends_to_it(
    cluster: dict[str, Any], converged: object
) -> None:
    control = address(cluster, "ctl1")
    assert json.loads(monitoring_get(cluster, f"https://{control}:9093/api/v2/status"))["cluster"]
    managers = wait_for(
        lambda: get_json(cluster, f"https://{control}:9090/api/v1/alertmanagers")["data"][
            "activeAlertmanagers"
        ],
        60,
        "Prometheus to discover Alertmanager",
    )
    assert managers == [{"url": f"https://{control}:9093/api/v2/alerts"}]


def test_the_shipped_rules_pass_promtool(cluster: dict[str, Any], converged: object) -> None:
    # The role's template as the role renders it (its own [[ ]] delimiters), with the
    # default delay.
    template = (REPO / "roles/prometheus/templates/clusterai-alerts.yml.j2").read_text()
    environment = jinja2.Environment(
        variable_start_string="[[", variable_end_string="]]", keep_trailing_newline=True
    )
    rules = environment.from_string(template).render(
        prometheus_inference_down_for="2m",
        prometheus_model_on_cpu_for="5m",
        prometheus_throughput_drop_for="10m",
    )
    assert "for: 2m" in rules and "[[" not in rules
    installed = "/etc/prometheus/rules/clusterai-alerts.yml"
    check = ssh(
        cluster,
        address(cluster, "ctl1"),
        f"promtool check rules {installed} && sha256sum {installed}",
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 8 rules found" in check.stdout
    assert hashlib.sha256(rules.encode()).hexdigest() in check.stdout
    loaded = get_json(cluster, f"https://{address(cluster, 'ctl1')}:9090/api/v1/rules")["data"][
        "groups"
    ]
    assert {rule["name"] for group in loaded for rule in group["rules"]} == {
        "WorkerDown",
        "ExporterDown",
        "DiskAlmostFull",
        "InferenceDown",
        "GpuHot",
        "GpuMemoryFull",
        "ModelOnCpu",
        "ThroughputDrop",
    }


def listeners(port: int) -> set[str]:
    """Local addresses listening on ``port`` on this machine (hosts share its network)."""
    out = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[3].rsplit(":", 1)[0] for line in out.splitlines()}


def test_every_service_listens_only_on_its_hosts_address(
    cluster: dict[str, Any], converged: object
) -> None:
    # Only this cluster's addresses: another sandbox (`make demo`'s) may listen too.
    ours = {h["address"] for h in cluster["hosts"]}
    control = address(cluster, "ctl1")
    assert listeners(9100) >= ours
    for port in (9090, 9093, 9115, 8000, 8443):
        assert listeners(port) & ours == {control}, port
    for port in (8000, 8443, 9090, 9093, 9094, 9100, 9115):
        assert not listeners(port) & {"0.0.0.0", "*", "[::]"}, port


SERVICES = [
    ("worker1", "prometheus-node-exporter", "prometheus"),
    ("ctl1", "prometheus", "prometheus"),
    ("ctl1", "prometheus-alertmanager", "prometheus"),
    ("ctl1", "prometheus-blackbox-exporter", "prometheus"),
    ("worker2", "clusterai-llamacpp", "clusterai-llamacpp"),
    ("ctl1", "clusterai-gateway", "clusterai-gateway"),
    ("ctl1", "clusterai-web", "clusterai-web"),
]


@pytest.mark.parametrize(("host", "unit", "user"), SERVICES)
def test_services_run_hardened_as_a_dedicated_user(
    cluster: dict[str, Any], converged: object, host: str, unit: str, user: str
) -> None:
    show = ssh(
        cluster,
        address(cluster, host),
        f"systemctl show -p ActiveState,User,ProtectSystem,NoNewPrivileges,ProtectHome {unit}",
    )
    assert dict(line.split("=", 1) for line in show.stdout.split()) == {
        "ActiveState": "active",
        "User": user,
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "ProtectHome": "yes",
    }
    shell = ssh(cluster, address(cluster, host), f"getent passwd {user}").stdout.strip()
    assert shell.endswith(":/usr/sbin/nologin")


@pytest.mark.parametrize(
    ("host", "unit"),
    [(host, unit) for host, unit, _ in SERVICES] + [("worker1", "clusterai-firewall")],
)
def test_every_units_exposure_is_at_most_2(
    cluster: dict[str, Any], converged: object, host: str, unit: str
) -> None:
    # --threshold is in tenths: a unit over 2.0 makes systemd-analyze exit non-zero. The
    # service keeps running under its system call filter (the converge waited for it).
    result = ssh(
        cluster,
        address(cluster, host),
        f"systemd-analyze security --no-pager --threshold=20 {unit}; echo rc=$?;"
        f" systemctl is-active {unit}; systemctl show -p SystemCallFilter --value {unit}",
    )
    exposure = re.search(rf"Overall exposure level for {unit}\.service: ([\d.]+)", result.stdout)
    assert exposure, result.stdout[-2000:]
    print(f"{host} {unit}: exposure {exposure[1]}")
    assert float(exposure[1]) <= 2.0
    rc, active, filtered = result.stdout.rsplit("\n", 4)[-4:-1]
    assert (rc, active) == ("rc=0", "active")
    assert "reboot" not in filtered.split() and "read" in filtered.split()


@pytest.mark.parametrize("worker", ["worker1", "worker2"])
def test_each_worker_answers_a_chat_completion_from_smollm2(
    cluster: dict[str, Any], converged: object, worker: str
) -> None:
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Name one colour."}],
        "max_tokens": 12,
        "temperature": 0,
    }
    request = urllib.request.Request(
        f"http://{address(cluster, worker)}:8080/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **backend_headers(cluster)},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        answer = json.load(response)
    assert answer["object"] == "chat.completion"
    assert answer["model"] == "smollm2"
    text = answer["choices"][0]["message"]["content"]
    assert isinstance(text, str) and text.strip()
    assert answer["usage"]["completion_tokens"] > 0


def test_a_workers_stream_is_not_cut_by_a_request_waiting_for_its_model(
    cluster: dict[str, Any], converged: object
) -> None:
    """The gateway probes each worker's /v1/models every few seconds and sends it several
    requests at once: none of them may end an answer that is being streamed."""
    url = f"http://{address(cluster, 'worker1')}:8080"
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Count from one to one hundred in words."}],
        "max_tokens": 96,
        "temperature": 0,
        "stream": True,
    }
    request = urllib.request.Request(
        f"{url}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **backend_headers(cluster)},
    )
    waited: list[int] = []
    models = urllib.request.Request(f"{url}/v1/models", headers=backend_headers(cluster))
    probe = threading.Thread(
        target=lambda: waited.append(urllib.request.urlopen(models, timeout=120).status)
    )
    chunks = []
    with urllib.request.urlopen(request, timeout=120) as stream:
        for line in stream:
            if line.startswith(b"data: {"):
                chunks.append(json.loads(line[6:])["choices"][0])
                if len(chunks) == 2:  # generating: a probe now waits for the model
                    probe.start()
    probe.join(120)
    assert waited == [200]
    assert len(chunks) > 2 and chunks[-1]["finish_reason"] in ("stop", "length"), chunks[-3:]


def test_embeddings_go_only_to_the_worker_that_serves_them(
    cluster: dict[str, Any], converged: object
) -> None:
    """worker2 answers embeddings with a 500 (llama.cpp without --embedding); the gateway
    role declares each worker's capabilities, so every embeddings request goes to worker1
    and neither worker's health suffers."""
    try:
        urllib.request.urlopen(urllib.request.Request(
            f"http://{address(cluster, 'worker2')}:8080/v1/embeddings",
            data=b'{"input": "hello"}',
            headers={"Content-Type": "application/json", **backend_headers(cluster)},
        ), timeout=60)  # fmt: skip
        raise AssertionError("worker2 served embeddings")
    except urllib.error.HTTPError as error:
        assert error.code == 500

    def embed(text: str) -> tuple[int, dict[str, str], Any] | None:
        answer = gateway_call(cluster, "/v1/embeddings", {"model": "smollm2", "input": text})
        return answer if answer[0] != 401 else None  # the gateway reloads its keys

    answers = [wait_for(lambda: embed("hello"), 30, "the gateway to know the role's key")]
    answers += [embed(f"hi {n}") or (401, {}, None) for n in range(5)]
    assert [a[0] for a in answers] == [200] * 6, answers[0]
    assert len(answers[0][2]["data"][0]["embedding"]) > 0
    status, _, backends = gateway_call(cluster, "/admin/backends", key=admin_key(cluster))
    assert status == 200
    assert {(b["name"], b["healthy"], b["failures"], tuple(b["capabilities"]))
            for b in backends["backends"]} == {
        ("worker1", True, 0, ("chat", "completions", "embeddings")),
        ("worker2", True, 0, ("chat", "completions")),
    }  # fmt: skip


def test_the_gateway_serves_both_workers_with_the_inventorys_key(
    cluster: dict[str, Any], converged: object
) -> None:
    chat = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Name one colour."}],
        "max_tokens": 8,
        "temperature": 0,
    }

    def authorized() -> tuple[int, dict[str, str], Any] | None:
        answer = gateway_call(cluster, "/v1/chat/completions", chat)
        return answer if answer[0] != 401 else None

    # The gateway reloads its keys every few seconds.
    status, headers, answer = wait_for(authorized, 30, "the gateway to know the role's key")
    assert status == 200 and answer["choices"][0]["message"]["content"].strip()
    assert headers["X-Cache"] in ("miss", "hit")
    assert gateway_call(cluster, "/v1/chat/completions", chat)[1]["X-Cache"] == "hit"
    assert gateway_call(cluster, "/v1/models", key="cai_00000000_" + "x" * 40)[0] == 401
    assert gateway_call(cluster, "/admin/backends")[0] == 401  # an API key is no admin key
    status, _, backends = gateway_call(cluster, "/admin/backends", key=admin_key(cluster))
    assert status == 200
    assert {(b["name"], b["url"], b["healthy"]) for b in backends["backends"]} == {
        ("worker1", f"http://{address(cluster, 'worker1')}:8080", True),
        ("worker2", f"http://{address(cluster, 'worker2')}:8080", True),
    }
    stored = ssh(
        cluster,
        address(cluster, "ctl1"),
        "cat /var/lib/clusterai-gateway/state.db* | grep -c itappkey;"
        " ls -l /etc/clusterai-gateway/gateway.env",
    )
    assert stored.stdout.startswith("0\n")  # only the key's hash is stored
    assert stored.stdout.split("\n")[1].startswith("-rw------- 1 root root")
    # Each worker's model digest (the role's fact), for the answer cache's keys: the
    # SHA-256 of the GGUF file the worker serves.
    listed = ssh(cluster, address(cluster, "ctl1"), "cat /etc/clusterai-gateway/backends.yml")
    for worker in ("worker1", "worker2"):
        served = ssh(
            cluster, address(cluster, worker), "sha256sum /var/lib/clusterai/models/*.gguf"
        )
        digest = served.stdout.split()[0]
        assert f'"digests": {{"smollm2": "sha256:{digest}"}}' in listed.stdout, listed.stdout


def test_inference_listens_only_on_worker_addresses(
    cluster: dict[str, Any], converged: object
) -> None:
    workers = {h["address"] for h in cluster["hosts"] if h["group"] == "workers"}
    assert listeners(8080) >= workers
    assert not listeners(8080) & {"0.0.0.0", "*", "[::]", address(cluster, "ctl1")}


# On every host: the cluster CA's certificate (roles/pki), to check a service's.
CA = "--cacert /etc/clusterai/pki/ca.crt"


def http_code(cluster: dict[str, Any], host: str, url: str, *options: str) -> str:
    """The status code ``host`` gets for ``url`` ("000": no answer within 3 s), with
    curl's ``options``."""
    command = f"curl -s -m 3 -o /dev/null -w '%{{http_code}}' {' '.join(options)} '{url}'"
    return ssh(cluster, address(cluster, host), command).stdout


def login(cluster: dict[str, Any]) -> str:
    """curl's option for the inventory's monitoring login."""
    inventory = yaml.safe_load(Path(cluster["inventory"]).read_text())
    return f"-u 'clusterai:{inventory['all']['vars']['clusterai_monitoring_password']}'"


def test_a_workers_services_answer_the_control_host_only(
    cluster: dict[str, Any], converged: object
) -> None:
    """The firewall role: from another host's address a worker's inference server and
    exporter do not answer; from the control host they do (the server wants its key).
    Through the gateway the same server answers (test_the_gateway_serves_both_workers...),
    and Prometheus still scrapes every target (test_prometheus_reports_every_target_up,
    test_every_workers_inference_endpoint_is_probed_successfully)."""
    worker1, worker2, ctl1 = (address(cluster, h) for h in ("worker1", "worker2", "ctl1"))
    inference, exporter = f"http://{worker1}:8080/v1/models", f"https://{worker1}:9100/metrics"
    key = backend_headers(cluster)["Authorization"]
    # worker2's connections leave from its own address (the sandbox's source addresses).
    assert http_code(cluster, "worker2", inference) == "000"
    assert http_code(cluster, "worker2", exporter, CA, login(cluster)) == "000"
    assert http_code(cluster, "ctl1", inference) == "401"
    assert http_code(cluster, "ctl1", inference, f"-H 'Authorization: {key}'") == "200"
    assert http_code(cluster, "ctl1", exporter, CA, login(cluster)) == "200"
    # The same from this machine, a socket bound to worker2's address by hand.
    for port in (8080, 9100):
        with pytest.raises(OSError):
            socket.create_connection((worker1, port), timeout=2, source_address=(worker2, 0))
    # The blackbox exporter, which fetches any URL it is given, answers its own host only.
    blackbox = f"https://{ctl1}:9115/metrics"
    assert http_code(cluster, "worker1", blackbox, CA, login(cluster)) == "000"
    assert http_code(cluster, "ctl1", blackbox, CA, login(cluster)) == "200"
    # Each host's rules: a table of its own, loaded by a unit under the hardening baseline.
    table = ssh(cluster, worker1, "systemctl is-active clusterai-firewall; nft list tables")
    assert table.stdout.split("\n")[0] == "active"
    assert f"table inet clusterai_fw_{worker1.replace('.', '_')}" in table.stdout


MONITORED = [  # host, what answers there (port and path), with TLS and the login only
    ("ctl1", 9090, "/api/v1/status/config"),  # Prometheus: its API and configuration
    ("ctl1", 9090, "/-/reload"),
    ("ctl1", 9093, "/api/v2/silences"),  # Alertmanager: silences, which mute alerts
    ("ctl1", 9115, "/probe?target=http://127.0.0.1:1&module=http_2xx"),  # blackbox
    ("ctl1", 8001, "/metrics"),  # the gateway's metrics listener
    ("ctl1", 9100, "/metrics"),
    ("worker1", 9100, "/metrics"),
]


@pytest.mark.parametrize(("host", "port", "path"), MONITORED)
def test_monitoring_answers_only_over_tls_and_only_the_login(
    cluster: dict[str, Any], converged: object, host: str, port: int, path: str
) -> None:
    """From the control host (the firewall lets it in): a certificate of the cluster CA
    for the host's address, 401 without the login or with a wrong one, and nothing over
    plain HTTP; with the login, an answer. Prometheus scrapes every target over TLS with
    it (test_prometheus_reports_every_target_up; test_every_target_is_scraped_over_tls)."""
    url = f"https://{address(cluster, host)}:{port}{path}"
    method = "-X POST" if path == "/-/reload" else ""
    assert http_code(cluster, "ctl1", url, CA, method) == "401"
    assert (
        http_code(cluster, "ctl1", url, CA, method, "-u 'clusterai:wrong-password-0123'") == "401"
    )
    assert http_code(cluster, "ctl1", url.replace("https:", "http:"), method, login(cluster)) in (
        "000", "400",  # exporter-toolkit answers a plain request on a TLS port with 400
    )  # fmt: skip
    if path != "/-/reload":  # a reload is not ours to make here
        assert http_code(cluster, "ctl1", url, CA, login(cluster)) == "200"


def test_every_target_is_scraped_over_tls(cluster: dict[str, Any], converged: object) -> None:
    control = address(cluster, "ctl1")
    active = get_json(cluster, f"https://{control}:9090/api/v1/targets?state=active")["data"]
    urls = {t["labels"]["job"]: t["scrapeUrl"] for t in active["activeTargets"]}
    assert set(urls) == {"prometheus", "gateway", "node", "inference"}
    assert all(url.startswith("https://") for url in urls.values()), urls
    managers = get_json(cluster, f"https://{control}:9090/api/v1/alertmanagers")["data"]
    assert [m["url"] for m in managers["activeAlertmanagers"]] == [
        f"https://{control}:9093/api/v2/alerts"
    ]


def test_common_role_made_the_service_user_and_capped_the_journal(
    cluster: dict[str, Any], converged: object
) -> None:
    for host in cluster["hosts"]:
        result = ssh(
            cluster,
            host["address"],
            "getent passwd clusterai; systemd-analyze cat-config systemd/journald.conf"
            " | grep -E '^(SystemMaxUse|MaxRetentionSec)='",
        )
        lines = result.stdout.split()
        assert lines[0].split(":")[5:] == ["/var/lib/clusterai", "/usr/sbin/nologin"]
        assert lines[1:] == ["SystemMaxUse=512M", "MaxRetentionSec=1month"]


def test_a_stopped_inference_server_raises_inference_down(
    cluster: dict[str, Any], converged: object
) -> None:
    control, worker = address(cluster, "ctl1"), address(cluster, "worker1")

    def pending_inference_alerts() -> set[str] | None:
        alerts = get_json(cluster, f"https://{control}:9090/api/v1/alerts")["data"]["alerts"]
        names = {
            a["labels"]["instance"] for a in alerts if a["labels"]["alertname"] == "InferenceDown"
        }
        return names or None

    assert ssh(cluster, worker, "systemctl stop clusterai-llamacpp").returncode == 0
    try:
        assert wait_for(pending_inference_alerts, 90, "InferenceDown for worker1") == {"worker1"}
    finally:
        assert ssh(cluster, worker, "systemctl start clusterai-llamacpp").returncode == 0
    probe = f"https://{control}:9090/api/v1/query?query=probe_success{{instance=%22worker1%22}}"
    wait_for(
        lambda: get_json(cluster, probe)["data"]["result"][0]["value"][1] == "1",
        120,
        "worker1 back",
    )


def gpu_facts(inventory: str, out: Path, *extra: str) -> dict[str, dict[str, Any]]:
    out.mkdir()
    converge(
        inventory, "../tests/integration/gpu_facts_probe.yml", "-e", f"probe_out={out}", *extra
    )
    return {path.stem: json.loads(path.read_text()) for path in out.glob("*.json")}


def test_gpu_facts_count_what_lspci_shows(
    cluster: dict[str, Any], converged: object, tmp_path: Path
) -> None:
    facts = gpu_facts(cluster["inventory"], tmp_path / "detected")
    assert set(facts) == {"ctl1", "worker1", "worker2"}
    for host in cluster["hosts"]:
        # Counted independently: NVIDIA (10de) VGA (0300) or 3D (0302) controllers.
        lspci = ssh(cluster, host["address"], "lspci -D -mm -n -d 10de:").stdout
        expected = sum(1 for line in lspci.splitlines() if line.split()[1] in {'"0300"', '"0302"'})
        assert facts[host["name"]]["count"] == expected
        assert len(facts[host["name"]]["slots"]) == expected
        if expected == 0:
            assert facts[host["name"]]["models"] == []
            assert facts[host["name"]]["driver"] == ""
    forced = gpu_facts(cluster["inventory"], tmp_path / "forced", "-e", "gpu_facts_force_count=2")
    assert {host: result["count"] for host, result in forced.items()} == {
        "ctl1": 2,
        "worker1": 2,
        "worker2": 2,
    }
    # The forced count is cached like any fact: put what the hosts have back, as a real
    # converge would, for the playbooks after this test that read the cache first
    # (upgrade.yml's control play: the gateway marks workers with GPUs `gpu: true`).
    again = gpu_facts(cluster["inventory"], tmp_path / "again")
    assert {h: r["count"] for h, r in again.items()} == {h: f["count"] for h, f in facts.items()}


def node_targets(cluster: dict[str, Any], control: str) -> dict[str, str]:
    """Prometheus' active node exporter targets: instance -> health."""
    active = get_json(cluster, f"https://{control}:9090/api/v1/targets?state=active")["data"]
    return {
        t["labels"]["instance"]: t["health"]
        for t in active["activeTargets"]
        if t["labels"]["job"] == "node"
    }


def test_gpu_roles_in_check_mode_say_what_they_would_do_and_change_nothing(
    cluster: dict[str, Any], converged: object, tmp_path: Path
) -> None:
    # No GPU here: gpu_facts_force_count makes worker1 count one, and check mode shows
    # what the driver, CUDA and exporter roles would do on Debian 12.
    release = tmp_path / "release"
    release.mkdir()
    archive = release / "nvidia_gpu_exporter_1.3.2_linux_x86_64.tar.gz"
    binary = tmp_path / "nvidia_gpu_exporter"
    binary.write_text("#!/bin/sh\necho test fixture\n")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(binary, "nvidia_gpu_exporter")
    watched = [
        "/etc/apt/sources.list.d/clusterai-nvidia-nonfree.sources",
        "/etc/apt/sources.list.d/clusterai-nvidia-cuda.sources",
        "/etc/modprobe.d/clusterai-blacklist-nouveau.conf",
        "/var/lib/clusterai/reboot-required",
        "/etc/systemd/system/clusterai-gpu-exporter.service",
        "/opt/clusterai/gpu_exporter",
    ]
    worker = address(cluster, "worker1")
    with serve_folder(release) as base:
        run = ansible_playbook(
            cluster["inventory"],
            REPO / "tests/integration/gpu_roles_check.yml",
            "--check",
            "-e",
            json.dumps(
                {
                    "gpu_facts_force_count": 1,
                    "gpu_exporter_archive_url": f"{base}/{archive.name}",
                    "gpu_exporter_archive_sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
                    "gpu_exporter_controller_cache": str(tmp_path / "cache"),
                    "probe_out": str(tmp_path),
                }
            ),
        )
    out = " ".join(run.stdout.split())
    assert run.returncode == 0, run.stdout[-4000:]
    assert (
        "worker1: driver 535 from distro (nvidia-driver, firmware-misc-nonfree,"
        " linux-headers-amd64)" in out
    )
    assert "check mode: would install nvidia-driver, firmware-misc-nonfree" in out
    assert "check mode: would install cuda-toolkit-12-4 from NVIDIA" in out
    assert json.loads((tmp_path / "reboot.json").read_text()) == {"reboot_required": True}
    for path in watched:
        assert ssh(cluster, worker, f"test -e {path}").returncode == 1, path
    gpu_target = ssh(cluster, address(cluster, "ctl1"), "ls /etc/prometheus/targets/gpu").stdout
    assert gpu_target.strip() == ""


def test_models_playbook_on_llamacpp_workers_changes_nothing(
    cluster: dict[str, Any], converged: object
) -> None:
    recap = converge(cluster["inventory"], "models.yml")
    # ctl1 appears for the facts-free inventory checks only.
    assert {host: c["changed"] for host, c in recap.items()} == {
        "ctl1": 0,
        "worker1": 0,
        "worker2": 0,
    }
    assert recap["worker1"]["ok"] > recap["ctl1"]["ok"]


def test_reboot_playbook_reboots_no_host_that_does_not_need_it(
    cluster: dict[str, Any], converged: object
) -> None:
    recap = converge(cluster["inventory"], "reboot.yml", "-e", "clusterai_reboot=true")
    assert {host: c["changed"] for host, c in recap.items()} == {
        "ctl1": 0,
        "worker1": 0,
        "worker2": 0,
    }


def test_restart_playbook_restarts_one_workers_server_and_puts_it_back(
    cluster: dict[str, Any], converged: object
) -> None:
    """restart.yml (the autoscaler's healing step `restart`): worker2's server restarted
    (a new PID), drained at the gateway meanwhile and back in service after; nothing else
    touched."""
    worker2 = address(cluster, "worker2")
    pid = "systemctl show -p MainPID --value clusterai-llamacpp"
    before = ssh(cluster, worker2, pid).stdout.strip()
    recap = converge(cluster["inventory"], "restart.yml", "-e", "clusterai_targets=worker2")
    assert {host: c["changed"] for host, c in recap.items()} == {"worker2": 1}
    after = ssh(cluster, worker2, pid).stdout.strip()
    assert after not in ("", "0", before), (before, after)
    status, _, listed = gateway_call(cluster, "/admin/backends", key=admin_key(cluster))
    assert status == 200
    backend = next(b for b in listed["backends"] if b["name"] == "worker2")
    assert backend["healthy"] and not backend["draining"], backend


def test_an_upgrade_under_load_drains_each_batch_and_fails_no_request(
    cluster: dict[str, Any], converged: object
) -> None:
    """20 clients through the gateway while upgrade.yml changes every worker's server
    (a restart each); each batch is drained at the gateway first, so none fails.

    Each client waits 4 s between its requests (up to 5 requests/s in all, a few hundred
    during the upgrade): without a pause the 20 of them kept both cores busy with 2-token
    answers (hundreds a second) and the upgrade took 97 s against 39 s on an idle
    cluster; at 80 requests/s it still took 115 s in CI and slowed every test running
    beside it, at 20/s the workers' servers spent about 100 CPU-seconds of the suite
    answering, and at 10/s about half that."""
    key = admin_key(cluster)
    failures: list[str] = []
    answered = 0
    done = threading.Event()
    lock = threading.Lock()
    chat = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Say hi."}],
        "max_tokens": 2,
        "temperature": 0.8,  # not deterministic: every request reaches a worker
    }

    def client() -> None:
        nonlocal answered
        while not done.is_set():
            try:
                status, _, body = gateway_call(cluster, "/v1/chat/completions", chat, LOAD_KEY)
            except OSError as exc:
                status, body = 0, str(exc)
            with lock:
                if status == 200:
                    answered += 1
                else:
                    failures.append(f"{status}: {body}")
            done.wait(4.0)

    clients = [threading.Thread(target=client) for _ in range(20)]
    for thread in clients:
        thread.start()
    try:
        wait_for(lambda: answered >= 20, 120, "the clients' first answers")
        before = answered
        # The module's keys, as its converges give them (the sandbox's inventory names a
        # key of its own, which would replace them and count as a change on ctl1).
        run = ansible_playbook(
            cluster["inventory"], "upgrade.yml", "-e", "llamacpp_server_n_ctx=1024",
            "-e", f"@{GATEWAY_KEYS}",
        )  # fmt: skip
        during = answered - before
    finally:
        done.set()
        for thread in clients:
            thread.join(timeout=180)
    assert run.returncode == 0, run.stdout[-4000:]
    assert failures == [], failures[:5]
    assert during >= 100, during  # the load went on through the whole upgrade
    # The control host first, then one worker at a time, in order, each to the end.
    plays = re.findall(r"^PLAY \[(.*)\]", run.stdout, re.M)
    assert plays.count("Prepare the hosts and export their metrics") == 3, plays
    # 3: the control host's own import of the host plays matches no worker.
    assert plays.count("Serve models on the workers") == 3, plays
    drains = re.findall(r"^TASK \[Send the batch's workers no new requests", run.stdout, re.M)
    assert len(drains) == 2
    # Only the workers' setting changed: the control host is converged and left as it was.
    # (The workers keep n_ctx 1024 for the tests after this one, which do not read it.)
    recap = run.stdout[run.stdout.rindex("PLAY RECAP") :]
    changed = dict(re.findall(r"^(\S+)\s+: .*changed=(\d+)", recap, re.M))
    blocks = run.stdout.split("\nTASK [")[1:]
    tasks = [b.split("]", 1)[0] for b in blocks if "changed: [ctl1" in b]
    assert changed["ctl1"] == "0", (recap, tasks)
    assert int(changed["worker1"]) > 0 and int(changed["worker2"]) > 0, recap
    journal = ssh(cluster, address(cluster, "ctl1"), "journalctl -u clusterai-gateway -o cat")
    for worker in ("worker1", "worker2"):
        assert f"backend {worker} drained: no request in flight" in journal.stdout
        assert f"backend {worker} back in service" in journal.stdout
    backends = gateway_call(cluster, "/admin/backends", key=key)[2]["backends"]
    assert {(b["name"], b["healthy"], b["draining"]) for b in backends} == {
        ("worker1", True, False),
        ("worker2", True, False),
    }


def test_a_broken_gateway_config_fails_the_role_and_the_gateway_keeps_serving(
    cluster: dict[str, Any], converged: object
) -> None:
    control = address(cluster, "ctl1")
    pid = "systemctl show -p MainPID --value clusterai-gateway"
    before = ssh(cluster, control, f"{pid}; sha256sum /etc/clusterai-gateway/gateway.yml").stdout
    run = ansible_playbook(
        cluster["inventory"], "site.yml", "--tags", "gateway_configure",
        "-e", '{"gateway_queue_size": -1}',
    )  # fmt: skip
    assert run.returncode != 0
    assert "queue.size: -1 is not a number from 0 to 1000000" in run.stdout, run.stdout[-3000:]
    assert (
        ssh(cluster, control, f"{pid}; sha256sum /etc/clusterai-gateway/gateway.yml").stdout
        == before
    )
    status, _, health = gateway_call(cluster, "/healthz")
    assert status == 200 and health["healthy"] == ["worker1", "worker2"]


SLOW_START = {  # role: (unit, its binary as Debian's unit starts it, port)
    "alertmanager": ("prometheus-alertmanager", "/usr/bin/prometheus-alertmanager", 9093),
    "prometheus": ("prometheus", "/usr/bin/prometheus", 9090),
}


@pytest.mark.parametrize("role", sorted(SLOW_START))
def test_a_reload_right_after_a_restart_waits_for_the_service(
    cluster: dict[str, Any], converged: object, role: str
) -> None:
    """A fresh install notifies both handlers. The service is made slow to start (3 s
    before its binary runs, as on a busy host): a SIGHUP sent while it starts would end
    it for good, so the reload handler must wait until the service is ready."""
    control = address(cluster, "ctl1")
    unit, binary, port = SLOW_START[role]
    drop_in = f"/etc/systemd/system/{unit}.service.d/zz-test-slow-start.conf"
    slow = f"[Service]\nExecStart=\nExecStart=/bin/sh -c 'sleep 3; exec {binary} ${{ARGS}}'\n"
    encoded = base64.b64encode(slow.encode()).decode()  # no quoting through ssh's shell
    made = ssh(
        cluster, control, f"echo {encoded} | base64 -d > {drop_in} && systemctl daemon-reload"
    )
    assert made.returncode == 0, made.stderr
    try:
        run = ansible_playbook(
            cluster["inventory"], REPO / "tests/integration/restart_and_reload.yml",
            "-e", f"reload_role={role}",
        )  # fmt: skip
        assert run.returncode == 0, run.stdout[-3000:]
        assert ssh(cluster, control, f"systemctl is-active {unit}").stdout.strip() == "active"
        monitoring_get(cluster, f"https://{control}:{port}/-/ready")  # a 200, or it raises
    finally:
        ssh(
            cluster,
            control,
            f"rm -f {drop_in} && systemctl daemon-reload && systemctl restart {unit}",
        )

    def ready() -> bool:
        try:
            monitoring_get(cluster, f"https://{control}:{port}/-/ready")
        except OSError:
            return False
        return True

    wait_for(ready, 60, f"{unit} ready again")


def test_scale_out_then_in_touches_only_the_new_host_and_control(
    cluster: dict[str, Any], converged: object
) -> None:
    # worker3 serves on a port and keeps its models in a directory of its own: every
    # part of Cluster AI must find them there (the backend catalogue and its variables).
    host_vars = Path(cluster["inventory"]).parent / "host_vars"
    host_vars.mkdir(exist_ok=True)
    (host_vars / "worker3.yml").write_text(
        "llamacpp_server_port: 8181\nllamacpp_server_models_dir: /srv/cai-models\n"
    )
    grown = run_cli("sandbox", "up", "--hosts", "4", "--name", "it", "--json")
    assert grown.code == 0, grown.stderr
    worker3 = address(json.loads(grown.stdout), "worker3")
    control = address(cluster, "ctl1")
    pid = "systemctl show -p MainPID --value clusterai-gateway"
    gateway_pid = ssh(cluster, control, pid).stdout.strip()

    added = converge(cluster["inventory"], "scale_out.yml", "-e", "clusterai_targets=worker3")
    assert set(added) == {"worker3", "ctl1"}  # worker1 and worker2 never contacted
    assert all(counters["failed"] == 0 for counters in added.values())
    wait_for(
        lambda: node_targets(cluster, control).get("worker3") == "up", 60, "worker3 scraped and up"
    )
    key = admin_key(cluster)

    def gateway_backends() -> list[str] | None:
        try:
            found = gateway_call(cluster, "/admin/backends", key=key)[2]["backends"]
        except OSError:  # restarting
            return None
        return sorted(b["name"] for b in found)

    assert wait_for(gateway_backends, 30, "the gateway up again") == [
        "worker1",
        "worker2",
        "worker3",
    ]
    assert worker3 in listeners(8181) and worker3 not in listeners(8080)
    status = json.loads(
        run_cli("status", "-i", cluster["inventory"], "--limit", "worker3", "--json").stdout
    )
    assert [(h["name"], h["inference"]) for h in status["hosts"]] == [("worker3", "up")]

    def worker3_in_gateway() -> dict[str, Any] | None:
        found = gateway_call(cluster, "/admin/backends", key=key)[2]["backends"]
        backend = next(b for b in found if b["name"] == "worker3")
        return backend if backend["healthy"] else None

    assert wait_for(worker3_in_gateway, 30, "worker3 healthy")["url"] == f"http://{worker3}:8181"
    assert ssh(cluster, worker3, "ls /srv/cai-models").stdout.strip().endswith(".gguf")

    # A client holding a connection to its server open: the drain waits for it, on its port.
    with socket.create_connection((worker3, 8181)):
        run = ansible_playbook(
            cluster["inventory"], "scale_in.yml", "-e", "clusterai_targets=worker3",
            "-e", "clusterai_confirm=true", "-e", "clusterai_drain_timeout=3",
            "-e", "clusterai_wipe=true",
        )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:]
    assert "1 requests still open after 3 s; stopping the server anyway" in run.stdout
    recap = run.stdout[run.stdout.rindex("PLAY RECAP") :]
    removed = set(re.findall(r"^(\S+)\s+: ", recap, re.M)) - {"localhost"}
    assert removed == {"worker3", "ctl1"}
    assert wait_for(gateway_backends, 30, "the gateway up again") == ["worker1", "worker2"]
    journal = ssh(cluster, control, "journalctl -u clusterai-gateway --no-pager -o cat").stdout
    assert "backend worker3 drained: no request in flight" in journal  # before it stopped
    assert "reload: 3 backends; new or changed: worker3; removed: none" in journal
    assert "reload: 2 backends; new or changed: none; removed: worker3" in journal
    assert ssh(cluster, control, pid).stdout.strip() == gateway_pid  # reloaded, not restarted
    wait_for(
        lambda: "worker3" not in node_targets(cluster, control), 60, "worker3 left the targets"
    )
    assert set(node_targets(cluster, control)) == {"ctl1", "worker1", "worker2"}
    stopped = ssh(cluster, worker3, "systemctl is-active clusterai-llamacpp")
    assert stopped.stdout.strip() in ("inactive", "unknown")
    # The wipe took the models from where this host kept them, and the server's files.
    left = ssh(
        cluster, worker3,
        "ls -d /srv/cai-models /opt/clusterai /etc/systemd/system/clusterai-llamacpp.service"
        " 2>/dev/null; getent passwd clusterai-llamacpp clusterai",
    )  # fmt: skip
    assert left.stdout.strip() == ""


class WebSession:
    """The control host's web app, over TLS checked against the cluster CA, with a cookie
    jar, a CSRF token from the last page and a Referer of the site, as a browser sends."""

    def __init__(self, cluster: dict[str, Any]) -> None:
        import http.cookiejar
        import ssl

        from clusterai_runner.config import Settings

        control = address(cluster, "ctl1")
        self.base = f"https://{control}:8443"
        ca = Settings.from_env().cache_dir / "pki" / control / "ca.crt"
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=str(ca))),
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
        )
        self.token = ""

    def call(self, path: str, form: dict[str, str] | None = None) -> tuple[int, str, str]:
        data = None
        headers = {"Referer": f"{self.base}/"}
        if form is not None:
            data = urllib.parse.urlencode({**form, "csrf_token": self.token}).encode()
        request = urllib.request.Request(self.base + path, data, headers)
        try:
            with self.opener.open(request, timeout=30) as answer:
                status, url, text = answer.status, answer.geturl(), answer.read().decode()
        except urllib.error.HTTPError as error:
            status, url, text = error.code, error.geturl(), error.read().decode()
        token = re.search(r'name="csrf_token" value="([^"]+)"', text)
        self.token = token.group(1) if token else self.token
        return status, url, text


def test_the_control_hosts_web_app_shows_the_cluster_and_its_keys_reach_the_gateway(
    cluster: dict[str, Any], converged: object
) -> None:

    web = WebSession(cluster)
    assert web.call("/")[1].startswith(f"{web.base}/login")
    password = (Path(cluster["inventory"]).parent / "web-admin-password").read_text().strip()
    assert web.call("/login", {"name": "admin", "password": "wrong password!"})[0] == 401
    status, url, _ = web.call("/login", {"name": "admin", "password": password})
    assert (status, url) == (200, f"{web.base}/")

    def every_host() -> str | None:  # the hosts as the control host's Prometheus sees them
        page = web.call("/fragments/hosts")[2]
        return page if page.count('data-inference="up"') == 2 else None

    hosts = wait_for(every_host, 60, "the overview to show both workers' servers up")
    assert {h for h in ("ctl1", "worker1", "worker2") if f'data-host="{h}"' in hosts} == {
        "ctl1", "worker1", "worker2"}  # fmt: skip
    name = f"made-on-the-page-{os.getpid()}"
    status, _, made = web.call("/keys/", {"name": name})
    assert status == 201
    key = re.search(r'<pre id="new-key">(cai_[^<]+)</pre>', made).group(1)  # type: ignore[union-attr]
    client = openai.OpenAI(base_url=f"http://{address(cluster, 'ctl1')}:8000/v1", api_key=key)

    def answered() -> str | None:  # the gateway reads its keys every few seconds
        try:
            reply = client.chat.completions.create(
                model="smollm2", max_tokens=8, temperature=0,
                messages=[{"role": "user", "content": "Say hello from the web page."}],
            )  # fmt: skip
        except openai.AuthenticationError:
            return None
        return reply.choices[0].message.content

    assert wait_for(answered, 30, "the gateway to accept the page's key")

    def recorded() -> str | None:  # usage records reach the store within a second or so
        page = web.call("/usage/?window=1h&by=key")[2]
        return page if f'data-group="{name}"' in page else None

    wait_for(recorded, 30, "the usage page to show the request")
    alerts = web.call("/alerts/")
    assert alerts[0] == 200 and "does not answer" not in alerts[2], alerts[2][-2000:]
    gateway = web.call("/gateway/")[2]
    assert 'data-backend="worker1"' in gateway and 'data-backend="worker2"' in gateway
    charts = web.call("/hosts/worker1?window=1h")[2]
    assert "<polyline " in charts and "Charts:" not in charts
    models = web.call("/models/")[2]  # what each worker serves, as the gateway sees it
    assert 'data-models-host="worker1"' in models and "smollm2" in models
    assert web.call("/jobs/scale-out", {"name": "gpu9"})[0] == 400  # no inventory here
    audit = web.call("/audit")[2]
    assert "keys.create" in audit and name in audit


def test_reset_takes_cluster_ai_off_every_host_and_again_changes_nothing(
    cluster: dict[str, Any], converged: object
) -> None:
    # Last in this module: the cluster is not usable afterwards.
    first = converge(cluster["inventory"], "reset.yml", "-e", "clusterai_confirm=true")
    assert all(first[h]["changed"] > 0 for h in ("ctl1", "worker1", "worker2")), first
    addresses = {h["address"] for h in cluster["hosts"]}
    for port in (8000, 8080, 8443, 9090, 9093, 9100, 9115):
        assert not listeners(port) & addresses, port
    for host in ("ctl1", "worker1"):
        leftover = ssh(
            cluster,
            address(cluster, host),
            "ls -d /etc/prometheus /opt/clusterai /var/lib/clusterai /etc/clusterai-gateway"
            " /var/lib/clusterai-gateway /etc/systemd/system/clusterai-llamacpp.service"
            " /etc/systemd/system/clusterai-gateway.service /etc/clusterai-web"
            " /etc/systemd/system/clusterai-web.service 2>/dev/null;"
            " getent passwd clusterai clusterai-gateway clusterai-web",
        )
        assert leftover.stdout.strip() == "", (host, leftover.stdout)
    again = converge(cluster["inventory"], "reset.yml", "-e", "clusterai_confirm=true")
    # worker3, added and removed by the scale test, is still in the sandbox's inventory.
    assert set(again) >= {"ctl1", "worker1", "worker2"}
    assert {c["changed"] for c in again.values()} == {0}
