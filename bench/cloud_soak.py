#!/usr/bin/env python3
"""Soak: a cloud worker's life (up, then down) meets a random fault, again and again;
after each, reconcile, then count the leaks.

Each round starts from an empty moto EC2 (tests/cloud/harness.py on loopback, its
``ClientToken`` idempotency and faults in front of moto) and a new state store, picks a
step and a fault of tests/cloud/flow.py's MATRIX at random (an error before or after
the call acts, a dropped connection, an answer past the read timeout, the process
SIGKILLed; at RunInstances, the wait for running, the join, the drain, TerminateInstances
or the wait for terminated), runs the life with it, reconciles, and counts as leaks the
instances tagged for the cluster that are pending or running and that the store does not
show as a joined worker. Then ``down --all`` must leave none at all (counted apart).
Prints each round and the totals; expected: 0 leaks. Not a test: the matrix itself is
``tests/cloud/test_cloud.py::test_a_fault_at_any_step_then_reconcile_leaves_no_instance_unaccounted``.

    .venv/bin/python bench/cloud_soak.py [--rounds 50] [--seed N]
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

import boto3

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from clusterai_runner.config import Settings  # noqa: E402
from clusterai_runner.store import Store  # noqa: E402
from clusterai_runner.usecases import cloud  # noqa: E402
from tests.cloud import flow  # noqa: E402
from tests.cloud.harness import Ec2Harness, serving  # noqa: E402

REGION = flow.REGION


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request lines
    chance = random.Random(args.seed)
    print(f"seed {args.seed}, {args.rounds} rounds")
    harness = Ec2Harness(pending_s=0.0)
    leaks = left = 0
    seen: Counter[str] = Counter()
    with serving(harness) as url, tempfile.TemporaryDirectory() as scratch:
        key = Path(scratch) / "cloud_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        base = {**flow.aws_environment(url, Path(scratch)), "CLUSTERAI_AWS_READ_TIMEOUT": "1"}
        os.environ.update(base)
        ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=url)
        for round_ in range(1, args.rounds + 1):
            harness.reset()
            urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"))
            vpc = ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
            subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="127.0.250.0/24")["Subnet"]
            group = ec2.create_security_group(GroupName="w", Description="w", VpcId=vpc)
            image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
            folder = Path(scratch) / f"round-{round_}"
            folder.mkdir()
            state = folder / "state"
            env = {
                **base,
                "CLUSTERAI_STATE_DIR": str(state),
                "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(state / "ansible-facts"),
            }
            os.environ.update(env)
            inventory = flow.write_inventory(folder / "inventory", {
                "cloud_region": REGION, "cloud_ami": image,
                "cloud_subnet_id": subnet["SubnetId"],
                "cloud_security_group_ids": [group["GroupId"]],
                "cloud_instance_types": {"t3.large": 0.0832},
                "cloud_max_instances": 3, "cloud_spend_cap_hourly_usd": 2.5,
                "cloud_spend_cap_monthly_usd": 2000, "cloud_ssh_private_key_file": str(key),
            })  # fmt: skip
            step, fault = chance.choice(flow.MATRIX)
            seen[f"{step}/{fault}"] += 1
            started = time.monotonic()
            flow.strike(harness, inventory, step, fault, {**os.environ, **env})
            state.mkdir(mode=0o700, exist_ok=True)
            store = Store.open(f"sqlite:///{state / 'state.db'}")
            found = flow.unaccounted(inventory, ec2, store)
            cloud.down(Settings.from_env(), inventory, [], everything=True, drain=flow.step("-"))
            remaining = flow.running(ec2)
            leaks += len(found)
            left += len(remaining)
            print(f"{round_:3d} {step:>15} {fault:<12} leaks {len(found)}  left after down "
                  f"{len(remaining)}  {time.monotonic() - started:5.1f} s", flush=True)  # fmt: skip
    print(f"{args.rounds} rounds, {len(seen)} of {len(flow.MATRIX)} step/fault pairs: "
          f"{leaks} leaked instance(s), {left} left after down --all")  # fmt: skip
    return 1 if leaks or left else 0


if __name__ == "__main__":
    sys.exit(main())
