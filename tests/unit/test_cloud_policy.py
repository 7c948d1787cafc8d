"""Cloud burst's rules with plain records and a fixed clock: the configuration's checks,
the spend caps, the accrued cost, and reconcile's decisions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from clusterai_runner.errors import UsageError
from clusterai_runner.store import CloudInstance
from clusterai_runner.usecases.cloud_policy import (
    SeenInstance,
    SpotNotice,
    check_launch,
    cloud_config,
    instance_cost,
    reconcile_plan,
    spend,
    spot_notice,
)

SOURCE = "inventory inv, group cloud"
GOOD: dict[str, Any] = {
    "cloud_region": "eu-west-1",
    "cloud_ami": "resolve:ssm:/aws/service/debian/release/bookworm/latest/amd64",
    "cloud_subnet_id": "subnet-0123456789abcdef0",
    "cloud_security_group_ids": ["sg-0123456789abcdef0"],
    "cloud_instance_types": {"g5.xlarge": 1.006, "t3.large": 0.0832},
    "cloud_max_instances": 4,
    "cloud_spend_cap_hourly_usd": 3.5,
    "cloud_spend_cap_monthly_usd": 5000,
    "cloud_tags": {"team": "ml"},
}
NOW = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)


def record(intent: str, state: str = "joined", **fields: Any) -> CloudInstance:
    base: dict[str, Any] = {
        "intent": intent,
        "host": f"cloud-{intent[:8]}",
        "instance_type": "g5.xlarge",
        "spot": False,
        "hourly_usd": 1.0,
        "state": state,
        "instance_id": f"i-{intent}",
        "address": "192.0.2.10",
        "host_key": None,
        "error": "",
        "created_at": "2026-12-06T10:00:00+00:00",
        "launched_at": "2026-12-06T10:00:00+00:00",
        "ended_at": None,
        "updated_at": "2026-12-06T10:00:00+00:00",
    }
    return CloudInstance(**{**base, **fields})


def test_a_good_configuration_is_read_with_its_defaults() -> None:
    config = cloud_config(GOOD, SOURCE, "ctl1")
    assert config.cluster == "ctl1" and config.default_type == "g5.xlarge"
    assert config.ssm_parameter == "/aws/service/debian/release/bookworm/latest/amd64"
    assert config.ssh_user == "admin"
    assert config.metadata_url == "http://169.254.169.254"
    stand_in = cloud_config({**GOOD, "cloud_metadata_url": "http://127.0.0.1:8169"}, SOURCE, "c")
    assert stand_in.metadata_url == "http://127.0.0.1:8169"
    tags = config.tags_for("a1b2c3d4e5f60718", "cloud-a1b2c3d4")
    assert tags == {
        "team": "ml",
        "Name": "ctl1-cloud-a1b2c3d4",
        "clusterai:cluster": "ctl1",
        "clusterai:intent": "a1b2c3d4e5f60718",
        "clusterai:role": "worker",
        "clusterai:created-by": "clusterai",
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cloud_region": None}, "inventory inv, group cloud: cloud_region: is not set"),
        ({"cloud_region": "Europe"}, "cloud_region: 'Europe' is not valid (e.g. eu-west-1)"),
        ({"cloud_ami": "debian"}, "cloud_ami: 'debian' is neither an AMI id nor resolve:ssm:"),
        ({"cloud_subnet_id": "vpc-1"}, "cloud_subnet_id: 'vpc-1' is not valid"),
        ({"cloud_security_group_ids": "sg-0123456789abcdef0"}, "cloud_security_group_ids: 'sg-"),
        ({"cloud_instance_types": {"huge": 1}}, "cloud_instance_types: 'huge' is not an instance"),
        (
            {"cloud_instance_types": {"t3.large": 0}},
            "cloud_instance_types.t3.large: 0 is not a positive number",
        ),
        (
            {"cloud_default_instance_type": "p5.48xlarge"},
            "cloud_default_instance_type: 'p5.48xlarge' is not in cloud_instance_types",
        ),
        ({"cloud_max_instances": 0}, "cloud_max_instances: 0 is not a whole number of 1 or more"),
        ({"cloud_max_instances": True}, "cloud_max_instances: True is not a whole number"),
        ({"cloud_spend_cap_hourly_usd": "ten"}, "cloud_spend_cap_hourly_usd: 'ten' is not a"),
        ({"cloud_spend_cap_monthly_usd": None}, "cloud_spend_cap_monthly_usd: is not set"),
        (
            {"cloud_tags": {"clusterai:cluster": "x"}},
            "cloud_tags.clusterai:cluster: is a tag clusterai sets itself",
        ),
        ({"cloud_cluster_name": "My Cluster"}, "cloud_cluster_name: 'My Cluster' is not a valid"),
        ({"cloud_ssh_user": "root user"}, "cloud_ssh_user: 'root user' is not a user name"),
        (
            {"cloud_metadata_url": "http://169.254.169.254/latest"},
            "cloud_metadata_url: 'http://169.254.169.254/latest' is not a base URL",
        ),
        ({"cloud_metadata_url": "169.254.169.254"}, "cloud_metadata_url: '169.254.169.254' is"),
    ],
)
def test_each_bad_variable_is_one_line_naming_it(change: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        cloud_config({**GOOD, **change}, SOURCE, "ctl1")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value) and caught.value.exit_code == 2


def test_a_launch_past_the_count_or_a_cap_is_refused_with_the_figures() -> None:
    config = cloud_config(GOOD, SOURCE, "ctl1")
    running = [record("a" * 16), record("b" * 16, hourly_usd=0.5)]
    assert check_launch(config, running, 1, "g5.xlarge", NOW) == pytest.approx(1.006)
    with pytest.raises(UsageError, match=r"2 cloud workers exist and cloud_max_instances is 4"):
        check_launch(config, running, 3, "t3.large", NOW)
    with pytest.raises(UsageError) as hourly:
        check_launch(config, running, 2, "g5.xlarge", NOW)
    assert "would make $3.5120/h, over cloud_spend_cap_hourly_usd $3.50/h" in str(hourly.value)
    assert "(running now: $1.5000/h)" in str(hourly.value)
    tight = cloud_config({**GOOD, "cloud_spend_cap_monthly_usd": 100}, SOURCE, "ctl1")
    with pytest.raises(UsageError) as monthly:
        check_launch(tight, running, 1, "t3.large", NOW)
    assert "over cloud_spend_cap_monthly_usd $100.00" in str(monthly.value)
    with pytest.raises(UsageError, match=r"--type m5\.large: is not in the inventory"):
        check_launch(config, [], 1, "m5.large", NOW)
    # Ended and closed records count for neither the maximum nor the hourly rate.
    ended = [record(c * 16, "terminated", ended_at="2026-12-06T11:00:00+00:00") for c in "cdef"]
    assert check_launch(config, ended, 3, "g5.xlarge", NOW) == pytest.approx(1.006)


def test_the_cost_runs_from_launch_to_end_at_the_recorded_price() -> None:
    done = record(
        "a" * 16,
        "terminated",
        hourly_usd=2.0,
        launched_at="2026-11-30T23:00:00+00:00",
        ended_at="2026-12-01T01:30:00+00:00",
    )
    live = record("b" * 16, hourly_usd=0.5)  # since 10:00, now 12:00
    never = record("c" * 16, "closed", launched_at=None, instance_id=None)
    assert instance_cost(done, NOW) == pytest.approx(5.0)
    assert instance_cost(live, NOW) == pytest.approx(1.0)
    assert instance_cost(never, NOW) == 0.0
    totals = spend([done, live, never], NOW)
    assert totals.total == pytest.approx(6.0)
    assert totals.month_to_date == pytest.approx(3.0 + 1.0)  # December's 1.5 h of the first
    assert totals.hourly_now == pytest.approx(0.5)


def seen(instance_id: str, state: str = "running", intent: str | None = None) -> SeenInstance:
    return SeenInstance(instance_id, state, intent, "192.0.2.20", "2026-12-06T10:00:00+00:00")


def test_reconcile_terminates_what_the_store_does_not_keep_and_closes_dead_intents() -> None:
    records = [
        record("a" * 16),  # joined, listed running: nothing to do
        record("b" * 16, "failed"),  # failed, still running: terminate
        record("c" * 16, "intent", instance_id=None, launched_at=None),  # old, no instance: close
        record(
            "d" * 16,
            "intent",
            instance_id=None,
            launched_at=None,
            created_at="2026-12-06T11:59:30+00:00",
        ),  # 30 s old: within the grace period
        record("e" * 16, "launched", instance_id=None),  # left half way; the tag finds it
        record("f" * 16, "joined"),  # the cloud says terminated (spot): ended
        record("g" * 16, "terminating"),  # a down that died half way: terminate again
    ]
    cloud = [
        seen("i-" + "a" * 16, intent="a" * 16),
        seen("i-" + "b" * 16, intent="b" * 16),
        seen("i-e", intent="e" * 16),
        seen("i-" + "f" * 16, "terminated", "f" * 16),
        seen("i-" + "g" * 16, intent="g" * 16),
        seen("i-stray", intent="9" * 16),  # tagged for the cluster, unknown to the store
        seen("i-gone", "terminated"),  # unknown and already gone: nothing
    ]
    plan = {(a.kind, a.instance_id or a.intent) for a in reconcile_plan(records, cloud, NOW)}
    assert plan == {
        ("terminate", "i-" + "b" * 16),
        ("close", "c" * 16),
        ("terminate", "i-e"),
        ("ended", "i-" + "f" * 16),
        ("terminate", "i-" + "g" * 16),
        ("terminate", "i-stray"),
    }
    adopted = reconcile_plan([], [seen("i-stray", intent="9" * 16)], NOW, adopt=True)
    assert [(a.kind, a.instance_id) for a in adopted] == [("adopt", "i-stray")]


def test_a_record_the_cloud_no_longer_lists_ends_only_after_the_grace_period() -> None:
    young = record("a" * 16, "launched", created_at="2026-12-06T11:59:00+00:00")
    old = record("b" * 16, "running")
    plan = [(a.kind, a.intent) for a in reconcile_plan([young, old], [], NOW)]
    assert plan == [("ended", "b" * 16)]


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("<?xml ...>Not Found\n404\n", None),
        (
            '{"action": "terminate", "time": "2026-12-06T12:02:00Z"}\n200\n',
            SpotNotice("terminate", "2026-12-06T12:02:00Z"),
        ),
        (
            '{"action":"stop","time":"2026-12-06T12:02:00Z"}\n200',
            SpotNotice("stop", "2026-12-06T12:02:00Z"),
        ),
    ],
)
def test_a_spot_notice_is_read_from_the_metadata_answer(
    output: str, expected: SpotNotice | None
) -> None:
    assert spot_notice(output) == expected


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("Unauthorized\n401\n", "the metadata service answered 401"),
        ("", "the metadata service answered nothing"),
        ("not json\n200\n", "spot/instance-action is not JSON"),
        ('{"action": "explode", "time": "x"}\n200\n', "holds no action and time"),
        ("[1]\n200\n", "holds no action and time"),
    ],
)
def test_an_answer_that_is_no_notice_and_no_404_is_an_error(output: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spot_notice(output)
