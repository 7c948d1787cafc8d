"""``clusterai cloud`` against moto's EC2 on loopback (tests/cloud/harness.py): launch
records, reconcile, faults around RunInstances, cost and bad input.

The instances moto launches get addresses in 127.0.250.0/24, where nothing listens (the
sandboxes take 127.0.10.0/24 upwards), so a worker's SSH never answers: the
tests here show that such a worker is terminated and recorded, and that nothing tagged
for the cluster is left running. Joining for real takes sandbox hosts at those addresses.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from clusterai_runner.adapters.aws import ATTEMPTS
from clusterai_runner.config import Settings
from clusterai_runner.errors import ClusterAIError, UsageError
from clusterai_runner.store import LIVE_STATES
from clusterai_runner.usecases import cloud, cloud_spot
from clusterai_runner.usecases.cloud_policy import SpotNotice
from tests.cloud import flow
from tests.cloud.conftest import Aws, set_variables
from tests.cloud.flow import MATRIX
from tests.cloud.metadata import TOKEN, TOKEN_TTL, Metadata
from tests.helpers import CLUSTERAI, run_cli, wait_for


def test_a_worker_that_cannot_join_is_terminated_and_nothing_is_left(aws: Aws) -> None:
    result = aws.cli("cloud", "up", "-i", str(aws.inventory), "--count", "1")
    assert result.code == 1, result.stdout + result.stderr
    assert "SSH did not answer within 2 s" in result.stderr
    assert aws.running() == []
    [instance] = aws.tagged()
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags["clusterai:created-by"] == "clusterai" and tags["clusterai:role"] == "worker"
    listed = json.loads(aws.cli("cloud", "list", "--all", "--json").stdout)
    assert [(r["instance_id"], r["state"], r["intent"]) for r in listed] == [
        (instance["InstanceId"], "terminated", tags["clusterai:intent"])
    ]
    assert listed[0]["address"] == instance["PrivateIpAddress"]
    assert listed[0]["host_key"].startswith("ssh-ed25519 ")
    # The user-data: the host name, the cluster's key for the login user, the host key the
    # store holds; nothing else.
    encoded = aws.ec2.describe_instance_attribute(
        InstanceId=instance["InstanceId"], Attribute="userData"
    )["UserData"]["Value"]
    text = base64.b64decode(encoded).decode()
    assert text.startswith("#cloud-config\n")
    data = yaml.safe_load(text)
    assert set(data) == {
        "hostname",
        "ssh_authorized_keys",
        "ssh_deletekeys",
        "ssh_genkeytypes",
        "ssh_keys",
    }
    assert data["hostname"] == listed[0]["host"]
    key = (
        Path(
            str(
                yaml.safe_load((aws.inventory / "group_vars/cloud.yml").read_text())[
                    "cloud_ssh_private_key_file"
                ]
            )
            + ".pub"
        )
        .read_text()
        .strip()
    )
    assert data["ssh_authorized_keys"] == [key]
    assert data["ssh_keys"]["ed25519_public"] == listed[0]["host_key"]
    assert "PRIVATE KEY" in data["ssh_keys"]["ed25519_private"]
    assert json.loads(aws.cli("cloud", "list", "--json").stdout) == []
    assert aws.store().hosts() == []
    # One RunInstances, its token the intent.
    assert aws.harness.calls.count("RunInstances") == 1


def test_reconcile_ends_strangers_of_this_cluster_and_closes_dead_intents(aws: Aws) -> None:
    def launch(cluster: str) -> str:
        made = aws.ec2.run_instances(
            ImageId=aws.image, MinCount=1, MaxCount=1, InstanceType="t3.large",
            SubnetId=aws.subnet,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [
                {"Key": "clusterai:cluster", "Value": cluster},
                {"Key": "clusterai:intent", "Value": "feedfacefeedface"}]}],
        )  # fmt: skip
        return str(made["Instances"][0]["InstanceId"])

    stranger, foreign = launch("ctl1"), launch("another")
    store = aws.store()
    store.record_intent("0123456789abcdef", "cloud-01234567", "t3.large", False, 0.0832)
    with sa.create_engine(store.url).begin() as connection:  # ten minutes old
        connection.execute(
            sa.text("update cloud_instances set created_at = :at"),
            {"at": "2020-01-01T00:00:00+00:00"},
        )
    dry = aws.cli("cloud", "reconcile", "-i", str(aws.inventory), "--dry-run", "--json")
    assert dry.code == 0, dry.stderr
    planned = {(a["kind"], a["instance_id"] or a["intent"]) for a in json.loads(dry.stdout)}
    assert planned == {("terminate", stranger), ("close", "0123456789abcdef")}
    assert sorted(aws.running("ctl1")) == [stranger]

    done = aws.cli("cloud", "reconcile", "-i", str(aws.inventory))
    assert done.code == 0, done.stderr
    assert aws.running("ctl1") == []
    assert aws.running("another") == [foreign]  # another cluster's: never touched
    record = aws.store().cloud_instance("0123456789abcdef")
    assert record is not None and record.state == "closed"
    again = aws.cli("cloud", "reconcile", "-i", str(aws.inventory))
    assert again.stdout.strip() == "the cloud and the store agree"


@pytest.mark.parametrize(
    "faults",
    [
        ["error-before"] * ATTEMPTS,
        ["error-before"],
        ["error-after"],
        ["drop-after"],
        ["slow-after"],
    ],
    ids=[
        "error-every-attempt",
        "error-once",
        "error-after-create",
        "dropped-after-create",
        "answer-past-the-read-timeout",
    ],
)
def test_faults_around_run_instances_leave_no_instance_behind(
    aws: Aws, faults: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The harness answers a slow call 3 s late; the client gives up after 1 s and retries.
    monkeypatch.setenv("CLUSTERAI_AWS_READ_TIMEOUT", "1")
    aws.harness.inject("RunInstances", *faults)
    settings = Settings.from_env()
    with pytest.raises(ClusterAIError):
        cloud.up(settings, aws.inventory, 1)
    made = aws.tagged()
    # botocore retried each fault (up to its attempts), and the token kept the retries
    # from making a second instance.
    assert aws.harness.calls.count("RunInstances") == min(len(faults) + 1, ATTEMPTS)
    assert len(made) <= 1, made
    cloud_ = cloud.load(settings, aws.inventory)
    store = aws.store()
    cloud.reconcile(cloud_, store, cloud.ec2_for(cloud_))
    live = {r.instance_id for r in store.cloud_instances(LIVE_STATES)}
    assert [i for i in aws.running() if i not in live] == []
    assert aws.running() == []


def test_a_second_launch_that_fails_takes_the_first_worker_down_too(aws: Aws) -> None:
    aws.harness.inject("RunInstances", "none", *["error-before"] * ATTEMPTS)
    with pytest.raises(ClusterAIError, match="RunInstances"):
        cloud.up(Settings.from_env(), aws.inventory, 2)
    assert aws.running() == []
    states = sorted(r.state for r in aws.store().cloud_instances())
    assert states == ["closed", "terminated"]


def test_cost_agrees_with_the_records_and_the_price_table(aws: Aws) -> None:
    aws.cli("cloud", "up", "-i", str(aws.inventory), "--count", "1", "--type", "g5.xlarge")
    report = json.loads(aws.cli("cloud", "cost", "--json").stdout)
    [row] = report["instances"]
    assert row["hourly_usd"] == 1.006 and row["state"] == "terminated"
    from datetime import datetime

    hours = (
        datetime.fromisoformat(row["ended_at"]) - datetime.fromisoformat(row["launched_at"])
    ).total_seconds() / 3600
    assert row["cost_usd"] == pytest.approx(hours * 1.006, abs=1e-6)
    assert report["total_usd"] == pytest.approx(row["cost_usd"], abs=1e-6)
    assert report["hourly_now_usd"] == 0


@pytest.mark.parametrize(
    ("args", "changes", "message"),
    [
        ({"count": 4}, {}, "--count 4: 0 cloud workers exist and cloud_max_instances is 3"),
        (
            {"count": 3, "instance_type": "g5.xlarge"},
            {},
            "would make $3.0180/h, over cloud_spend_cap_hourly_usd $2.50/h",
        ),
        ({"count": 1, "instance_type": "p5.48xlarge"}, {}, "--type p5.48xlarge: is not in"),
        ({"count": 1, "max_price": 0.5}, {}, "--max-price: only goes with --spot"),
        ({"count": 1}, {"cloud_region": "mars"}, "group cloud: cloud_region: 'mars' is not valid"),
        (
            {"count": 1},
            {"cloud_ssh_private_key_file": "/nonexistent/key"},
            "cloud_ssh_private_key_file: /nonexistent/key or its .pub is missing",
        ),
    ],
)
def test_bad_input_is_refused_before_any_call_to_the_cloud(
    aws: Aws, args: dict[str, Any], changes: dict[str, Any], message: str
) -> None:
    """In-process, through the use case the CLI calls (the CLI's one line and exit 2
    for a UsageError: test_no_credentials_..., and tests/unit)."""
    set_variables(aws, **changes)
    with pytest.raises(UsageError) as refused:
        cloud.up(Settings.from_env(), aws.inventory, **args)
    assert message in str(refused.value) and refused.value.exit_code == 2
    assert aws.harness.calls == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cloud_ami": "ami-0000000000000dead"}, "AWS DescribeImages ami-0000000000000dead"),
        ({}, "is in vpc-"),
    ],
)
def test_bad_cloud_resources_are_refused_before_anything_is_created(
    aws: Aws, changes: dict[str, Any], message: str
) -> None:
    if not changes:  # a security group of another VPC
        other = aws.ec2.create_vpc(CidrBlock="127.1.0.0/16")["Vpc"]["VpcId"]
        group = aws.ec2.create_security_group(GroupName="x", Description="x", VpcId=other)
        changes = {"cloud_security_group_ids": [group["GroupId"]]}
    set_variables(aws, **changes)
    result = aws.cli("cloud", "up", "-i", str(aws.inventory))
    assert result.code == 2, result.stdout + result.stderr
    assert message in result.stderr, result.stderr
    assert "RunInstances" not in aws.harness.calls
    assert aws.tagged() == []


def test_no_credentials_down_of_a_stranger_and_a_file_inventory_are_one_line(aws: Aws) -> None:
    bare = {**aws.env, "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    result = run_cli("cloud", "up", "-i", str(aws.inventory), env=bare)
    assert result.code == 2 and "AWS credentials: none found" in result.stderr, result.stderr
    result = aws.cli("cloud", "down", "-i", str(aws.inventory), "i-0123456789abcdef0", "--yes")
    assert result.code == 2
    assert "i-0123456789abcdef0: is not a live cloud worker of this cluster" in result.stderr
    result = aws.cli("cloud", "up", "-i", str(aws.inventory / "hosts.yml"))
    assert result.code == 2 and "has no clusterai_state.yml" in result.stderr, result.stderr
    assert aws.harness.calls == []


def test_a_cloud_up_killed_half_way_leaves_nothing_running_after_reconcile(aws: Aws) -> None:
    """SIGKILL while ``up`` waits for its instance: the record stays launched, and the lock
    keeps a second command out while the first runs; once it is gone, reconcile
    terminates the instance."""
    aws.harness.pending_s = 120.0  # the instance stays pending: up is waiting when killed
    try:
        process = subprocess.Popen(
            [str(CLUSTERAI), "cloud", "up", "-i", str(aws.inventory)],
            env={**os.environ, **aws.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(
                lambda: (
                    "DescribeInstances" in aws.harness.calls[-1:]
                    and "RunInstances" in aws.harness.calls
                ),
                60,
                "cloud up waiting for its instance",
            )
            busy = aws.cli("cloud", "reconcile", "-i", str(aws.inventory))
            assert busy.code == 2, busy.stderr
            assert f"another clusterai cloud command is running (pid {process.pid})" in busy.stderr
            process.send_signal(signal.SIGKILL)
        finally:
            process.kill()
            process.wait(timeout=30)
    finally:
        aws.harness.pending_s = 1.0
    assert len(aws.running()) == 1
    [left] = aws.store().cloud_instances()
    assert left.state == "launched"
    done = aws.cli("cloud", "reconcile", "-i", str(aws.inventory), "--json")
    assert done.code == 0, done.stderr
    assert [(a["kind"], a["instance_id"]) for a in json.loads(done.stdout)] == [
        ("terminate", left.instance_id)
    ]
    assert aws.running() == []
    ended = aws.store().cloud_instance(left.intent)
    assert ended is not None and ended.state == "terminated" and ended.ended_at is not None


@pytest.mark.parametrize(("step", "fault"), MATRIX, ids=[f"{s}-{f}" for s, f in MATRIX])
def test_a_fault_at_any_step_then_reconcile_leaves_no_instance_unaccounted(
    aws: Aws, step: str, fault: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's life (tests/cloud/flow.py: up, then down) meets one fault: an error
    before or after the call acts, a dropped connection, an answer past the read timeout,
    or the process SIGKILLed. Then reconcile leaves no instance running that the store
    does not show as a joined worker, and down --all leaves none at all."""
    monkeypatch.setenv("CLUSTERAI_AWS_READ_TIMEOUT", "1")
    aws.harness.pending_s = 0.0
    flow.strike(aws.harness, aws.inventory, step, fault, {**os.environ, **aws.env})
    assert flow.unaccounted(aws.inventory, aws.ec2, aws.store()) == []
    cloud.down(Settings.from_env(), aws.inventory, [], everything=True, drain=flow.step("-"))
    assert aws.running() == []


def test_the_metadata_stand_in_answers_as_imdsv2_does() -> None:
    """The spot tests' stand-in (tests/cloud/metadata.py): a token first, 401 without one,
    404 until a notice, the notice as JSON, and EC2's reclaim when its time comes."""
    reclaimed: list[str] = []
    metadata = Metadata(reclaim=reclaimed.append, identify=lambda _port: "i-0123456789abcdef0")
    metadata.serve("i-0123456789abcdef0", "ec2-127-0-250-7")
    base = metadata.url

    def ask(method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
        request = urllib.request.Request(base + path, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, ""

    try:
        assert ask("PUT", "/latest/api/token", {})[0] == 400
        status, token = ask("PUT", "/latest/api/token", {TOKEN_TTL: "60"})
        assert status == 200 and token
        action = "/latest/meta-data/spot/instance-action"
        assert ask("GET", action, {})[0] == 401
        assert ask("GET", action, {TOKEN: "forged"})[0] == 401
        assert ask("GET", action, {TOKEN: token})[0] == 404
        assert ask("GET", "/latest/meta-data/instance-id", {TOKEN: token}) == (
            200,
            "i-0123456789abcdef0",
        )
        when = metadata.interrupt("i-0123456789abcdef0", in_s=0.5)
        status, body = ask("GET", action, {TOKEN: token})
        assert (status, json.loads(body)) == (200, {"action": "terminate", "time": when})
        wait_for(lambda: reclaimed == ["i-0123456789abcdef0"], 10, "the reclaim")
        assert metadata.reclaimed == reclaimed
    finally:
        metadata.close()
    # By default the caller is known by its sandbox host: this process is in none.
    metadata = Metadata()
    metadata.serve("i-0123456789abcdef0", "ec2-127-0-250-7")
    base = metadata.url
    try:
        assert ask("PUT", "/latest/api/token", {TOKEN_TTL: "60"})[0] == 404
    finally:
        metadata.close()


def test_a_spot_notice_takes_the_worker_down_with_the_notice_as_its_reason(aws: Aws) -> None:
    """What cloud watch does on a notice (cloud_spot.act): the worker is drained and
    scaled in (``drain``), its instance terminated, its record ended with the notice."""
    settings = Settings.from_env()
    [joined] = cloud.up(settings, aws.inventory, 1, spot=True, join=flow.step("join")).launched
    [instance] = aws.tagged()
    assert instance.get("InstanceLifecycle") == "spot"
    drained: list[list[str]] = []
    cloud_ = cloud.load(settings, aws.inventory)
    notice = SpotNotice("terminate", "2026-12-06T12:00:00Z")
    store = aws.store()
    assert cloud_spot.watched(store) == [joined]
    taken = cloud_spot.act(
        cloud_, store, cloud.ec2_for(cloud_), [(joined, notice)], None,
        drain=lambda _c, _s, records: drained.append([r.host for r in records]),
    )  # fmt: skip
    assert drained == [[joined.host]]
    [(ended, why)] = taken
    assert (ended.state, ended.error, why) == ("terminated", str(notice), notice)
    assert ended.error == "spot interruption notice: terminate at 2026-12-06T12:00:00Z"
    assert cloud_spot.watched(store) == []
    assert aws.running() == []


def test_watch_once_with_a_worker_that_cannot_say_takes_nothing_down(aws: Aws) -> None:
    """A spot worker whose metadata cannot be read (nothing answers SSH at moto's
    addresses) is reported and asked again next time, never taken down for it."""
    settings = Settings.from_env()
    cloud.up(settings, aws.inventory, 1, spot=True, join=flow.step("join"))
    said: list[str] = []
    taken = cloud_spot.watch(settings, aws.inventory, once=True, progress=said.append)
    assert taken == []
    assert any("cannot read its spot notice" in line for line in said), said
    assert len(aws.running()) == 1
