"""The autoscaler as the control host's service (roles/autoscaler), on a cluster of its
own: ctl1 with the gateway and Prometheus, worker1 and worker2 serving, worker3 and
worker4 a standby pool, parked. Under load the service starts worker3 (its first
converge, run by the service from the control host), parks it when the load is gone,
and wakes it for a request for the model only it serves.

A module of its own (it was test_site.py's longest test, about 340 s of that module's
chain): under pytest-xdist it runs beside test_site.py instead of after it.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from tests.helpers import (
    ChatLoad,
    address,
    ansible_playbook,
    booted_sandbox,
    monitoring_get,
    run_cli,
    ssh,
    wait_for,
)
from tests.integration.site_cluster import (
    GATEWAY_KEYS,
    LOAD_KEY,
    admin_key,
    converge,
    gateway_call,
    get_json,
)

pytestmark = pytest.mark.sandbox

AUTOSCALER_STATE = "/var/lib/clusterai-autoscaler"
ADMIN_KEY = "it-autoscaler-admin-key-5d0c9e"


@pytest.fixture(scope="module")
def cluster(state_dir: Path) -> Iterator[dict[str, Any]]:
    """Five sandbox hosts: ctl1 and worker1 to worker4."""
    with booted_sandbox("as", 5) as status:
        yield status


@pytest.fixture(scope="module")
def inventory(cluster: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The autoscaled cluster's inventory (a directory): worker1 and worker2 serve, worker3
    and worker4 are the standby pool, both parked. worker3 serves its model as
    smollm2-night, which the gateway also counts as smollm2: under load it takes smollm2's
    requests; parked, it is the only one for smollm2-night. Every host but the parked
    ones converged by site.yml."""
    source = Path(cluster["inventory"])
    inventory = tmp_path_factory.mktemp("autoscaled") / "inventory"
    document = yaml.safe_load(source.read_text())
    children = document["all"]["children"]
    standby = {name: children["workers"]["hosts"].pop(name) for name in ("worker3", "worker4")}
    children["workers"]["children"] = {"standby": {"hosts": standby}}
    children["parked"] = {"hosts": {"worker3": None, "worker4": None}}
    (inventory / "host_vars").mkdir(parents=True)
    if (source.parent / "host_vars").is_dir():
        shutil.copytree(source.parent / "host_vars", inventory / "host_vars", dirs_exist_ok=True)
    with (inventory / "host_vars" / "worker3.yml").open("a") as extra:
        extra.write("llamacpp_server_model_alias: smollm2-night\n")
    (inventory / "hosts.yml").write_text(yaml.safe_dump(document, sort_keys=False))
    group_vars = inventory / "group_vars" / "all"
    group_vars.mkdir(parents=True)
    shutil.copy(GATEWAY_KEYS, group_vars / "keys.yml")
    (group_vars / "autoscale.yml").write_text(yaml.safe_dump({
        "gateway_admin_key": ADMIN_KEY,
        # A request for a parked worker's model waits this long for it.
        "gateway_queue_timeout_s": 240,
        # The queue wait's p95 over 15 s, not a minute: the idle worker is parked sooner.
        "gateway_queue_wait_window_s": 15,
        "gateway_aliases": {"smollm2": ["smollm2", "smollm2-night"]},
        "autoscale_pools": [{"name": "standby", "kind": "standby", "group": "standby", "max": 1}],
        "autoscale_interval_s": 2, "autoscale_scale_out_delay_s": 4, "autoscale_idle_s": 10,
        "autoscale_cooldown_s": 5, "autoscale_target_queue_wait_s": 0.2,
        "autoscale_target_in_flight": 3,
        "autoscaler_enabled": True,
    }))  # fmt: skip
    # The serving hosts; the service starts evaluating once ctl1 is converged.
    converge(str(inventory), "site.yml", "--limit", "ctl1,worker1,worker2")
    return inventory


def test_the_autoscaler_starts_a_standby_worker_under_load_parks_it_and_wakes_it_for_a_request(
    cluster: dict[str, Any], inventory: Path
) -> None:
    """The service runs the scale playbooks from the control host, with its own SSH key
    and its copy of the inventory."""
    control, worker3 = address(cluster, "ctl1"), address(cluster, "worker3")
    assert admin_key(cluster) == ADMIN_KEY
    key = ADMIN_KEY
    group_vars = inventory / "group_vars" / "all"
    again = converge(str(inventory), "site.yml", "--limit", "ctl1", "--tags", "autoscaler")
    assert again["ctl1"]["changed"] == 0, again

    def backends() -> dict[str, Any]:
        found = gateway_call(cluster, "/admin/backends", key=key)[2]["backends"]
        return {b["name"]: b for b in found}

    def serving() -> list[str]:
        return sorted(name for name, b in backends().items() if not b["standby"])

    def ready() -> bool:
        try:
            return serving() == ["worker1", "worker2"] and all(
                backends()[w]["healthy"] for w in ("worker1", "worker2")
            )
        except OSError:  # restarting
            return False

    wait_for(ready, 60, "the gateway back with both workers healthy")
    assert backends()["worker3"]["standby"] and backends()["worker3"]["models"] == ["smollm2-night"]
    plan = json.loads(run_cli("autoscale", "plan", "-i", str(inventory), "--json").stdout)
    assert plan["action"] is None, plan
    assert plan["pools"] == {"standby": {
        "active": [], "parked": ["worker3", "worker4"],
        "models": {"worker3": ["smollm2-night"], "worker4": ["smollm2"]},
        "unavailable": {}, "start_s": None,
    }}  # fmt: skip
    as_service = ["runuser", "-u", "clusterai-autoscaler", "--", "env",
                  f"CLUSTERAI_STATE_DIR={AUTOSCALER_STATE}/state",
                  "/opt/clusterai/autoscaler/venv/bin/python",
                  "-m", "clusterai_runner"]  # fmt: skip
    metrics_url = f"https://{control}:9469/metrics"

    def counted(action: str) -> int:
        """The service's finished actions of a kind, from its metrics (TLS, the login)."""
        labels = f'action="{action}",outcome="succeeded",pool="standby"'
        found = re.search(rf"clusterai_autoscale_decisions_total\{{{labels}\}} (\d+)",
                          monitoring_get(cluster, metrics_url))  # fmt: skip
        return int(found.group(1)) if found else 0

    def decisions() -> list[dict[str, Any]]:
        """The service's actions, the oldest first, from its store on the control host."""
        listed = ssh(cluster, control, *as_service, "autoscale", "history", "--actions", "--json")
        assert listed.returncode == 0, listed.stderr
        return list(reversed(json.loads(listed.stdout)))

    def acted(action: str, count: int = 1) -> list[dict[str, Any]] | None:
        if counted(action) < count:
            time.sleep(1)  # each look is a scrape of the service's metrics
            return None
        return [d for d in decisions() if d["action"] == action]

    def begun(action: str) -> bool:
        if any(d["action"] == action for d in decisions()):
            return True
        time.sleep(2)  # each look starts the CLI on the control host
        return False

    # Twelve clients over two workers of four slots each: four always wait in the queue.
    load = ChatLoad(f"http://{control}:8000/v1", LOAD_KEY, 12, pause_s=0.2, max_tokens=8)
    try:
        with load:
            wait_for(lambda: begun("scale-out"), 600, "the autoscaler to start a standby worker")
            # While the service converges worker3 (a minute or more), a light load: about
            # one request a second, so requests keep passing through the gateway. At full
            # load the two workers' servers kept both of this machine's cores busy all that
            # time, slowing the converge and every test beside it (as did a request every
            # 4 s per client, three a second, to a lesser degree). The service evaluates
            # nothing while it acts, and counts quiet only from the action's end.
            load.pace(12.0)
            started = wait_for(lambda: acted("scale-out"), 600, "a standby worker started")[0]
            # Full load again: worker3 takes its share, and no one is quiet enough to park.
            load.pace(0.2)
            assert (started["host"], started["outcome"]) == ("worker3", "succeeded"), started
            # Whichever of the load's signals passed its target first: the queue wait's
            # p95 or the requests in flight (eight at the workers' slots, 4 per worker).
            signals = started["inputs"]["signals"]
            per_worker = signals["in_flight"] / max(signals["serving"], 1)
            above = {
                "queue wait p95": signals["queue_wait_p95_s"] > 0.2,
                "requests in flight per worker": per_worker > 3,
            }
            assert any(above.values()), started
            for named, passed in above.items():
                assert (named in started["reason"]) == passed, started
            before = backends()["worker3"]["requests"]
            wait_for(
                lambda: backends()["worker3"]["requests"] > before + 3,
                120,
                "the gateway routing to worker3",
            )
            assert backends()["worker3"]["url"] == f"http://{worker3}:8080"
            under_load = load.done
        # The load is over: after the idle time the worker is drained and stopped.
        parked = wait_for(lambda: acted("scale-in"), 300, "the idle standby worker parked")[0]
        assert (parked["host"], parked["outcome"]) == ("worker3", "succeeded"), parked
        assert load.failures == [], load.failures[:5]
        assert serving() == ["worker1", "worker2"]
        assert backends()["worker3"]["standby"] and backends()["worker4"]["standby"]
        stopped = ssh(cluster, worker3, "systemctl is-active clusterai-llamacpp")
        assert stopped.stdout.strip() == "inactive"
        # status over the service's working copy of the inventory, where it parked worker3.
        working = ssh(cluster, control, "cat", f"{AUTOSCALER_STATE}/inventory/hosts.yml")
        (inventory / "hosts.yml").write_text(working.stdout)
        status = run_cli("status", "-i", str(inventory), "--limit", "worker3", "--json")
        assert [h["inference"] for h in json.loads(status.stdout)["hosts"]] == ["parked"]

        # The pool at zero: one request for the model only its parked worker serves waits
        # at the gateway while the autoscaler starts that worker, and is answered.
        client = openai.OpenAI(base_url=f"http://{control}:8000/v1", api_key=LOAD_KEY,
                               max_retries=0)  # fmt: skip
        asked = time.monotonic()
        answer = client.chat.completions.create(
            model="smollm2-night",
            messages=[{"role": "user", "content": "Wake up."}],
            max_tokens=8,
            timeout=300,
        )
        waited = time.monotonic() - asked
        assert answer.choices[0].message.content, answer
        # The gateway can answer before the autoscaler's scale_out.yml run ends and its
        # decision is printed: wait for the decision.
        woken = wait_for(lambda: acted("scale-out", 2), 300, "the wake's decision recorded")
        assert (woken[1]["host"], woken[1]["outcome"]) == ("worker3", "succeeded"), woken
        assert "a request waits for smollm2-night" in woken[1]["reason"], woken[1]
        assert not backends()["worker3"]["standby"]
        assert counted("scale-in") == 1
        # Prometheus scrapes the service (job autoscaler).
        up = get_json(
            cluster, f"https://{control}:9090/api/v1/query?query=up%7Bjob%3D%22autoscaler%22%7D"
        )
        assert [r["value"][1] for r in up["data"]["result"]] == ["1"], up
    finally:
        # Off before the configuration test below, whatever happened.
        stopped_service = ssh(cluster, control, "systemctl", "stop", "clusterai-autoscaler")
    assert stopped_service.returncode == 0, stopped_service.stderr
    history = decisions()
    shown = [f"{d['action']} {d['host']} {d['outcome']} {d['seconds']} s ({d['reason']})"
             for d in history]  # fmt: skip
    print(f"autoscale: {under_load} chats under load, {load.done} in all; the woken request"
          f" answered in {waited:.1f} s; {'; '.join(shown)}")  # fmt: skip
    working = ssh(cluster, control, "cat", f"{AUTOSCALER_STATE}/inventory/hosts.yml")
    written = yaml.safe_load(working.stdout)["all"]["children"]
    assert set(written["parked"]["hosts"]) == {"worker4"}  # worker3 serves again
    assert [(d["action"], d["host"], d["outcome"]) for d in history] == [
        ("scale-out", "worker3", "succeeded"),
        ("scale-in", "worker3", "succeeded"),
        ("scale-out", "worker3", "succeeded"),
    ]
    assert history[0]["run_id"] and history[0]["seconds"] > 0

    # A configuration its checks refuse: the start fails, and the converge says why.
    autoscale = yaml.safe_load((group_vars / "autoscale.yml").read_text())
    autoscale["autoscale_pools"][0]["min"] = 2
    (group_vars / "autoscale.yml").write_text(yaml.safe_dump(autoscale))
    refused = ansible_playbook(
        str(inventory), "site.yml", "--limit", "ctl1", "--tags", "autoscaler"
    )
    assert refused.returncode != 0
    assert "autoscale_pools[0].min: 2 is above max 1" in refused.stdout, refused.stdout[-3000:]
    state = ssh(cluster, control, "systemctl", "is-active", "clusterai-autoscaler")
    assert state.stdout.strip() in ("failed", "inactive"), state.stdout
