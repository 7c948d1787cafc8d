"""Fixtures that boot real sandbox hosts: once per session, always torn down.

Every sandbox the suite makes lives in a state directory of its own, so the operator's
sandboxes are never touched; the root file system cache is the shared one, so a warm
machine reuses it. Without root or systemd-nspawn the suite is skipped on a developer's
machine and fails under CI (CI=true), where it must run.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import booted_sandbox, run_cli
from tests.integration.cli_cluster import CANARIES, SECRET_ENV, Vaulted, vaulted_inventory

pytestmark = pytest.mark.sandbox


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "the sandbox tests need root"
    for tool in ("systemd-nspawn", "debootstrap", "ssh", "unshare"):
        if shutil.which(tool) is None:
            return f"the sandbox tests need {tool} (run `make system-deps`)"
    return None


@pytest.fixture(scope="session", autouse=True)
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    reason = _missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    state = tmp_path_factory.mktemp("clusterai-state")
    previous = os.environ.get("CLUSTERAI_STATE_DIR")
    os.environ["CLUSTERAI_STATE_DIR"] = str(state)
    # Ansible's fact cache of this session's hosts only: other sandboxes (another xdist
    # worker's, the operator's) name their hosts ctl1 and worker1 too.
    previous_facts = os.environ.get("ANSIBLE_CACHE_PLUGIN_CONNECTION")
    os.environ["ANSIBLE_CACHE_PLUGIN_CONNECTION"] = str(state / "ansible-facts")
    yield state
    # Whatever a failed test left, take it down.
    for name in json.loads(run_cli("sandbox", "list", "--json").stdout or "[]"):
        run_cli("sandbox", "down", "--name", name["name"])
    for name, value in (("CLUSTERAI_STATE_DIR", previous),
                        ("ANSIBLE_CACHE_PLUGIN_CONNECTION", previous_facts)):  # fmt: skip
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def cluster(state_dir: Path) -> Iterator[dict[str, Any]]:
    """A 3-host sandbox (ctl1, worker1, worker2) shared by the whole session."""
    with booted_sandbox("it", 3) as status:
        yield status


@pytest.fixture(scope="session")
def cli_sandbox(state_dir: Path) -> Iterator[dict[str, Any]]:
    """ctl1 and worker1 (worker2 is booted by the tests that scale out to it), for
    test_cli_up.py and then test_web_browser.py (tests/integration/cli_cluster.py)."""
    with booted_sandbox("cliup", 2) as status:
        yield status


@pytest.fixture(scope="session")
def vaulted(cli_sandbox: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Vaulted:
    directory = tmp_path_factory.mktemp("vaulted")
    password_file = directory / "vault-password"
    password_file.write_text(CANARIES["vault_password"] + "\n")
    password_file.chmod(0o600)
    hosts = Path(cli_sandbox["inventory"]).read_text()
    return Vaulted(vaulted_inventory(directory / "inventory", hosts, password_file), password_file)


@pytest.fixture(scope="session")
def cli_converged(cli_sandbox: dict[str, Any], vaulted: Vaulted) -> list[Any]:
    """Two ``clusterai up`` runs over the vaulted inventory, a provider key in the
    environment."""
    return [run_cli("up", "-i", str(vaulted.inventory), "--vault-password-file",
                    str(vaulted.password_file), env=SECRET_ENV, timeout=1200)
            for _ in range(2)]  # fmt: skip
