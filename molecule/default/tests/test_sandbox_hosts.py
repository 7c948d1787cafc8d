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
    address = host.ansible.get_variables()["clusterai_address"]
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
