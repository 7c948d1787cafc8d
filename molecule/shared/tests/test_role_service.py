"""Testinfra checks of the service each role scenario's role runs, on the scenario's
sandbox host, over SSH with host key checking on.

Every role scenario (molecule/<role>/) uses this file (verifier directory in
.config/molecule/config.yml); SERVICES says what its role runs.
"""

import os

import testinfra.utils.ansible_runner

SCENARIO = os.environ["MOLECULE_SCENARIO_NAME"]
# scenario: (hosts, unit, user, port). common has no service of its own in a container
# (timesyncd does not run in one), so it has no scenario; site.yml's default covers it.
SERVICES = {
    "node_exporter": ("all", "prometheus-node-exporter", "prometheus", 9100),
    "blackbox_exporter": ("control", "prometheus-blackbox-exporter", "prometheus", 9115),
    "prometheus": ("control", "prometheus", "prometheus", 9090),
    "alertmanager": ("control", "prometheus-alertmanager", "prometheus", 9093),
    "llamacpp_server": ("workers", "clusterai-llamacpp", "clusterai-llamacpp", 8080),
    "ollama": ("workers", "clusterai-ollama", "ollama", 11434),
}
HOSTS, UNIT, USER, PORT = SERVICES[SCENARIO]
HARDENING = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes"}

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts(HOSTS)


def test_the_service_runs_and_starts_at_boot(host):
    service = host.service(UNIT)
    assert service.is_running
    assert service.is_enabled


def test_the_service_runs_as_its_own_nologin_user(host):
    assert host.check_output(f"systemctl show -p User --value {UNIT}") == USER
    account = host.user(USER)
    assert account.exists
    assert account.shell in ("/usr/sbin/nologin", "/bin/false")


def test_the_unit_is_hardened(host):
    names = ",".join(HARDENING)
    shown = dict(
        line.split("=", 1)
        for line in host.check_output(f"systemctl show -p {names} {UNIT}").splitlines()
    )
    assert shown == HARDENING


def test_it_listens_only_on_the_hosts_address(host):
    address = host.ansible.get_variables()["ansible_host"]  # clusterai_address follows it
    assert host.socket(f"tcp://{address}:{PORT}").is_listening
    # Sandbox hosts share one network namespace: nothing may hold the port on a wildcard.
    for wildcard in ("0.0.0.0", "::"):
        assert not host.socket(f"tcp://{wildcard}:{PORT}").is_listening
