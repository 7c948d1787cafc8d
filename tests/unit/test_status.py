"""Parsing what `clusterai status` reads from the exporters and servers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clusterai_runner.errors import UsageError
from clusterai_runner.usecases.models import HostModels, compare, sync_targets
from clusterai_runner.usecases.status import HeldModel, _held_models, _models, parse_gpus

# The shape nvidia_gpu_exporter 1.x prints (one GPU; values as nvidia-smi reports them).
METRICS = """\
# HELP nvidia_smi_gpu_info A metric with a constant '1' value labeled by gpu uuid, name...
# TYPE nvidia_smi_gpu_info gauge
nvidia_smi_gpu_info{driver_version="550.54.15",name="NVIDIA L4",uuid="GPU-1b2c"} 1
nvidia_smi_utilization_gpu_ratio{uuid="GPU-1b2c"} 0.37
nvidia_smi_memory_used_bytes{uuid="GPU-1b2c"} 1.073741824e+09
nvidia_smi_memory_total_bytes{uuid="GPU-1b2c"} 2.4152899584e+10
nvidia_smi_temperature_gpu{uuid="GPU-1b2c"} 41
"""


def test_gpus_come_from_the_exporters_metrics() -> None:
    (gpu,) = parse_gpus(METRICS)
    assert gpu.name == "NVIDIA L4"
    assert gpu.utilization == 0.37
    assert gpu.memory_used_bytes == 1073741824
    assert gpu.memory_total_bytes == 24152899584


def test_no_gpu_metrics_means_no_gpus() -> None:
    assert parse_gpus("node_load1 0.5\n") == []


def test_models_from_each_backend() -> None:
    assert _models("llamacpp", '{"object": "list", "data": [{"id": "smollm2"}]}') == ["smollm2"]
    assert _models("ollama", '{"models": [{"name": "qwen2.5:0.5b"}, {"name": "a:1"}]}') == [
        "a:1",
        "qwen2.5:0.5b",
    ]
    assert _models("ollama", "not json") == []
    assert _models("llamacpp", None) == []


def test_held_models_say_digest_size_and_loaded_only_where_the_server_does() -> None:
    tags = json.dumps({"models": [
        {"name": "qwen:latest", "digest": "ab" * 32, "size": 397_000_000},
        {"name": "nomic-embed-text:latest", "digest": "", "size": "big"},
    ]})  # fmt: skip
    assert _held_models("ollama", tags, {"qwen:latest"}) == [
        HeldModel("nomic-embed-text:latest", None, None, False),
        HeldModel("qwen:latest", "ab" * 32, 397_000_000, True),
    ]
    # llama.cpp's server holds its one model in memory and says nothing of its file.
    listed = '{"object": "list", "data": [{"id": "smollm2"}]}'
    assert _held_models("llamacpp", listed, set()) == [HeldModel("smollm2", None, None, True)]
    assert _held_models("ollama", "not json", set()) == []


def test_models_drift_and_what_a_sync_converges() -> None:
    hosts = [
        HostModels("w1", ["gpu"], "ollama", ["qwen", "nomic-embed-text"]),
        HostModels("w2", ["gpu"], "ollama", ["qwen"]),
        HostModels("w3", ["cpu"], "llamacpp", ["smollm2"]),
        HostModels("w4", ["cpu"], "llamacpp", ["smollm2"]),
    ]
    serving = {"w1": ["qwen:latest"], "w2": ["qwen:latest", "old:1"], "w3": ["smollm2"]}
    details = {"w1": [HeldModel("qwen:latest", "ab", 10, True)]}
    compare(hosts, serving, details)
    w1, w2, w3, w4 = hosts
    assert (w1.missing, w1.extra, w1.drifted) == (["nomic-embed-text:latest"], [], True)
    assert w1.models == [{"name": "qwen:latest", "digest": "ab", "size": 10, "loaded": True,
                          "desired": True}]  # fmt: skip
    assert (w2.missing, w2.extra, w2.drifted) == ([], ["old:1"], True)
    assert (w3.drifted, w4.actual, w4.drifted) == (False, None, True)  # w4: not answering
    assert [h.name for h in sync_targets(hosts)] == ["w1", "w4"]
    assert [h.name for h in sync_targets(hosts, prune=True)] == ["w1", "w2", "w4"]
    assert [h.name for h in sync_targets(hosts, ["w3", "w1", "w1"])] == ["w1"]
    with pytest.raises(UsageError, match="host 'w9': is not a worker of the inventory"):
        sync_targets(hosts, ["w9"])


def _host(kind: str, **variables: object) -> Any:
    from clusterai_runner.adapters.inventory import InventoryHost

    return InventoryHost(
        name="ctl1" if kind == "control" else "w1",
        groups=(kind,),
        host="192.0.2.10",
        port=22,
        user="root",
        key_file=None,
        ssh_args=(),
        address="192.0.2.10",
        variables=dict(variables),
    )


def test_the_login_goes_only_where_the_clusters_ca_checks_the_server(tmp_path: Path) -> None:
    import base64
    import ssl
    import subprocess

    from clusterai_runner.usecases.status import Monitoring

    hosts = [_host("control", clusterai_monitoring_password="p" * 20)]
    unchecked = Monitoring.of(hosts, tmp_path)  # no CA copy on this machine yet
    assert unchecked.headers == {} and unchecked.context.verify_mode == ssl.CERT_NONE
    ca = tmp_path / "pki" / "192.0.2.10" / "ca.crt"
    ca.parent.mkdir(parents=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(tmp_path / "ca.key"), "-out", str(ca), "-days", "1",
         "-subj", "/CN=test CA"],
        check=True, capture_output=True,
    )  # fmt: skip
    checked = Monitoring.of(hosts, tmp_path)
    assert checked.context.verify_mode == ssl.CERT_REQUIRED
    token = base64.b64encode(b"clusterai:" + b"p" * 20).decode()
    assert checked.headers == {"Authorization": f"Basic {token}"}
    assert Monitoring.of([_host("control")], tmp_path).headers == {}  # no password given


def test_a_server_that_requires_the_backend_key_gets_it() -> None:
    from clusterai_runner import backends

    llamacpp, ollama = backends.catalogue()["llamacpp"], backends.catalogue()["ollama"]
    given = {"clusterai_backend_api_key": "k" * 20}
    assert llamacpp.headers_for(given) == {"Authorization": f"Bearer {'k' * 20}"}
    assert llamacpp.headers_for({}) == {}
    assert ollama.headers_for(given) == {}  # Ollama has no keys


def test_the_clusters_services_are_found_from_the_inventory(tmp_path: Path) -> None:
    from clusterai_runner.config import Settings
    from clusterai_runner.usecases import services

    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "control:\n  hosts:\n    ctl1:\n      ansible_host: 192.0.2.10\n"
        "      clusterai_address: 192.0.2.10\n      prometheus_port: 9191\n"
        "      gateway_admin_key: admin-key-for-tests-0123\n"
        "workers:\n  hosts:\n    w1:\n      ansible_host: 192.0.2.11\n"
    )
    settings = Settings.from_env({"CLUSTERAI_CACHE_DIR": str(tmp_path), "HOME": str(tmp_path)})
    found = services.of_inventory(settings, inventory)
    assert found.prometheus.base_url == "https://192.0.2.10:9191"
    assert found.alertmanager.base_url == "https://192.0.2.10:9093"
    assert found.gateway is not None and found.gateway.base_url == "http://192.0.2.10:8000"
    assert found.gateway.headers == {"Authorization": "Bearer admin-key-for-tests-0123"}
    assert not found.checked  # no CA copy here: no login is sent
    workers_only = tmp_path / "workers.yml"
    workers_only.write_text("workers:\n  hosts:\n    w1:\n      ansible_host: 192.0.2.11\n")
    with pytest.raises(UsageError, match="has no host in the control group"):
        services.of_inventory(settings, workers_only)
