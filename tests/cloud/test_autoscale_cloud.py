"""The autoscaler's cloud pool through the real gateway and moto's EC2 on loopback: a
stand-in worker that answers one chat at a time behind ``clusterai gateway`` makes the
queue wait; the autoscaler launches a cloud worker through ``cloud.up``. Its instance
answers no SSH (tests/cloud/test_cloud.py), so it is terminated, the decision is recorded
as failed and the pool backs off; with the spend cap below one more worker's price the
autoscaler holds and calls nothing. Joining for real is tests/integration/test_cloud_join.py's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from clusterai_runner.config import Settings
from clusterai_runner.errors import UsageError
from clusterai_runner.usecases import autoscale
from tests.cloud.conftest import Aws, set_variables
from tests.gateway.conftest import ADMIN_KEY, Gateway, start_gateway, start_stand_in, stop
from tests.helpers import ChatLoad


@pytest.fixture
def loaded(aws: Aws, tmp_path: Path) -> Iterator[tuple[Aws, Gateway]]:
    """A gateway over one slow worker, with four clients queueing behind it, and the
    inventory's control host pointing at it."""
    worker = start_stand_in(tmp_path, "w1", delay=0.5)
    gateway = start_gateway([worker], tmp_path, backends=[
        {"name": "w1", "url": worker.url, "api": "openai", "max_concurrency": 1},
    ])  # fmt: skip
    hosts = aws.inventory / "hosts.yml"
    inventory = yaml.safe_load(hosts.read_text())
    inventory["all"]["children"]["control"]["hosts"]["ctl1"]["clusterai_address"] = "127.0.0.1"
    hosts.write_text(yaml.safe_dump(inventory))
    (aws.inventory / "group_vars/control.yml").write_text(yaml.safe_dump({
        "gateway_admin_key": ADMIN_KEY,
        "gateway_port": int(gateway.url.rsplit(":", 1)[1]),
        "autoscale_pools": [{"name": "burst", "kind": "cloud", "max": 1}],
        "autoscale_scale_out_delay_s": 0, "autoscale_cooldown_s": 0,
        "autoscale_target_queue_wait_s": 0.2, "autoscale_backoff_s": 600,
    }))  # fmt: skip
    try:
        with ChatLoad(f"{gateway.url}/v1", "none", 4, 0.0, model="stand-in", stream=False) as load:
            time.sleep(3)  # the queue builds up behind the one slot
            yield aws, gateway
        assert load.failures == [] and load.done > 0
    finally:
        stop(gateway.process)
        worker.kill()


def test_under_load_the_cloud_pool_launches_and_a_worker_that_cannot_join_is_ended(
    loaded: tuple[Aws, Gateway],
) -> None:
    aws, _gateway = loaded
    settings = Settings.from_env()
    scaler = autoscale.load(settings, aws.inventory)
    evaluation, decision = autoscale.once(scaler)
    assert decision is not None, evaluation.to_json()
    assert (decision.action, decision.pool, decision.outcome) == ("scale-out", "burst", "failed")
    assert "queue wait p95" in decision.reason
    assert "SSH did not answer within 2 s" in decision.error
    assert aws.harness.calls.count("RunInstances") == 1
    assert aws.running() == []  # terminated, not left behind
    [record] = aws.store().cloud_instances()
    assert record.state == "terminated"
    # The pool backs off: the next evaluation under the same load launches nothing.
    evaluation, held = autoscale.once(scaler)
    assert held is not None and held.action == "hold", evaluation.to_json()
    assert "no host to start" in held.reason
    assert aws.harness.calls.count("RunInstances") == 1


def test_the_cloud_pool_holds_at_the_spend_cap_without_calling_the_cloud(
    loaded: tuple[Aws, Gateway],
) -> None:
    aws, _gateway = loaded
    set_variables(aws, cloud_spend_cap_hourly_usd=0.05)  # under one t3.large (0.0832)
    scaler = autoscale.load(Settings.from_env(), aws.inventory)
    evaluation = autoscale.plan(scaler.settings, scaler)
    [pool] = evaluation.pools
    assert pool.launchable == 0 and "cloud_spend_cap_hourly_usd" in pool.capped
    assert evaluation.to_json()["pools"]["burst"]["capped"] == pool.capped
    _evaluation, held = autoscale.once(scaler)
    assert held is not None and held.action == "hold"
    assert "every pool is at its max or has no host to start" in held.reason
    assert "RunInstances" not in aws.harness.calls


def test_a_cloud_pool_without_the_cloud_configuration_or_past_its_caps_is_refused(
    aws: Aws,
) -> None:
    (aws.inventory / "group_vars/control.yml").write_text(yaml.safe_dump({
        "gateway_admin_key": ADMIN_KEY,
        "autoscale_pools": [{"name": "burst", "kind": "cloud", "max": 5}],
    }))  # fmt: skip
    settings = Settings.from_env()
    with pytest.raises(
        UsageError, match=r"autoscale_pools\[0\]\.max: 5 is above cloud_max_instances 3"
    ):
        autoscale.load(settings, aws.inventory)
    (aws.inventory / "group_vars/cloud.yml").unlink()
    with pytest.raises(
        UsageError,
        match=r"autoscale_pools\[0\]\.kind: a cloud pool needs the cloud configuration: .*region",
    ):
        autoscale.load(settings, aws.inventory)


def test_a_cloud_worker_still_starting_leaves_no_room_for_another(aws: Aws) -> None:
    (aws.inventory / "group_vars/control.yml").write_text(yaml.safe_dump({
        "gateway_admin_key": ADMIN_KEY,
        "autoscale_pools": [{"name": "burst", "kind": "cloud", "max": 2}],
    }))  # fmt: skip
    settings = Settings.from_env()
    scaler = autoscale.load(settings, aws.inventory)
    store = aws.store()
    try:
        store.record_intent("intent-1", "cloud-a1", "t3.large", False, 0.0832)
        evaluation = autoscale.plan(settings, scaler, store)
    finally:
        store.close()
    [pool] = evaluation.pools
    assert (pool.launchable, pool.capped) == (0, "1 cloud worker(s) still starting")
    assert evaluation.signals is None  # no gateway answers here: the policy holds anyway
    assert evaluation.decision.action is None
