"""``clusterai cloud`` joining the CLI tests' cluster for real: moto's EC2 on loopback
launches the instances (tests/cloud/harness.py), and a sandbox host boots at each
address moto gives, set up from the instance's user-data as cloud-init would
(tests/cloud/cloudinit.py). So the whole flow runs over SSH against the instance's own
address: the host key from the user-data, the preflight, scale_out.yml as `cloud`
workers, the gateway routing to them. They are spot workers: while 20 clients stream
chats through the gateway, one gets EC2's interruption notice from its metadata
(tests/cloud/metadata.py, on its own address) and `cloud watch` takes it out before EC2
would take it back, with no failed request. Then down: the other drained, scaled in,
terminated (the harness takes a terminated instance's host away).

Runs on test_cli_up.py's converged cluster, after its tests (tests/conftest.py's
TOGETHER), and leaves it as it found it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from clusterai_runner.sandbox.host import port_answers
from tests.cloud.cloudinit import Instances
from tests.cloud.flow import REGION, aws_environment
from tests.cloud.harness import Ec2Harness, serving
from tests.cloud.metadata import Metadata
from tests.helpers import CLUSTERAI, ChatLoad, address, gateway_json, run_cli, wait_for
from tests.integration.cli_cluster import CANARIES, SECRET_ENV, Vaulted, vaulted_inventory

USER = "admin"  # the login user of Debian's AMIs
CLIENTS = 20
# Each client waits this long between its chats: about 4 requests a second in all, so
# requests are in flight through the notice and the drain, without the 20 clients keeping
# the workers' servers (and this machine's cores) busy for the whole test (as a second's
# pause did).
PAUSE_S = 4.0


def free_range() -> str:
    """A 127.0.S range for the instances' subnet where nothing answers SSH: from the top,
    since sandboxes take ranges from 127.0.10 upwards."""
    for slot in range(253, 200, -1):
        prefix = f"127.0.{slot}"
        if not any(port_answers(f"{prefix}.{n}", 22) for n in range(1, 16)):
            return prefix
    raise AssertionError("no free 127.0.S range for the instances")


def gateway(cluster: dict[str, Any], path: str, body: Any = None, admin: bool = False) -> Any:
    control = address(cluster, "ctl1")
    key = CANARIES["admin_key"] if admin else CANARIES["api_key"]
    return gateway_json(control, path, key, body)


def backends(cluster: dict[str, Any]) -> dict[str, dict[str, Any]]:
    listed = gateway(cluster, "/admin/backends", admin=True)["backends"]
    return {b["name"]: b for b in listed}


def answered_by(cluster: dict[str, Any], name: str, others: list[str]) -> None:
    """With every other backend drained, a chat through the gateway is answered and
    counted on ``name``."""
    for other in others:
        gateway(cluster, f"/admin/backends/{other}/drain", {"wait_s": 5}, admin=True)
    try:
        before = backends(cluster)[name]["requests"]
        chat = {
            "model": "smollm2",
            "messages": [{"role": "user", "content": f"Say hello to {name}."}],
            "max_tokens": 8,
        }
        answer = gateway(cluster, "/v1/chat/completions", chat)
        assert answer["choices"][0]["message"]["content"].strip()
        assert backends(cluster)[name]["requests"] == before + 1
    finally:
        for other in others:
            gateway(cluster, f"/admin/backends/{other}/undrain", {}, admin=True)


@pytest.fixture
def ec2(tmp_path: Path) -> Any:
    # EC2 takes a spot instance back when its notice's time comes: terminated in moto
    # (``client`` below), so the harness's on_terminate takes its machine away.
    metadata = Metadata(lambda i: client.terminate_instances(InstanceIds=[i]))
    instances = Instances(USER, metadata)
    harness = Ec2Harness(on_launch=instances.boot, on_terminate=instances.terminate)
    with serving(harness) as url:
        env = aws_environment(url, tmp_path)
        client = boto3.client(
            "ec2", region_name=REGION, endpoint_url=url,
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip
        try:
            yield harness, client, env, instances
        finally:
            harness.join()
            instances.remove()


def test_spot_workers_join_one_is_interrupted_under_load_and_down_leaves_the_cluster_as_it_was(
    cli_sandbox: dict[str, Any],
    cli_converged: list[Any],
    vaulted: Vaulted,
    ec2: Any,
    tmp_path: Path,
) -> None:
    harness, client, env, instances = ec2
    prefix = free_range()
    vpc = client.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
    subnet = client.create_subnet(VpcId=vpc, CidrBlock=f"{prefix}.0/24")["Subnet"]["SubnetId"]
    group = client.create_security_group(GroupName="workers", Description="w", VpcId=vpc)
    image = client.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    key = tmp_path / "cloud_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)

    # The sandbox's inventory without worker2 (an earlier test grew the sandbox), as a
    # directory with the vault, the state plugin and the cloud group's configuration.
    static = yaml.safe_load(Path(cli_sandbox["inventory"]).read_text())
    static["all"]["children"]["workers"]["hosts"].pop("worker2", None)
    static["all"]["children"]["workers"].setdefault("children", {})["cloud"] = {}
    inventory = vaulted_inventory(
        tmp_path / "inventory", yaml.safe_dump(static, sort_keys=False), vaulted.password_file
    )
    (inventory / "clusterai_state.yml").write_text("plugin: clusterai_state\n")
    (inventory / "group_vars" / "cloud.yml").write_text(yaml.safe_dump({
        "cloud_region": REGION,
        "cloud_ami": image,
        "cloud_subnet_id": subnet,
        "cloud_security_group_ids": [group["GroupId"]],
        "cloud_instance_types": {"t3.large": 0.0832},
        "cloud_default_instance_type": "t3.large",
        "cloud_max_instances": 2,
        "cloud_spend_cap_hourly_usd": 1,
        "cloud_spend_cap_monthly_usd": 500,
        "cloud_ssh_private_key_file": str(key),
        "cloud_ssh_user": USER,
        "cloud_metadata_url": instances.metadata.url,
    }))  # fmt: skip
    vault = ("--vault-password-file", str(vaulted.password_file))
    hosts_before = (inventory / "hosts.yml").read_bytes()
    backends_before = sorted(backends(cli_sandbox))

    up = run_cli("cloud", "up", "-i", str(inventory), "--count", "2", "--spot", "--wait", "--json",
                 *vault, env={**env, **SECRET_ENV}, timeout=1500)  # fmt: skip
    assert harness.boot_errors == []
    assert up.code == 0, up.stdout[-2000:] + up.stderr[-4000:]
    workers = json.loads(up.stdout)
    assert [w["state"] for w in workers] == ["joined", "joined"]
    assert sorted(instances.sandboxes) == sorted(w["instance_id"] for w in workers)
    names = [w["host"] for w in workers]
    assert all(w["address"].startswith(prefix + ".") for w in workers)
    # The workers are the instances': each answers SSH with the host key it was given.
    shown = client.describe_instances(InstanceIds=[w["instance_id"] for w in workers])
    running = [i for r in shown["Reservations"] for i in r["Instances"]]
    assert {i["State"]["Name"] for i in running} == {"running"}
    # Each worker answers through the gateway.
    routed = backends(cli_sandbox)
    assert all(routed[n]["healthy"] and not routed[n]["draining"] for n in names), routed
    for name in names:
        answered_by(cli_sandbox, name, [n for n in routed if n != name])
    # Plain Ansible sees them in the cloud group, through the state plugin.
    listed = run_cli("status", "-i", str(inventory), "--json", *vault)
    assert listed.code == 0, listed.stderr[-3000:]
    assert set(names) <= {h["name"] for h in json.loads(listed.stdout)["hosts"]}

    # A spot interruption under load: cloud watch takes the worker out in time.
    interrupted, kept = workers
    said = tmp_path / "cloud-watch.err"
    watch = [str(CLUSTERAI), "cloud", "watch", "-i", str(inventory), "--interval", "2", "--json"]
    with said.open("w") as errors:
        watcher = subprocess.Popen(
            [*watch, *vault],
            env={**os.environ, **env, **SECRET_ENV}, stdout=subprocess.PIPE, stderr=errors,
            text=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    # What it prints: one JSON line per worker it took down.
    taken: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: taken.extend(map(json.loads, watcher.stdout or ())))
    reader.start()
    try:
        control = address(cli_sandbox, "ctl1")
        with ChatLoad(
            f"http://{control}:8000/v1", CANARIES["api_key"], CLIENTS, PAUSE_S
        ) as clients:
            start = backends(cli_sandbox)[interrupted["host"]]["requests"]
            # Every client has had answers, some of them from the spot worker.
            wait_for(lambda: clients.done >= CLIENTS
                     and backends(cli_sandbox)[interrupted["host"]]["requests"] > start + 3,
                     120, "the clients' chats, some on the spot worker")  # fmt: skip
            served = clients.done
            when = instances.metadata.interrupt(interrupted["instance_id"], in_s=120)
            noticed = time.monotonic()
            wait_for(lambda: taken, 150, "cloud watch to take the interrupted worker down")
            during = clients.done - served
            print(f"{CLIENTS} clients: {served} chats before the notice, {during} from the notice "
                  f"to the worker's end ({time.monotonic() - noticed:.1f} s)")  # fmt: skip
        watcher.send_signal(signal.SIGTERM)
        watcher.wait(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
        reader.join(timeout=10)
        if watcher.stdout is not None:
            watcher.stdout.close()
        print("cloud watch said:", said.read_text()[-3000:], file=sys.stderr)
    assert watcher.returncode == 0, said.read_text()[-3000:]
    assert clients.failures == [], clients.failures[:5]
    assert during > 0 and clients.done > CLIENTS, (served, during, clients.done)
    [ended] = taken
    assert (ended["host"], ended["state"], ended["notice"]) == (
        interrupted["host"], "terminated", {"action": "terminate", "time": when}
    )  # fmt: skip
    assert ended["error"] == f"spot interruption notice: terminate at {when}"
    assert instances.metadata.reclaimed == []  # taken out before EC2 would have
    asked = {i for i, path in instances.metadata.asked if path.endswith("/instance-action")}
    assert asked == {interrupted["instance_id"], kept["instance_id"]}
    harness.join()
    assert not port_answers(interrupted["address"], 22)
    routed = backends(cli_sandbox)
    assert interrupted["host"] not in routed
    assert routed[kept["host"]]["healthy"] and not routed[kept["host"]]["draining"]

    down = run_cli("cloud", "down", "-i", str(inventory), "--all", "--yes", "--json", *vault,
                   env={**env, **SECRET_ENV}, timeout=900)  # fmt: skip
    assert down.code == 0, down.stdout[-2000:] + down.stderr[-4000:]
    assert [r["host"] for r in json.loads(down.stdout)] == [kept["host"]]
    assert [r["state"] for r in json.loads(down.stdout)] == ["terminated"]
    harness.join()
    assert harness.boot_errors == []
    shown = client.describe_instances(InstanceIds=[w["instance_id"] for w in workers])
    assert {i["State"]["Name"] for r in shown["Reservations"] for i in r["Instances"]} == {
        "terminated"
    }
    # Their machines are gone, and the cluster is as it was.
    assert not any(port_answers(w["address"], 22) for w in workers)
    assert (inventory / "hosts.yml").read_bytes() == hosts_before
    assert sorted(backends(cli_sandbox)) == backends_before
    after = run_cli("status", "-i", str(inventory), "--json", *vault)
    assert not set(names) & {h["name"] for h in json.loads(after.stdout)["hosts"]}
    live = json.loads(run_cli("cloud", "list", "--json").stdout)
    assert live == []
