"""The CLI's cluster: ctl1 and worker1 converged by two `clusterai up` runs over an
ansible-vault encrypted inventory. test_cli_up.py runs the CLI on it and then
test_web_browser.py walks through the web app on it (one unit on one pytest-xdist worker:
tests/conftest.py's TOGETHER); the fixtures are in tests/integration/conftest.py."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

# Secrets that must reach no file of the state directory, no journal and no ps output:
# the vault's password, four values encrypted in the inventory's vault file (the gateway's
# admin key and an API key, which the gateway role uses, the key the workers' servers
# require, which the llamacpp_server, gateway and blackbox_exporter roles use, and the
# monitoring password, which every monitoring role uses), and a provider key in the
# operator's environment.
CANARIES = {
    "vault_password": "canary-vault-password-6e1f0c",
    "admin_key": "canary-admin-key-4b9d2a7e51c3",
    "api_key": "cai_c0ffee01_canaryapikeycanaryapikeycanaryapikey",
    "backend_key": "canary-backend-key-7d21e0f94b",
    "monitoring_password": "canary-monitoring-password-3f5a",
    "environment": "canary-provider-key-93ad17",
}
SECRET_ENV = {"PROVIDER_API_KEY": CANARIES["environment"]}
# The cluster's InferenceDown fires after 30 s of failed probes (2 minutes by default):
# the browser's walk waits for it.
INFERENCE_DOWN_FOR = "30s"


@dataclass(frozen=True)
class Vaulted:
    inventory: Path  # a directory: the sandbox's hosts and group_vars/all/vault.yml
    password_file: Path


def vaulted_inventory(directory: Path, hosts: str, password_file: Path) -> Path:
    """``directory`` holding ``hosts``, an ansible-vault encrypted vars file and the
    cluster's alert delay."""
    (directory / "group_vars" / "all").mkdir(parents=True)
    (directory / "hosts.yml").write_text(hosts)
    (directory / "group_vars" / "all" / "alerts.yml").write_text(
        f"prometheus_inference_down_for: {INFERENCE_DOWN_FOR}\n"
    )
    secrets = directory / "group_vars" / "all" / "vault.yml"
    # group_vars/all overrides the key the sandbox's own inventory gives (its all: vars).
    secrets.write_text(yaml.safe_dump({
        "gateway_admin_key": CANARIES["admin_key"],
        "gateway_api_keys": [{"name": "canary", "key": CANARIES["api_key"]}],
        "clusterai_backend_api_key": CANARIES["backend_key"],
        "clusterai_monitoring_password": CANARIES["monitoring_password"],
    }))  # fmt: skip
    encrypted = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-vault"), "encrypt", str(secrets),
         "--vault-password-file", str(password_file)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert encrypted.returncode == 0, encrypted.stderr
    assert CANARIES["admin_key"] not in secrets.read_text()
    return directory
