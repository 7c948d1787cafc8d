"""Healing through the real gateway: ``clusterai gateway`` over an Ollama worker with GPUs
(the fake Ollama of tests/fixtures, whose ``/api/ps`` holds its model three quarters in
system memory) and the autoscaler's use case. With ``autoscale_healing: [reload,
drain]`` it reloads the model through Ollama's API, waits, drains the worker when the
flag is still there, then has no step left; each step is a decision in the store.
Without ``autoscale_healing`` the flag only raises its alert: nothing is done."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from clusterai_runner.config import Settings
from clusterai_runner.usecases import autoscale
from tests.fixtures import fake_ollama
from tests.gateway.conftest import ADMIN_KEY, start_gateway, start_stand_in, stop

PS = {"models": [{"name": "qwen:latest", "model": "qwen:latest", "size": 4 * 10**9,
                  "size_vram": 10**9}]}  # fmt: skip


def inventory(path: Path, port: int, **more: Any) -> Path:
    path.write_text(yaml.safe_dump({"all": {
        "vars": {"gateway_admin_key": ADMIN_KEY, "gateway_port": port,
                 "autoscale_pools": [{"name": "hosted", "kind": "hosted",
                                      "backends": ["openai"]}], **more},
        "children": {"control": {"hosts": {"ctl1": {
            "ansible_host": "127.0.0.1", "clusterai_address": "127.0.0.1"}}}},
    }}))  # fmt: skip
    return path


def test_an_allowed_healing_step_runs_in_order_and_is_recorded(tmp_path: Path) -> None:
    provider = start_stand_in(tmp_path, "openai")
    with fake_ollama.in_thread(tmp_path / "ollama", PS) as ollama_url:
        gateway = start_gateway([], tmp_path, backends=[
            {"name": "gpu1", "url": ollama_url, "api": "ollama", "gpu": True},
            {"name": "openai", "url": provider.url, "api": "openai", "fallback": True},
        ])  # fmt: skip
        try:
            port = int(gateway.url.rsplit(":", 1)[1])
            flags = gateway.backend("gpu1")["flags"]
            assert [f["kind"] for f in flags] == ["model_on_cpu"], flags

            # Not allowed: the flag is only an alert.
            settings = Settings.from_env({"CLUSTERAI_STATE_DIR": str(tmp_path / "off")})
            scaler = autoscale.load(settings, inventory(tmp_path / "off.yml", port))
            evaluation, decision = autoscale.once(scaler)
            assert decision is not None and decision.action == "hold", evaluation.to_json()
            log = tmp_path / "ollama" / "requests.log"
            assert "POST /api/generate" not in log.read_text()

            settings = Settings.from_env({"CLUSTERAI_STATE_DIR": str(tmp_path / "on")})
            allowed = {"autoscale_healing": ["drain", "reload"], "autoscale_healing_wait_s": 2}
            scaler = autoscale.load(settings, inventory(tmp_path / "on.yml", port, **allowed))
            _, reload = autoscale.once(scaler)
            assert reload is not None, "no healing step"
            assert (reload.action, reload.pool, reload.host, reload.outcome) == (
                "heal", "healing", "gpu1", "succeeded")  # fmt: skip
            assert reload.inputs["step"] == "reload" and reload.inputs["model"] == "qwen:latest"
            assert "model_on_cpu for qwen:latest on gpu1 (75% of 4.0 GB" in reload.reason
            requests = log.read_text().splitlines()
            unload = requests.index("POST /api/generate qwen:latest keep_alive=0")
            assert requests[unload + 1] == "POST /api/generate qwen:latest"  # loaded again
            # The step's effect is not known yet: nothing more for now.
            _, waiting = autoscale.once(scaler)
            assert waiting is None or waiting.action == "hold"
            time.sleep(2.2)  # the flag outlived the reload: the next step
            _, drain = autoscale.once(scaler)
            assert drain is not None and (drain.action, drain.inputs["step"], drain.outcome) == (
                "heal", "drain", "succeeded")  # fmt: skip
            assert gateway.backend("gpu1")["draining"]
            time.sleep(2.2)
            _, last = autoscale.once(scaler)  # no step left: the operator's turn
            assert last is None or last.action == "hold"
            history = [(d.action, d.host, d.inputs.get("step"))
                       for d in autoscale.history(settings, acted=True)]  # fmt: skip
            assert history == [("heal", "gpu1", "drain"), ("heal", "gpu1", "reload")]
        finally:
            stop(gateway.process)
            provider.kill()
