"""The autoscaler's GPU signals from a real Prometheus (Debian's ``prometheus``, started
here on a free port with TLS from a CA made for the test, as the control host's serves
it): it scrapes a stand-in of the GPU exporter that labels its series as the cluster's
Prometheus does (``instance`` is the inventory name), for the worker the real gateway
serves with. Busy GPUs are pressure; Prometheus down makes the autoscaler hold."""

from __future__ import annotations

import http.server
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from clusterai_runner.adapters.http import JsonApi
from clusterai_runner.config import Settings
from clusterai_runner.errors import UsageError
from clusterai_runner.usecases import autoscale
from clusterai_runner.usecases.metrics import gpu_load
from tests.gateway.conftest import ADMIN_KEY, start_gateway, start_stand_in, stop
from tests.helpers import certificates, free_port, wait_for

GIB = 2**30


class Exporter(http.server.ThreadingHTTPServer):
    """nvidia_gpu_exporter's series for one GPU, with figures the test sets."""

    utilization = 0.0
    memory_used = 0.0


class Metrics(http.server.BaseHTTPRequestHandler):
    server: Exporter

    def do_GET(self) -> None:
        labels = 'uuid="GPU-0",name="NVIDIA L4"'
        body = (
            f"nvidia_smi_utilization_gpu_ratio{{{labels}}} {self.server.utilization}\n"
            f"nvidia_smi_memory_used_bytes{{{labels}}} {self.server.memory_used * 24 * GIB}\n"
            f"nvidia_smi_memory_total_bytes{{{labels}}} {24 * GIB}\n"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def exporter() -> Iterator[tuple[Exporter, int]]:
    port = free_port()
    server = Exporter(("127.0.0.1", port), Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, port
    finally:
        server.shutdown()
        server.server_close()


def test_busy_gpus_are_pressure_and_prometheus_down_holds(
    tmp_path: Path, exporter: tuple[Exporter, int]
) -> None:
    gpus, exporter_port = exporter
    gpus.utilization, gpus.memory_used = 0.97, 0.5
    cache = tmp_path / "cache"
    (cache / "pki/127.0.0.1").mkdir(parents=True)
    _ca, crt, key = certificates(cache / "pki/127.0.0.1")
    prometheus_port = free_port()
    (tmp_path / "web.yml").write_text(
        yaml.safe_dump({"tls_server_config": {"cert_file": str(crt), "key_file": str(key)}})
    )
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "gpu", "static_configs": [
            {"targets": [f"127.0.0.1:{exporter_port}"], "labels": {"instance": "w1"}}]}],
    }))  # fmt: skip
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        prometheus = subprocess.Popen(
            ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--web.config.file={tmp_path / 'web.yml'}",
             f"--web.listen-address=127.0.0.1:{prometheus_port}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    worker = start_stand_in(tmp_path, "w1")
    gateway = start_gateway([worker], tmp_path)
    try:
        inventory = tmp_path / "hosts.yml"
        inventory.write_text(yaml.safe_dump({"all": {
            "vars": {"gateway_admin_key": ADMIN_KEY,
                     "gateway_port": int(gateway.url.rsplit(":", 1)[1]),
                     "prometheus_port": prometheus_port,
                     "autoscale_pools": [{"name": "standby", "max": 1}],
                     "autoscale_scale_out_delay_s": 0,
                     "autoscale_target_gpu_utilization": 0.9,
                     "autoscale_target_gpu_memory": 0.95},
            "children": {
                "control": {"hosts": {"ctl1": {
                    "ansible_host": "127.0.0.1", "clusterai_address": "127.0.0.1"}}},
                "workers": {"children": {"standby": {"hosts": {"s1": {
                    "ansible_host": "127.0.0.2"}}}, "parked": {"hosts": {"s1": {}}}}},
            },
        }}))  # fmt: skip
        settings = Settings.from_env(
            {"CLUSTERAI_STATE_DIR": str(tmp_path / "scaler"), "CLUSTERAI_CACHE_DIR": str(cache)}
        )
        scaler = autoscale.load(settings, inventory)
        assert scaler.prometheus is not None
        api = scaler.prometheus
        wait_for(lambda: _loaded(api), 60, f"Prometheus scraping the exporter ({log})")

        evaluation = autoscale.plan(settings, scaler)
        assert evaluation.signals is not None, evaluation.signals_error
        assert evaluation.signals.gpu_utilization == pytest.approx(0.97)
        assert evaluation.signals.gpu_memory == pytest.approx(0.5)
        assert evaluation.decision.action is not None, evaluation.to_json()
        assert (evaluation.decision.action.kind, evaluation.decision.action.host) == (
            "scale-out", "s1"
        )  # fmt: skip
        assert evaluation.decision.reason.startswith("GPU utilisation 97% above the target 90%")
        assert evaluation.to_json()["signals"]["gpu_utilization"] == pytest.approx(0.97)

        # A worker Prometheus has no GPU figures for: missing, so no action.
        assert _loaded(api)
        with pytest.raises(UsageError, match="has no GPU utilization of w9 from the last minute"):
            gpu_load(api, ["w9"])

        # Prometheus down: the autoscaler holds, and says why.
        stop(prometheus)
        evaluation = autoscale.plan(settings, scaler)
        assert evaluation.signals is None and evaluation.decision.action is None
        assert evaluation.decision.reason == "holding: the signals could not be read"
        assert evaluation.signals_error.startswith("Prometheus")
    finally:
        stop(prometheus)
        stop(gateway.process)
        worker.kill()


def _loaded(api: JsonApi) -> bool:
    try:
        utilization, _memory = gpu_load(api, ["w1"])
    except UsageError:
        return False
    return utilization > 0.9
