"""The cloud tests' fixtures: moto's EC2 on loopback (tests/cloud/harness.py), one server
per module, reset for each test, with a VPC, a subnet, a group, a key and an inventory."""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from clusterai_runner.store import Store
from tests.cloud import flow
from tests.cloud.flow import REGION, write_inventory
from tests.cloud.harness import Ec2Harness, serving
from tests.helpers import run_cli

SUBNET = "127.0.250.0/24"


@dataclass
class Aws:
    harness: Ec2Harness
    ec2: Any
    env: dict[str, str]
    subnet: str
    group: str
    image: str
    inventory: Path
    state: Path

    def tagged(self, cluster: str = "ctl1") -> list[dict[str, Any]]:
        return flow.tagged(self.ec2, cluster)

    def running(self, cluster: str = "ctl1") -> list[str]:
        return flow.running(self.ec2, cluster)

    def store(self) -> Store:
        self.state.mkdir(mode=0o700, exist_ok=True)
        return Store.open(f"sqlite:///{self.state / 'state.db'}")

    def cli(self, *args: str) -> Any:
        return run_cli(*args, env=self.env, timeout=300)


@pytest.fixture(scope="module")
def moto() -> Iterator[tuple[Ec2Harness, str, str]]:
    """One moto server for the module (its app takes seconds to build), each test resets
    it; and the Amazon image of its list (tests/cloud/amis.json, see harness.py)."""
    harness = Ec2Harness(pending_s=1.0)
    with serving(harness) as url:
        ec2 = boto3.client(
            "ec2",
            region_name=REGION,
            endpoint_url=url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        image = str(ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"])
        yield harness, url, image


@pytest.fixture
def aws(
    moto: tuple[Ec2Harness, str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Aws]:
    harness, url, image = moto
    harness.reset()
    state = tmp_path / "state"
    env = {
        **flow.aws_environment(url, tmp_path),
        "CLUSTERAI_STATE_DIR": str(state),
        "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(state / "ansible-facts"),
        # Nothing answers at the instances' addresses: SSH is waited for 2 s.
        "CLUSTERAI_CLOUD_SSH_TIMEOUT": "2",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # moto keeps one EC2 per process: start from an empty one.
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"))
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=url)
    vpc = ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=SUBNET)["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="workers", Description="w", VpcId=vpc)
    key = tmp_path / "cloud_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    variables = {
        "cloud_region": REGION,
        "cloud_ami": image,
        "cloud_subnet_id": subnet,
        "cloud_security_group_ids": [group["GroupId"]],
        "cloud_instance_types": {"t3.large": 0.0832, "g5.xlarge": 1.006},
        "cloud_default_instance_type": "t3.large",
        "cloud_max_instances": 3,
        "cloud_spend_cap_hourly_usd": 2.5,
        "cloud_spend_cap_monthly_usd": 2000,
        "cloud_ssh_private_key_file": str(key),
    }
    inventory = write_inventory(tmp_path / "inventory", variables)
    harness.calls.clear()  # the tests count only their own calls
    yield Aws(harness, ec2, env, subnet, group["GroupId"], image, inventory, state)


def set_variables(aws: Aws, **changes: Any) -> None:
    path = aws.inventory / "group_vars/cloud.yml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **changes}))
