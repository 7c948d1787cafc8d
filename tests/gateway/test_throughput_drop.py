"""A llama.cpp worker slowed down for real: a real llama.cpp server with SmolLM2, a real
gateway over it, a real Prometheus with the prometheus role's alert rules, and the
autoscaler's healing use case.

The server's CPU time is capped by the kernel's CFS quota on its cgroup (the cpu
controller: what systemd's ``CPUQuota=`` writes). Not through systemd itself: systemd is
not PID 1 on the project's machines, and the sandbox hosts get no cpu controller
delegated (a unit's ``CPUQuota=`` there is recorded and not enforced, measured), so the
test puts the server's process into a cgroup of its own on this machine.

Before the cap the gateway measures the server's tokens per second (the baseline); after
it, the recent median falls under half of it: the ``throughput_drop`` flag in
/admin/backends, ``clusterai_gateway_throughput_drop`` 1 in /metrics, ``ThroughputDrop``
firing in Prometheus, and with ``autoscale_healing: [drain]`` the autoscaler drains the
worker, a decision in its store.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import yaml

from clusterai_runner.config import Settings
from clusterai_runner.usecases import autoscale
from tests.gateway.conftest import ADMIN_KEY, start_gateway, start_server, stop
from tests.helpers import REPO, free_port, wait_for

RECENT_S = 20


@contextlib.contextmanager
def cpu_quota(pid: int, share: float) -> Iterator[None]:
    """The process ``pid`` (all its threads) capped at ``share`` of one CPU, in a cgroup of
    its own (cgroup v1's cpu hierarchy, or v2's cpu.max), put back when done."""
    name = f"clusterai-test-quota-{os.getpid()}-{pid}"
    v1 = Path("/sys/fs/cgroup/cpu")
    root = v1 if (v1 / "cgroup.procs").exists() else Path("/sys/fs/cgroup")
    group = root / name
    group.mkdir()
    period = 100_000
    try:
        if root == v1:
            (group / "cpu.cfs_period_us").write_text(str(period))
            (group / "cpu.cfs_quota_us").write_text(str(int(share * period)))
        else:
            (group / "cpu.max").write_text(f"{int(share * period)} {period}")
        (group / "cgroup.procs").write_text(str(pid))
        yield
    finally:
        with contextlib.suppress(OSError):  # the process may have ended
            (root / "cgroup.procs").write_text(str(pid))
        group.rmdir()


def chat(url: str, n: int) -> dict[str, Any]:
    """A chat completion of at least 8 tokens (a sample for the gateway); each prompt
    differs, so the answer cache never answers."""
    prompt = f"({n}) List twenty fruits, one per line."
    body = {"model": "smollm2", "max_tokens": 24, "temperature": 0,
            "messages": [{"role": "user", "content": prompt}]}  # fmt: skip
    request = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=120) as response:
        answer: dict[str, Any] = json.load(response)
    return answer


def prometheus(tmp_path: Path, gateway_port: int) -> tuple[subprocess.Popen[bytes], str]:
    """Debian's Prometheus on a free port, scraping the gateway every second with the
    prometheus role's alert rules (ThroughputDrop's delay 0 s)."""
    defaults = yaml.safe_load((REPO / "roles/prometheus/defaults/main.yml").read_text())
    template = (REPO / "roles/prometheus/templates/clusterai-alerts.yml.j2").read_text()
    environment = jinja2.Environment(variable_start_string="[[", variable_end_string="]]")
    settings = {k: v for k, v in defaults.items() if k.startswith("prometheus_")}
    settings["prometheus_throughput_drop_for"] = "0s"
    (tmp_path / "clusterai-alerts.yml").write_text(
        environment.from_string(template).render(**settings)
    )
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "clusterai-alerts.yml")],
        "scrape_configs": [{"job_name": "gateway", "static_configs": [
            {"targets": [f"127.0.0.1:{gateway_port}"], "labels": {"instance": "ctl1"}}]}],
    }))  # fmt: skip
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--web.listen-address=127.0.0.1:{port}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return process, f"http://127.0.0.1:{port}"


def firing(prometheus_url: str) -> list[dict[str, Any]]:
    try:
        with urllib.request.urlopen(prometheus_url + "/api/v1/alerts", timeout=5) as response:
            alerts: list[dict[str, Any]] = json.load(response)["data"]["alerts"]
    except OSError:
        return []
    return [a for a in alerts if a["state"] == "firing"]


def test_a_throttled_llama_cpp_worker_raises_its_flag_metric_and_alert_and_is_healed(
    tmp_path: Path, llama_assets: tuple[Path, Path]
) -> None:
    python, model = llama_assets
    server = start_server(python, model, "cpu1", tmp_path)
    gateway = None
    watcher = None
    try:
        throughput = {"recent_s": RECENT_S, "min_samples": 2, "drop_below": 0.5}
        gateway = start_gateway([server], tmp_path, throughput=throughput)
        port = int(gateway.url.rsplit(":", 1)[1])
        watcher, prometheus_url = prometheus(tmp_path, port)
        for n in range(4):  # the baseline
            assert chat(gateway.url, n)["usage"]["completion_tokens"] >= 8
        time.sleep(RECENT_S + 1)  # out of the recent window
        assert gateway.backend("cpu1")["flags"] == []

        with cpu_quota(server.process.pid, 0.1):
            for n in range(10, 12):  # about 6 s each, against 0.4 s before
                chat(gateway.url, n)
            (flag,) = gateway.backend("cpu1")["flags"]
            assert (flag["kind"], flag["model"]) == ("throughput_drop", "smollm2"), flag
            assert "tokens/s over the last 20 s" in flag["detail"], flag
            with urllib.request.urlopen(gateway.url + "/metrics", timeout=10) as response:
                metrics = response.read().decode()
            assert 'clusterai_gateway_throughput_drop{backend="cpu1",model="smollm2"} 1' in metrics

            def alert() -> bool:
                return any(a["labels"]["alertname"] == "ThroughputDrop"
                           and a["labels"]["backend"] == "cpu1"
                           for a in firing(prometheus_url))  # fmt: skip

            wait_for(alert, 60, f"ThroughputDrop firing in Prometheus ({tmp_path})")

            inventory = tmp_path / "hosts.yml"
            inventory.write_text(yaml.safe_dump({"all": {
                "vars": {"gateway_admin_key": ADMIN_KEY, "gateway_port": port,
                         "autoscale_pools": [{"name": "standby", "max": 1}],
                         "autoscale_healing": ["drain"], "autoscale_healing_wait_s": 60},
                "children": {
                    "control": {"hosts": {"ctl1": {
                        "ansible_host": "127.0.0.1", "clusterai_address": "127.0.0.1"}}},
                    # A parked standby worker, never contacted: nothing to scale here.
                    "workers": {"children": {"standby": {"hosts": {"s1": {
                        "ansible_host": "127.0.0.2"}}}, "parked": {"hosts": {"s1": {}}}}},
                },
            }}))  # fmt: skip
            settings = Settings.from_env({"CLUSTERAI_STATE_DIR": str(tmp_path / "scaler")})
            scaler = autoscale.load(settings, inventory)
            _, drain = autoscale.once(scaler)
            assert drain is not None, "no healing step"
            assert (drain.action, drain.host, drain.inputs["step"], drain.outcome) == (
                "heal", "cpu1", "drain", "succeeded")  # fmt: skip
            assert "throughput_drop for smollm2 on cpu1" in drain.reason, drain.reason
            assert gateway.backend("cpu1")["draining"]
            history = [(d.action, d.host, d.inputs.get("step"))
                       for d in autoscale.history(settings, acted=True)]  # fmt: skip
            assert history == [("heal", "cpu1", "drain")]
    finally:
        if watcher is not None:
            stop(watcher)
        if gateway is not None:
            stop(gateway.process)
        server.kill()
