#!/usr/bin/env python3
"""Bench: from `clusterai cloud up` to the first answer through the gateway, step by step.

Brings up its own cluster (a 2-host sandbox, ctl1 and worker1, in a temporary state
directory, so your sandboxes are untouched) and converges it with `clusterai up`. moto's
EC2 on loopback launches the instances, behind tests/cloud/harness.py, which boots a
sandbox host at each address moto gives and applies its user-data as cloud-init would
(tests/cloud/cloudinit.py). Each round runs `cloud up --count 1 --wait` through the use
case and splits its time by the progress it reports:

- api: from the call to RunInstances answered (the reconcile and the checks before it);
- boot: the instance's host booting and its user-data applied (the stand-in for EC2's
  pending state and cloud-init; on AWS this is what the instance's boot takes);
- running seen: until `cloud up` sees it running (it asks every 2 s);
- ssh: until SSH answers with the host key the user-data gave;
- converge: the preflight and scale_out.yml (the worker's roles, the control host's
  scrape targets and the gateway's backends);
- model load: until the gateway routes to it (the server loaded its model and the
  gateway's health check passed);
- first answer: a chat through the gateway with every other backend drained.

Then `cloud down --all`. Prints each round and the medians. Not a test: timings never gate
CI. Needs root and the sandbox tools.

    .venv/bin/python bench/cloud.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from clusterai_runner.config import Settings  # noqa: E402
from clusterai_runner.usecases import cloud  # noqa: E402
from tests.cloud.cloudinit import Instances  # noqa: E402
from tests.cloud.flow import REGION, aws_environment  # noqa: E402
from tests.cloud.harness import Ec2Harness, serving  # noqa: E402
from tests.helpers import gateway_json  # noqa: E402

ADMIN_KEY = "bench-admin-key-0123456789abcdef"
API_KEY = "cai_be4c0001_" + "b" * 40
STEPS = ("api", "boot", "running seen", "ssh", "converge", "model load", "first answer")


def clusterai(*args: str, timeout: float = 1800) -> str:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "clusterai"), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"error: bench: clusterai {args[0]} {args[1]}: {done.stderr[-3000:]}")
    return done.stdout


def gateway(control: str, path: str, body: Any = None, key: str = ADMIN_KEY) -> Any:
    return gateway_json(control, path, key, body)


def cluster(scratch: Path, ec2: Any, key: Path) -> tuple[Path, str]:
    """The converged 2-host cluster's inventory directory, and ctl1's address."""
    status = json.loads(clusterai("sandbox", "up", "--hosts", "2", "--name", "bench-cloud",
                                  "--json"))  # fmt: skip
    hosts = yaml.safe_load(Path(status["inventory"]).read_text())
    hosts["all"]["children"]["workers"].setdefault("children", {})["cloud"] = {}
    inventory = scratch / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts, sort_keys=False))
    (inventory / "clusterai_state.yml").write_text("plugin: clusterai_state\n")
    (inventory / "group_vars" / "all.yml").write_text(yaml.safe_dump({
        "gateway_admin_key": ADMIN_KEY,
        "gateway_api_keys": [{"name": "bench", "key": API_KEY}],
    }))  # fmt: skip
    vpc = ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="127.0.252.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="workers", Description="w", VpcId=vpc)
    (inventory / "group_vars" / "cloud.yml").write_text(yaml.safe_dump({
        "cloud_region": REGION,
        "cloud_ami": ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"],
        "cloud_subnet_id": subnet,
        "cloud_security_group_ids": [group["GroupId"]],
        "cloud_instance_types": {"t3.large": 0.0832},
        "cloud_max_instances": 2, "cloud_spend_cap_hourly_usd": 1,
        "cloud_spend_cap_monthly_usd": 500, "cloud_ssh_private_key_file": str(key),
        "cloud_ssh_user": "admin",
    }))  # fmt: skip
    started = time.monotonic()
    clusterai("up", "-i", str(inventory))
    print(f"cluster converged in {time.monotonic() - started:.0f} s (clusterai up, 2 hosts)")
    control = next(h["address"] for h in status["hosts"] if h["name"] == "ctl1")
    return inventory, control


def one_round(inventory: Path, control: str, instances: Instances) -> dict[str, float]:
    seen: list[tuple[float, str]] = []
    started = time.monotonic()
    result = cloud.up(Settings.from_env(), inventory, 1, wait=True,
                      progress=lambda m: seen.append((time.monotonic(), m)))  # fmt: skip
    [worker] = result.launched

    def at(fragment: str) -> float:
        return next(t for t, m in seen if fragment in m)

    boot = instances.timings[worker.instance_id or ""]
    others = [b["name"] for b in gateway(control, "/admin/backends")["backends"]]
    others = [n for n in others if n != worker.host]
    for name in others:
        gateway(control, f"/admin/backends/{name}/drain", {"wait_s": 5})
    try:
        asked = time.monotonic()
        chat = {"model": "smollm2", "max_tokens": 8,
                "messages": [{"role": "user", "content": "Say hello."}]}  # fmt: skip
        answer = gateway(control, "/v1/chat/completions", chat, API_KEY)
        answered = time.monotonic()
        assert answer["choices"][0]["message"]["content"].strip()
    finally:
        for name in others:
            gateway(control, f"/admin/backends/{name}/undrain", {})
    cloud.down(Settings.from_env(), inventory, [], everything=True)
    return {
        "api": boot["started"] - started,
        "boot": boot["set_up"] - boot["started"],
        "running seen": at("running at") - boot["set_up"],
        "ssh": at("SSH answers") - at("running at"),
        "converge": at("joined:") - at("SSH answers"),
        "model load": at("the gateway routes") - at("joined:"),
        "first answer": answered - asked,
        "total": answered - started - (asked - at("the gateway routes")),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("error: bench: needs root (the sandbox boots hosts)", file=sys.stderr)
        return 2
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request lines
    instances = Instances("admin")
    harness = Ec2Harness(on_launch=instances.boot, on_terminate=instances.terminate)
    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as folder, serving(harness) as url:
        scratch = Path(folder)
        state = scratch / "state"
        os.environ.update({
            **aws_environment(url, scratch),
            "CLUSTERAI_STATE_DIR": str(state),
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(state / "ansible-facts"),
        })  # fmt: skip
        key = scratch / "cloud_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=url)
        try:
            inventory, control = cluster(scratch, ec2, key)
            print("  ".join(f"{s:>12}" for s in (*STEPS, "total")) + "   (seconds)")
            for _ in range(args.rounds):
                row = one_round(inventory, control, instances)
                rows.append(row)
                print("  ".join(f"{row[s]:12.1f}" for s in (*STEPS, "total")), flush=True)
        finally:
            harness.join()
            instances.remove()
            clusterai("sandbox", "down", "--name", "bench-cloud")
    if rows:
        medians = {s: statistics.median(r[s] for r in rows) for s in (*STEPS, "total")}
        print("median: " + ", ".join(f"{s} {v:.1f} s" for s, v in medians.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
