"""Parsing what `clusterai status` reads from the exporters and servers."""

from __future__ import annotations

from clusterai_runner.usecases.status import _models, parse_gpus

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
