"""A hosted pool through the real gateway: ``clusterai gateway`` over one worker (a
stand-in that takes half a second per chat, one at a time) and one hosted provider (a
fallback backend, another stand-in), and the autoscaler's use case against it. Quiet, the
provider is turned off (drained at the gateway); under load that queues behind the worker,
it is turned on again and takes the overflow; no request fails."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from clusterai_runner.config import Settings
from clusterai_runner.usecases import autoscale
from tests.gateway.conftest import ADMIN_KEY, start_gateway, start_stand_in, stop
from tests.helpers import ChatLoad


def test_a_hosted_provider_goes_off_when_quiet_and_comes_on_under_load(tmp_path: Path) -> None:
    worker = start_stand_in(tmp_path, "w1", delay=0.5)
    provider = start_stand_in(tmp_path, "openai", delay=0.5)
    gateway = start_gateway([worker], tmp_path, backends=[
        {"name": "w1", "url": worker.url, "api": "openai", "max_concurrency": 1},
        {"name": "openai", "url": provider.url, "api": "openai", "max_concurrency": 4,
         "fallback": True},
    ])  # fmt: skip
    try:
        port = int(gateway.url.rsplit(":", 1)[1])
        inventory = tmp_path / "hosts.yml"
        inventory.write_text(yaml.safe_dump({"all": {
            "vars": {"gateway_admin_key": ADMIN_KEY, "gateway_port": port,
                     "autoscale_pools": [{"name": "hosted", "kind": "hosted",
                                          "backends": ["openai"]}],
                     "autoscale_scale_out_delay_s": 0, "autoscale_idle_s": 0,
                     "autoscale_cooldown_s": 0, "autoscale_target_queue_wait_s": 0.2,
                     "autoscale_target_in_flight": 2},
            "children": {"control": {"hosts": {"ctl1": {
                "ansible_host": "127.0.0.1", "clusterai_address": "127.0.0.1"}}}},
        }}))  # fmt: skip
        settings = Settings.from_env({"CLUSTERAI_STATE_DIR": str(tmp_path / "scaler")})
        scaler = autoscale.load(settings, inventory)

        # Quiet: the provider goes off first.
        evaluation, off = autoscale.once(scaler)
        assert evaluation.pools[0].active == ("openai",), evaluation.to_json()
        assert off is not None, evaluation.to_json()
        assert (off.action, off.pool, off.host, off.outcome) == (
            "scale-in", "hosted", "openai", "succeeded"
        )  # fmt: skip
        assert gateway.backend("openai")["draining"]

        # Four clients at once behind one worker that answers one at a time: they queue.
        with ChatLoad(f"{gateway.url}/v1", "none", 4, 0.0, model="stand-in", stream=False) as load:
            time.sleep(3)
            evaluation, on = autoscale.once(scaler)
            assert on is not None and on.action == "scale-out", evaluation.to_json()
            assert (on.pool, on.host, on.outcome) == ("hosted", "openai", "succeeded")
            assert "queue wait p95" in on.reason
            assert not gateway.backend("openai")["draining"]
            before = gateway.backend("openai")["requests"]
            time.sleep(2)
            assert gateway.backend("openai")["requests"] > before  # it takes the overflow
        assert load.failures == [] and load.done > 0
        history = [(d.action, d.pool, d.host) for d in autoscale.history(settings, acted=True)]
        assert history == [("scale-out", "hosted", "openai"), ("scale-in", "hosted", "openai")]
    finally:
        stop(gateway.process)
        worker.kill()
        provider.kill()
