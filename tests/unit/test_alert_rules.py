"""The prometheus role's alert rules, rendered as the role renders them, through Prometheus'
own rule tests (``promtool test rules``: series in, alerts out, no server, no socket)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

from tests.helpers import REPO

DEFAULTS = yaml.safe_load((REPO / "roles/prometheus/defaults/main.yml").read_text())

# What the gateway's metrics say, and what the rules must make of it.
TESTS = {
    "rule_files": ["clusterai-alerts.yml"],
    "evaluation_interval": "1m",
    "tests": [
        {
            "interval": "1m",
            "input_series": [
                # Two gateway replicas see gpu1's qwen out of GPU memory; gpu2's is fine.
                {
                    "series": 'clusterai_gateway_model_on_cpu{instance="ctl1",backend="gpu1",'
                    'model="qwen:latest"}',
                    "values": "1x15",
                },
                {
                    "series": 'clusterai_gateway_model_on_cpu{instance="ctl2",backend="gpu1",'
                    'model="qwen:latest"}',
                    "values": "1x15",
                },
                {
                    "series": 'clusterai_gateway_model_on_cpu{instance="ctl1",backend="gpu2",'
                    'model="qwen:latest"}',
                    "values": "0x15",
                },
                # worker1 slowed down 3 minutes in: flagged from then on.
                {
                    "series": 'clusterai_gateway_throughput_drop{instance="ctl1",backend="worker1",'
                    'model="smollm2"}',
                    "values": "0 0 0 1x12",
                },
            ],
            "alert_rule_test": [
                {"eval_time": "4m", "alertname": "ModelOnCpu", "exp_alerts": []},
                {
                    "eval_time": "6m",
                    "alertname": "ModelOnCpu",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "severity": "warning",
                                "backend": "gpu1",
                                "model": "qwen:latest",
                            },
                            "exp_annotations": {
                                "summary": "qwen:latest on gpu1 runs out of GPU memory",
                                "description": "Ollama holds part or all of qwen:latest in"
                                " system memory on gpu1, which has GPUs: it fell back to the"
                                " CPU. Reload the model or restart the server (the"
                                " autoscaler's healing does where allowed).",
                            },
                        }
                    ],
                },
                {"eval_time": "12m", "alertname": "ThroughputDrop", "exp_alerts": []},
                {
                    "eval_time": "14m",
                    "alertname": "ThroughputDrop",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "severity": "warning",
                                "backend": "worker1",
                                "model": "smollm2",
                            },
                            "exp_annotations": {
                                "summary": "smollm2 on worker1 generates at under half its"
                                " usual speed",
                                "description": "The gateway's tokens per second for smollm2"
                                " on worker1 fell under its throughput.drop_below share of"
                                " the baseline: a throttled or overheated host, or a model"
                                " that moved to the CPU.",
                            },
                        }
                    ],
                },
            ],
        }
    ],
}


def test_model_on_cpu_and_throughput_drop_fire_after_their_delay(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing (Debian's prometheus; run `make system-deps`)")
        pytest.skip("promtool is not installed")
    template = (REPO / "roles/prometheus/templates/clusterai-alerts.yml.j2").read_text()
    environment = jinja2.Environment(
        variable_start_string="[[", variable_end_string="]]", keep_trailing_newline=True
    )
    (tmp_path / "clusterai-alerts.yml").write_text(environment.from_string(template).render(
        **{k: v for k, v in DEFAULTS.items() if k.startswith("prometheus_")}
    ))  # fmt: skip
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(TESTS, sort_keys=False))
    done = subprocess.run([promtool, "test", "rules", "tests.yml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
