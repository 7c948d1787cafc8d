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
    "web": ("control", "clusterai-web", "clusterai-web", 8443),
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


if SCENARIO == "web":
    # What only the web role's scenario checks: the login page over TLS with the cluster
    # CA, its security headers, the admin's login, and the store shared with the gateway.
    LOGIN = """
import re, ssl, sys, urllib.parse, urllib.request, http.cookiejar
base = sys.argv[1]
context = ssl.create_default_context(cafile="/etc/clusterai/pki/ca.crt")
opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context),
                                     urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
page = opener.open(base + "/login")
print(page.headers["Content-Security-Policy"])
token = re.search(r'name="csrf_token" value="([^"]+)"', page.read().decode()).group(1)
form = {"name": "admin", "password": sys.argv[2], "csrf_token": token}
# As a browser sends it (the app's Referrer-Policy is same-origin): the CSRF check under
# HTTPS wants it.
sent = urllib.request.Request(base + "/login", urllib.parse.urlencode(form).encode(),
                              headers={"Referer": base + "/login"})
answer = opener.open(sent)
print(answer.geturl(), answer.status, "Overview" in answer.read().decode())
"""

    def test_the_admin_logs_in_over_tls_checked_against_the_cluster_ca(host):
        address = host.ansible.get_variables()["ansible_host"]
        python = "/opt/clusterai/web/venv/bin/python"
        out = host.check_output(
            "%s -c %s %s %s",
            python,
            LOGIN,
            f"https://{address}:8443",
            "molecule-scenario-web-admin",
        ).splitlines()
        assert "script-src 'self'" in out[0] and "unsafe-inline" not in out[0]
        assert out[1] == f"https://{address}:8443/ 200 True"

    def test_secrets_are_root_only_and_the_store_is_the_gateways(host):
        for name in ("monitoring-password", "gateway-admin-key", "secret-key"):
            secret = host.file(f"/etc/clusterai-web/{name}")
            assert (secret.user, secret.mode) == ("root", 0o600), name
        store = host.file("/var/lib/clusterai-gateway/state.db")
        assert (store.group, store.mode) == ("clusterai-gateway", 0o660)
        assert "clusterai-gateway" in host.user("clusterai-web").groups
