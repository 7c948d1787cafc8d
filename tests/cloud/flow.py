"""A test fixture: one cloud worker's whole life through the use cases, and the faults
that can strike it (the matrix of tests/cloud/test_cloud.py and bench/cloud_soak.py).

``life`` is ``cloud.up`` of one worker, then ``cloud.down --all``. The instances here
answer no SSH, so joining and draining are steps that do nothing, unless
``CLUSTERAI_TEST_FAULT`` says ``STEP:error`` (the step fails) or ``STEP:kill`` (the
process is SIGKILLed there), STEP being join or drain. ``strike`` runs a life with one
fault: in this process, or (for a kill) in a process of its own,

    python -m tests.cloud.flow INVENTORY
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from clusterai_runner.config import Settings
from clusterai_runner.errors import ClusterAIError, RunFailed
from clusterai_runner.store import Store
from clusterai_runner.usecases import cloud
from tests.cloud.harness import Ec2Harness

REPO = Path(__file__).resolve().parent.parent.parent
# The steps of a worker's life where a fault can strike: the cloud calls that create,
# watch or end its instance (the action, and the call that must come before it), and
# the steps between them (join: preflight and scale-out; drain: drain and scale-in).
API_STEPS = {
    "run-instances": ("RunInstances", None),
    "wait-running": ("DescribeInstances", "RunInstances"),
    "terminate": ("TerminateInstances", None),
    "wait-terminated": ("DescribeInstances", "TerminateInstances"),
}
API_FAULTS = ("error-before", "error-after", "drop-after", "slow-after", "kill-after")
MATRIX = [(s, f) for s in API_STEPS for f in API_FAULTS] + [
    (s, f) for s in ("join", "drain") for f in ("error", "kill")
]
KEY = "k" * 24
REGION = "eu-west-1"


def aws_environment(url: str, scratch: Path) -> dict[str, str]:
    """The environment boto3 reads to reach the harness at ``url`` with test credentials,
    and nothing of this machine's AWS configuration."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": url,
        "AWS_CONFIG_FILE": str(scratch / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(scratch / "no-aws-credentials"),
    }


def write_inventory(directory: Path, variables: dict[str, Any]) -> Path:
    directory.mkdir()
    (directory / "hosts.yml").write_text(
        yaml.safe_dump(
            {
                "all": {
                    "children": {
                        "control": {"hosts": {"ctl1": {"ansible_host": "127.0.250.254"}}},
                        "workers": {"children": {"cloud": {}}},
                    }
                }
            }
        )
    )
    (directory / "clusterai_state.yml").write_text("plugin: clusterai_state\n")
    (directory / "group_vars").mkdir()
    (directory / "group_vars/all.yml").write_text(
        yaml.safe_dump(
            {
                "clusterai_inference_backend": "llamacpp",
                "clusterai_backend_api_key": KEY,
                "clusterai_monitoring_password": "m" * 24,
                "clusterai_address": "{{ ansible_host }}",
            }
        )
    )
    (directory / "group_vars/cloud.yml").write_text(yaml.safe_dump(variables))
    return directory


def tagged(ec2: Any, cluster: str = "ctl1") -> list[dict[str, Any]]:
    pages = ec2.describe_instances(
        Filters=[{"Name": "tag:clusterai:cluster", "Values": [cluster]}]
    )["Reservations"]
    return [i for r in pages for i in r["Instances"]]


def running(ec2: Any, cluster: str = "ctl1") -> list[str]:
    """The cluster's instances that are pending or running."""
    states = ("pending", "running")
    return [i["InstanceId"] for i in tagged(ec2, cluster) if i["State"]["Name"] in states]


def step(name: str) -> Callable[..., None]:
    def act(*_args: Any) -> None:
        fault = os.environ.get("CLUSTERAI_TEST_FAULT", "")
        if fault == f"{name}:kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if fault == f"{name}:error":
            raise RunFailed(f"cloud {name}", "failed (injected by the test)", "")

    return act


def life(inventory: Path) -> None:
    settings = Settings.from_env()
    cloud.up(settings, inventory, 1, join=step("join"))
    cloud.down(settings, inventory, [], everything=True, drain=step("drain"))


def strike(
    harness: Ec2Harness, inventory: Path, where: str, fault: str, env: dict[str, str]
) -> None:
    """One life that meets ``fault`` at ``where`` (a step of MATRIX). The environment
    ``env`` is the cloud's (credentials, endpoint, state directory) and becomes this
    process's for the life."""
    environment = {**env}
    if where in API_STEPS:
        action, after = API_STEPS[where]
        harness.inject(action, fault, after=after)
    else:
        environment["CLUSTERAI_TEST_FAULT"] = f"{where}:{fault}"
    if "kill" in fault:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.cloud.flow", str(inventory)],
            cwd=REPO, env=environment, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        harness.on_kill = process.kill
        try:
            _, errors = process.communicate(timeout=120)
        finally:
            harness.on_kill = None
        if process.returncode != -signal.SIGKILL:
            raise AssertionError(f"the life was not killed: {process.returncode} {errors[-2000:]}")
        return
    previous = dict(os.environ)
    os.environ.update(environment)
    try:
        # The fault may end the command: what it leaves is what counts.
        with contextlib.suppress(ClusterAIError):
            life(inventory)
    finally:
        os.environ.clear()
        os.environ.update(previous)


def unaccounted(inventory: Path, ec2: Any, store: Store) -> list[str]:
    """After a reconcile (no cloud command running): the cluster's pending or running
    instances that the store does not show as a joined worker."""
    settings = Settings.from_env()
    cloud_ = cloud.load(settings, inventory)
    cloud.reconcile(cloud_, store, cloud.ec2_for(cloud_))
    joined = {r.instance_id for r in store.cloud_instances(["joined"])}
    return [i for i in running(ec2) if i not in joined]


if __name__ == "__main__":
    life(Path(sys.argv[1]))
