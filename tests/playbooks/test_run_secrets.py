"""What a playbook run leaves on the controller's disk: the operator's environment only as
far as Ansible needs it, extra variables in a private file that goes when the run ends,
and an inventory's vault values opened with the operator's password file, which stays
where it is.

Real ansible-playbook runs of ``boilerplate.yml`` through the ansible-runner adapter;
its checks run on the controller, so no host is contacted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from clusterai_runner.adapters.ansible import run_playbook
from clusterai_runner.adapters.inventory import load
from clusterai_runner.adapters.vault import Vault
from clusterai_runner.errors import UsageError

HOST = {"ansible_host": "127.0.0.2", "clusterai_address": "127.0.0.2"}
INVENTORY = {
    "all": {
        "vars": {"clusterai_inference_backend": "llamacpp"},
        "children": {"control": {"hosts": {"ctl1": HOST}}, "workers": {"hosts": {"w1": HOST}}},
    }
}
PASSWORD = "canary-vault-password-21b7"
VAULTED = "canary-vaulted-value-8c03e5"


def vaulted_inventory(directory: Path) -> tuple[Path, Path]:
    inventory = directory / "inventory"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "hosts.yml").write_text(yaml.safe_dump(INVENTORY))
    secret = inventory / "group_vars" / "all" / "vault.yml"
    # The backend key and the monitoring password are real secrets the checks read.
    secrets = ("clusterai_canary", "clusterai_backend_api_key", "clusterai_monitoring_password")
    secret.write_text(yaml.safe_dump(dict.fromkeys(secrets, VAULTED)))
    password = directory / "vault-password"
    password.write_text(PASSWORD + "\n")
    subprocess.run(
        [str(Path(sys.executable).parent / "ansible-vault"), "encrypt", str(secret),
         "--vault-password-file", str(password)],
        check=True, capture_output=True,
    )  # fmt: skip
    return inventory, password


def every_file(directory: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def test_a_run_keeps_the_environment_extra_variables_and_vault_off_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROVIDER_API_KEY", "canary-environment-5d1e")
    monkeypatch.setenv("ANSIBLE_TIMEOUT", "17")  # Ansible's own settings pass
    monkeypatch.delenv("ANSIBLE_HOST_KEY_CHECKING", raising=False)
    inventory, password = vaulted_inventory(tmp_path)
    run_dir = tmp_path / "runs" / "1"
    outcome = run_playbook(
        "boilerplate.yml", inventory, run_dir,
        extravars={"clusterai_targets": "w1", "clusterai_note": "canary-extra-var-77aa"},
        vault=Vault(password_file=password),
    )  # fmt: skip
    assert outcome.status == "successful", outcome
    files = every_file(run_dir)
    leaked = [
        (path, canary) for path, data in files.items()
        for canary in ("canary-environment-5d1e", "canary-extra-var-77aa", PASSWORD, VAULTED)
        if canary.encode() in data
    ]  # fmt: skip
    assert leaked == []
    (command,) = [json.loads(d) for p, d in files.items() if p.endswith("/command")]
    assert command["env"]["ANSIBLE_TIMEOUT"] == "17" and "PROVIDER_API_KEY" not in command["env"]
    assert "--vault-password-file" in command["command"]
    # ansible-runner's own defaults would turn host key checking off and move the fact
    # cache into this run's artifacts, where the next run does not look.
    assert command["env"]["ANSIBLE_HOST_KEY_CHECKING"] == "True"
    assert str(run_dir) not in command["env"].get("ANSIBLE_CACHE_PLUGIN_CONNECTION", "")
    assert not list(run_dir.glob("extravars-*"))  # removed when the run ended
    assert oct(run_dir.stat().st_mode & 0o777) == "0o700"


def test_the_cli_opens_a_vaulted_inventory_with_the_password_only(tmp_path: Path) -> None:
    inventory, _ = vaulted_inventory(tmp_path)
    with pytest.raises(UsageError, match="no vault password was given"):
        load(inventory)
    wrong = tmp_path / "wrong"
    wrong.write_text("not it\n")
    with pytest.raises(UsageError, match="vault password given does not open"):
        load(inventory, vault=Vault(password_file=wrong))
    hosts = load(inventory, vault=Vault(password=PASSWORD))
    assert {h.name for h in hosts} == {"ctl1", "w1"}
    with pytest.raises(UsageError, match="is not a readable file"):
        Vault(password_file=tmp_path / "missing")
