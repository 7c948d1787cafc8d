"""Testinfra checks of the scenario's hosts, run over SSH with host key checking on."""

import os

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("all")


def test_systemd_reports_running(host):
    assert host.run("systemctl is-system-running").stdout.strip() == "running"


def test_hostname_is_the_inventory_name(host):
    assert host.check_output("hostname") == host.ansible.get_variables()["inventory_hostname"]


def test_sshd_listens_only_on_the_host_address(host):
    # Sandbox hosts share the machine's network namespace, so `ss` shows every host's
    # listeners; sshd's effective configuration says which one is this host's.
    address = host.ansible.get_variables()["ansible_host"]  # clusterai_address follows it
    listen = [
        line.split()[1]
        for line in host.check_output("sshd -T").splitlines()
        if line.startswith("listenaddress ")
    ]
    assert listen == [f"{address}:22"]
    assert host.socket(f"tcp://{address}:22").is_listening


def test_password_login_is_off(host):
    config = host.check_output("sshd -T")
    assert "passwordauthentication no" in config
    assert "permitrootlogin without-password" in config


def test_python3_is_present(host):
    assert host.exists("python3")


def _address(host):
    return host.ansible.get_variables()["ansible_host"]  # clusterai_address follows it


def _groups(host):
    return host.ansible.get_variables()["group_names"]


def test_clusterai_service_user(host):
    user = host.user("clusterai")
    assert user.exists
    assert user.shell == "/usr/sbin/nologin"
    assert user.home == "/var/lib/clusterai"


def _assert_hardened_service(host, unit, port):
    service = host.service(unit)
    assert service.is_running
    assert service.is_enabled
    show = host.check_output(f"systemctl show -p User,ProtectSystem,NoNewPrivileges {unit}")
    assert sorted(show.split()) == [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "User=prometheus",
    ]
    assert host.socket(f"tcp://{_address(host)}:{port}").is_listening


def _status(host, url, *options):
    command = " ".join(["curl", "-s", "-o", "/dev/null", "-w", "'%{http_code}'", *options, url])
    return host.run(command).stdout


def _assert_tls_and_login(host, port, path="/metrics"):
    """The service answers over TLS with the cluster CA's certificate for this address,
    and only the monitoring login: 401 without it, 200 with it, nothing over plain HTTP."""
    url = f"https://{_address(host)}:{port}{path}"
    ca = "--cacert /etc/clusterai/pki/ca.crt"
    variables = host.ansible.get_variables()
    user = variables.get("clusterai_monitoring_user", "clusterai")
    login = f"-u '{user}:{variables['clusterai_monitoring_password']}'"
    assert _status(host, url, ca) == "401"
    assert _status(host, url, ca, login) == "200"
    assert _status(host, url.replace("https:", "http:"), login) != "200"


def test_node_exporter_runs_hardened_on_the_host_address(host):
    _assert_hardened_service(host, "prometheus-node-exporter", 9100)
    _assert_tls_and_login(host, 9100)


def test_control_runs_prometheus_and_alertmanager(host):
    if "control" not in _groups(host):
        return
    _assert_hardened_service(host, "prometheus", 9090)
    _assert_hardened_service(host, "prometheus-alertmanager", 9093)
    _assert_hardened_service(host, "prometheus-blackbox-exporter", 9115)
    _assert_tls_and_login(host, 9090, "/api/v1/status/config")
    _assert_tls_and_login(host, 9093, "/api/v2/status")
    _assert_tls_and_login(host, 9115)
    _assert_tls_and_login(host, 8001)  # the gateway's metrics listener
    rules = host.run("promtool check rules /etc/prometheus/rules/clusterai-alerts.yml")
    assert rules.rc == 0, rules.stderr


def test_workers_serve_smollm2_on_their_address(host):
    if "workers" not in _groups(host):
        return
    service = host.service("clusterai-llamacpp")
    assert service.is_running
    assert service.is_enabled
    assert host.user("clusterai-llamacpp").shell == "/usr/sbin/nologin"
    assert host.socket(f"tcp://{_address(host)}:8080").is_listening
    url = f"http://{_address(host)}:8080/v1/models"
    # Every request must bear the backend key: without it, 401.
    assert host.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' {url}") == "401"
    key = host.ansible.get_variables()["clusterai_backend_api_key"]
    models = host.check_output(f"curl -sf -H 'Authorization: Bearer {key}' {url}")
    assert '"id":"smollm2"' in models.replace(" ", "")


def test_control_runs_the_gateway_over_the_workers(host):
    if "control" not in _groups(host):
        return
    service = host.service("clusterai-gateway")
    assert service.is_running
    assert service.is_enabled
    show = host.check_output(
        "systemctl show -p User,ProtectSystem,NoNewPrivileges,MemoryDenyWriteExecute"
        " clusterai-gateway"
    )
    assert sorted(show.split()) == [
        "MemoryDenyWriteExecute=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "User=clusterai-gateway",
    ]
    assert host.user("clusterai-gateway").shell == "/usr/sbin/nologin"
    assert host.file("/etc/clusterai-gateway/gateway.env").mode == 0o600
    assert host.socket(f"tcp://{_address(host)}:8000").is_listening
    health = host.check_output(f"curl -s http://{_address(host)}:8000/healthz")
    assert '"status": "ok"' in health
